"""gradsolve's optimizers follow PyTorch's trajectories step for step.

tests/data/reference_trajectories.json is written by
scripts/make_reference_trajectories.py with torch 2.13 in float64; every case keeps
only the steps where two torch runs started one ulp (of max(|v|, 1)) apart agree to
1e-12 (see the generator).  Here each case is rerun with gradsolve and every kept step
is compared: |a - b| <= 1e-10 * max(|b|, 1), and so is every group's learning rate
when a scheduler runs.  No torch import.
"""

from __future__ import annotations

import json
import pathlib

import pytest

import gradsolve.optim as optim
from optim_problems import flat, loss_fn, make_params

DATA = pathlib.Path(__file__).resolve().parent.parent / "data" / "reference_trajectories.json"
REFERENCE = json.loads(DATA.read_text())
CASES = {case["name"]: case for case in REFERENCE["cases"]}
RTOL = 1e-10


def tuples(hyperparameters):
    return {k: tuple(v) if k == "betas" else v for k, v in hyperparameters.items()}


def param_groups(case, params):
    """The parameter list, or the case's groups: {"params": [indices], <overrides>}."""
    if "groups" not in case:
        return params
    return [{**tuples({k: v for k, v in g.items() if k != "params"}), "params": [params[i] for i in g["params"]]}
            for g in case["groups"]]


def run_case(case, steps):
    params = make_params(case["problem"], REFERENCE["problems"]["starts"][case["problem"]])
    opt = getattr(optim, case["optimizer"])(param_groups(case, params), **tuples(case["kwargs"]))
    sched = None
    if "scheduler" in case:
        sched = getattr(optim.lr_scheduler, case["scheduler"])(opt, **case["scheduler_kwargs"])
    negate = case.get("negate", False)
    trajectory, lrs = [flat(params)], []
    for _ in range(steps):
        if case["optimizer"] == "LBFGS":

            def closure():
                opt.zero_grad()
                loss = loss_fn(case["problem"], params, negate)
                loss.backward()
                return loss

            loss = opt.step(closure)
        else:
            if case.get("zero_grad", True):
                opt.zero_grad()
            loss = loss_fn(case["problem"], params, negate)
            loss.backward()
            opt.step()
        if sched is not None:
            if case["scheduler"] == "ReduceLROnPlateau":
                sched.step(loss.item())
            else:
                sched.step()
            lrs.append(list(sched.get_last_lr()))
        trajectory.append(flat(params))
    return trajectory, lrs


def assert_close(got, want, what):
    for a, b in zip(got, want, strict=True):
        assert abs(a - b) <= RTOL * max(abs(b), 1.0), f"{what}: {got} != {want}"


def test_reference_file_is_small_and_complete():
    assert DATA.stat().st_size < 2_000_000
    assert REFERENCE["steps"] == 100
    optimizers = {case["optimizer"] for case in REFERENCE["cases"]}
    assert optimizers == {"SGD", "Adadelta", "Adam", "AdamW", "NAdam", "RMSprop", "Adagrad", "LBFGS"}
    schedulers = {case.get("scheduler") for case in REFERENCE["cases"]} - {None}
    assert schedulers == {"StepLR", "ExponentialLR", "CosineAnnealingLR", "ReduceLROnPlateau"}
    for case in REFERENCE["cases"]:
        assert len(case["trajectory"]) == case["kept_steps"] + 1 >= 2
    # parameter groups with their own hyperparameters, with and without a scheduler
    grouped = [case for case in REFERENCE["cases"] if "groups" in case]
    assert {case["optimizer"] for case in grouped} >= {"SGD", "Adam"}
    assert any("scheduler" in case for case in grouped)
    # LBFGS with a non-default tolerance_change and a small max_eval
    assert any(case["optimizer"] == "LBFGS" and "tolerance_change" in case["kwargs"] and "max_eval" in case["kwargs"]
               for case in REFERENCE["cases"])


@pytest.mark.parametrize("name", sorted(CASES))
def test_trajectory_matches_pytorch(name):
    case = CASES[name]
    steps = case["kept_steps"]
    trajectory, lrs = run_case(case, steps)
    for k, (got, want) in enumerate(zip(trajectory, case["trajectory"], strict=True)):
        assert_close(got, want, f"{name} step {k}")
    if "lrs" in case:
        assert len(lrs) == len(case["lrs"])
        for k, (got, want) in enumerate(zip(lrs, case["lrs"])):
            assert_close(got, want, f"{name} learning rates after step {k + 1}")
