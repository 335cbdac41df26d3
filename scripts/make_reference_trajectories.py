"""Write tests/data/reference_trajectories.json: PyTorch optimizer trajectories.

This is the only gradsolve file that imports torch (PyTorch is the reference, not a
dependency).  Run it with the pinned reference version:

    pip install torch==2.13.0
    python scripts/make_reference_trajectories.py

Every case runs one torch.optim optimizer (optionally with an lr scheduler) for
``STEPS`` steps on a small float64 problem and records the flattened parameter
vector after each step (``trajectory[k]`` = parameters after k steps, so
``trajectory[0]`` is the start).  Floats are stored by ``repr`` (exact round trip).

Chaotic cases stop being comparable after a while: one ulp at the start grows until
two runs disagree in the leading digits.  To keep only the comparable prefix, every
case is rerun from a start moved one ulp away and the trajectory is cut at the first
step where the two runs differ by more than ``AGREE`` relative
(|a - b| <= AGREE * max(|b|, 1)).  The nudge is one ulp of max(|v|, 1)
(``numpy.spacing``) towards +inf for every coordinate v: the same scale as the
comparison, and not a no-op at 0.0 (``nextafter(0, inf)`` is 5e-324, which vanishes
in the first addition, so starts at 0 would rerun bit for bit).  The generator
checks that every nudged rerun differs from the original somewhere.  The test
compares gradsolve with a looser 1e-10, which leaves two orders of magnitude for
differences in rounding order between the two engines.

A case may set ``groups``: parameter groups as ``{"params": [indices into the
problem's parameter list], <hyperparameter overrides>}``, with ``kwargs`` as the
defaults.  ``lrs[k]`` is the scheduler's ``get_last_lr()`` after step k+1, one
entry per group.

The problems are written again, operation for operation, in
tests/optim/test_reference_trajectories.py; keep the two in step.
"""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
import torch

STEPS = 100
AGREE = 1e-12
OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data" / "reference_trajectories.json"

# Fixed data of the problems (also in the test file).
BOWL_C = [1.0, 4.0, 0.5]
BOWL_T = [1.0, -2.0, 3.0]
LSQ_T = [0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875]
LSQ_Y = [1.1, 1.32, 1.68, 1.91, 2.24, 2.49, 2.73, 3.02]

STARTS = {
    "bowl": [[0.0, 0.0, 0.0]],
    "rosenbrock": [[-1.2], [1.0]],
    "puzzle": [[0.5], [-1.0], [2.0], [0.0]],
    "lsq": [[0.0, 0.0]],
    "abs": [[5.0], [1.0]],
}


def make_params(problem, start):
    """Leaf tensors of a problem; 1-element starts become 0-d tensors."""
    return [
        torch.tensor(v[0] if len(v) == 1 and problem != "bowl" and problem != "lsq" else v,
                     dtype=torch.float64, requires_grad=True)
        for v in start
    ]


def loss_fn(problem, params, negate):
    if problem == "bowl":
        (x,) = params
        c = torch.tensor(BOWL_C)
        t = torch.tensor(BOWL_T)
        loss = (c * (x - t) ** 2).sum()
    elif problem == "rosenbrock":
        x, y = params
        loss = (1 - x) ** 2 + 100 * (y - x**2) ** 2
    elif problem == "puzzle":
        a, b, c, d = params
        loss = (a + b - 9) ** 2 + (c - d - 1) ** 2 + (a + c - 8) ** 2 + (b - d - 2) ** 2
    elif problem == "lsq":
        (w,) = params
        design = torch.stack([torch.ones(len(LSQ_T)), torch.tensor(LSQ_T)], dim=1)
        r = design @ w - torch.tensor(LSQ_Y)
        loss = (r * r).sum()
    elif problem == "abs":
        x, y = params
        loss = (x - y).abs()
    else:
        raise ValueError(problem)
    return -loss if negate else loss


def flat(params):
    return [float(v) for p in params for v in p.detach().reshape(-1).tolist()]


def param_groups(case, params):
    """The optimizer's first argument: the parameter list, or groups of it (``case["groups"]``)."""
    if "groups" not in case:
        return params
    groups = []
    for group in case["groups"]:
        spec = {k: tuple(v) if k == "betas" else v for k, v in group.items() if k != "params"}
        groups.append({"params": [params[i] for i in group["params"]], **spec})
    return groups


def run_case(case, start):
    params = make_params(case["problem"], start)
    opt_cls = getattr(torch.optim, case["optimizer"])
    kwargs = dict(case.get("kwargs", {}))
    if case["optimizer"] not in ("LBFGS",):
        kwargs["foreach"] = False  # the single-tensor loop that follows the docstring
    opt = opt_cls(param_groups(case, params), **kwargs)
    sched = None
    if "scheduler" in case:
        sched_cls = getattr(torch.optim.lr_scheduler, case["scheduler"])
        sched = sched_cls(opt, **case.get("scheduler_kwargs", {}))
    negate = case.get("negate", False)
    zero_grad = case.get("zero_grad", True)
    traj = [flat(params)]
    lrs = []
    for _ in range(STEPS):
        if case["optimizer"] == "LBFGS":

            def closure():
                opt.zero_grad()
                loss = loss_fn(case["problem"], params, negate)
                loss.backward()
                return loss

            loss = opt.step(closure)
        else:
            if zero_grad:
                opt.zero_grad()
            loss = loss_fn(case["problem"], params, negate)
            loss.backward()
            opt.step()
        if sched is not None:
            if case["scheduler"] == "ReduceLROnPlateau":
                sched.step(float(loss.detach()))
            else:
                sched.step()
            lrs.append([float(lr) for lr in sched.get_last_lr()])
        traj.append(flat(params))
    return traj, lrs


def nudged(start):
    """Every coordinate moved up by one ulp of max(|v|, 1) (a real move also at v = 0)."""
    return [[float(v + np.spacing(max(abs(v), 1.0))) for v in p] for p in start]


def agree_prefix(a, b):
    """Number of leading steps where trajectories a and b agree to AGREE."""
    for k, (u, v) in enumerate(zip(a, b, strict=True)):
        if any(abs(x - y) > AGREE * max(abs(y), 1.0) for x, y in zip(u, v, strict=True)):
            return k
    return len(a)


def C(name, optimizer, problem, kwargs=None, **extra):
    case = {"name": name, "optimizer": optimizer, "problem": problem, "kwargs": kwargs or {}}
    case.update(extra)
    return case


CASES = [
    # SGD
    C("sgd_bowl", "SGD", "bowl", {"lr": 0.05}),
    C("sgd_bowl_default_lr", "SGD", "bowl", {}),
    C("sgd_bowl_momentum", "SGD", "bowl", {"lr": 0.02, "momentum": 0.9}),
    C("sgd_bowl_momentum_dampening", "SGD", "bowl", {"lr": 0.02, "momentum": 0.9, "dampening": 0.5}),
    C("sgd_rosenbrock_nesterov", "SGD", "rosenbrock", {"lr": 1e-3, "momentum": 0.9, "nesterov": True}),
    C("sgd_puzzle_weight_decay", "SGD", "puzzle", {"lr": 0.05, "momentum": 0.5, "weight_decay": 0.01}),
    C("sgd_lsq_maximize", "SGD", "lsq", {"lr": 0.01, "maximize": True}, negate=True),
    C("sgd_abs_no_zero_grad", "SGD", "abs", {"lr": 0.1}, zero_grad=False),
    # Adadelta
    C("adadelta_bowl", "Adadelta", "bowl", {}),
    C("adadelta_rosenbrock", "Adadelta", "rosenbrock", {"lr": 0.5, "rho": 0.95}),
    C("adadelta_puzzle_wd_maximize", "Adadelta", "puzzle",
      {"lr": 0.1, "weight_decay": 0.1, "maximize": True}, negate=True),
    C("adadelta_lsq_eps", "Adadelta", "lsq", {"lr": 2.0, "eps": 1e-4}),
    # Adam
    C("adam_bowl", "Adam", "bowl", {"lr": 0.1}),
    C("adam_rosenbrock_amsgrad", "Adam", "rosenbrock", {"lr": 0.01, "amsgrad": True}),
    C("adam_puzzle_weight_decay", "Adam", "puzzle", {"lr": 0.1, "weight_decay": 0.1, "betas": (0.8, 0.99)}),
    C("adam_lsq_maximize", "Adam", "lsq", {"lr": 0.05, "maximize": True, "eps": 1e-3}, negate=True),
    # AdamW
    C("adamw_bowl", "AdamW", "bowl", {"lr": 0.1}),
    C("adamw_rosenbrock_amsgrad", "AdamW", "rosenbrock", {"lr": 0.02, "amsgrad": True, "weight_decay": 0.1}),
    C("adamw_puzzle_maximize", "AdamW", "puzzle", {"lr": 0.05, "maximize": True}, negate=True),
    # NAdam
    C("nadam_bowl", "NAdam", "bowl", {"lr": 0.1}),
    C("nadam_rosenbrock", "NAdam", "rosenbrock", {"lr": 0.01, "momentum_decay": 0.01}),
    C("nadam_puzzle_decoupled_wd", "NAdam", "puzzle",
      {"lr": 0.05, "weight_decay": 0.05, "decoupled_weight_decay": True}),
    C("nadam_lsq_wd_maximize", "NAdam", "lsq", {"weight_decay": 0.01, "maximize": True}, negate=True),
    # RMSprop
    C("rmsprop_bowl", "RMSprop", "bowl", {}),
    C("rmsprop_rosenbrock_centered", "RMSprop", "rosenbrock", {"lr": 1e-3, "centered": True}),
    C("rmsprop_puzzle_momentum", "RMSprop", "puzzle", {"lr": 0.01, "momentum": 0.9}),
    C("rmsprop_lsq_centered_momentum_wd", "RMSprop", "lsq",
      {"lr": 0.01, "centered": True, "momentum": 0.5, "weight_decay": 0.1, "alpha": 0.9}),
    C("rmsprop_bowl_maximize", "RMSprop", "bowl", {"lr": 0.05, "maximize": True}, negate=True),
    # Adagrad
    C("adagrad_bowl", "Adagrad", "bowl", {"lr": 0.5}),
    C("adagrad_rosenbrock_lr_decay", "Adagrad", "rosenbrock", {"lr": 0.1, "lr_decay": 0.01}),
    C("adagrad_puzzle_wd_init_acc", "Adagrad", "puzzle",
      {"lr": 0.3, "weight_decay": 0.01, "initial_accumulator_value": 0.1}),
    C("adagrad_lsq_maximize", "Adagrad", "lsq", {"lr": 0.2, "maximize": True, "eps": 1e-3}, negate=True),
    # LBFGS (well-conditioned problems; Rosenbrock only as far as the ulp test allows)
    C("lbfgs_bowl_fixed_step", "LBFGS", "bowl", {"lr": 0.5, "max_iter": 2}),
    C("lbfgs_bowl_strong_wolfe", "LBFGS", "bowl", {"max_iter": 2, "line_search_fn": "strong_wolfe"}),
    C("lbfgs_puzzle_strong_wolfe", "LBFGS", "puzzle", {"max_iter": 1, "line_search_fn": "strong_wolfe"}),
    C("lbfgs_lsq_history", "LBFGS", "lsq", {"lr": 0.1, "max_iter": 3, "history_size": 2}),
    C("lbfgs_rosenbrock_strong_wolfe", "LBFGS", "rosenbrock",
      {"max_iter": 2, "max_eval": 20, "history_size": 5, "line_search_fn": "strong_wolfe"}),
    # ... with a coarse tolerance_change and a small max_eval, each of which changes the trajectory
    C("lbfgs_lsq_tolerance_change_max_eval", "LBFGS", "lsq",
      {"lr": 0.5, "max_iter": 10, "max_eval": 4, "tolerance_change": 1e-3}),
    C("lbfgs_bowl_strong_wolfe_tolerance_change_max_eval", "LBFGS", "bowl",
      {"max_iter": 10, "max_eval": 6, "tolerance_change": 1e-4, "line_search_fn": "strong_wolfe"}),
    # max_iter=1 and the default max_eval (1): one trial per step, kept only if the loss is lower
    C("lbfgs_bowl_max_iter_1_one_trial", "LBFGS", "bowl",
      {"lr": 5.0, "max_iter": 1, "line_search_fn": "strong_wolfe"}),
    # Parameter groups with their own hyperparameters
    C("sgd_puzzle_groups_momentum", "SGD", "puzzle", {"lr": 0.05},
      groups=[{"params": [0, 1], "lr": 0.02, "momentum": 0.9},
              {"params": [2], "momentum": 0.5, "nesterov": True}, {"params": [3]}]),
    C("adam_rosenbrock_groups_lr", "Adam", "rosenbrock", {"lr": 0.01},
      groups=[{"params": [0]}, {"params": [1], "lr": 0.05, "betas": [0.8, 0.99], "amsgrad": True}]),
    C("adadelta_puzzle_groups", "Adadelta", "puzzle", {"lr": 1.0},
      groups=[{"params": [0, 2], "rho": 0.95}, {"params": [1, 3], "lr": 0.5, "weight_decay": 0.1}]),
    C("rmsprop_rosenbrock_groups", "RMSprop", "rosenbrock", {"lr": 1e-3},
      groups=[{"params": [0], "centered": True}, {"params": [1], "lr": 5e-3, "momentum": 0.5}]),
    # Schedulers
    C("sgd_bowl_steplr", "SGD", "bowl", {"lr": 0.05}, scheduler="StepLR",
      scheduler_kwargs={"step_size": 10, "gamma": 0.5}),
    C("sgd_rosenbrock_exponentiallr", "SGD", "rosenbrock", {"lr": 1e-3, "momentum": 0.9},
      scheduler="ExponentialLR", scheduler_kwargs={"gamma": 0.97}),
    C("adam_bowl_cosine", "Adam", "bowl", {"lr": 0.1}, scheduler="CosineAnnealingLR",
      scheduler_kwargs={"T_max": 30, "eta_min": 1e-3}),
    C("sgd_puzzle_cosine", "SGD", "puzzle", {"lr": 0.05}, scheduler="CosineAnnealingLR",
      scheduler_kwargs={"T_max": 7}),
    C("sgd_rosenbrock_plateau", "SGD", "rosenbrock", {"lr": 2e-3}, scheduler="ReduceLROnPlateau",
      scheduler_kwargs={"patience": 2, "factor": 0.5, "cooldown": 1, "threshold": 0.05}),
    C("adam_lsq_plateau_abs_max", "Adam", "lsq", {"lr": 0.3, "maximize": True}, negate=True,
      scheduler="ReduceLROnPlateau",
      scheduler_kwargs={"mode": "max", "patience": 3, "factor": 0.3, "threshold": 1e-3,
                        "threshold_mode": "abs", "min_lr": 0.01}),
    # ... over parameter groups with different learning rates (one lr per group)
    C("sgd_puzzle_groups_steplr", "SGD", "puzzle", {"lr": 0.05},
      groups=[{"params": [0, 1]}, {"params": [2, 3], "lr": 0.01, "momentum": 0.9}],
      scheduler="StepLR", scheduler_kwargs={"step_size": 10, "gamma": 0.5}),
    C("adam_puzzle_groups_cosine", "Adam", "puzzle", {"lr": 0.1},
      groups=[{"params": [0, 3]}, {"params": [1, 2], "lr": 0.03}],
      scheduler="CosineAnnealingLR", scheduler_kwargs={"T_max": 25, "eta_min": 1e-3}),
    C("sgd_rosenbrock_groups_plateau", "SGD", "rosenbrock", {"lr": 2e-3},
      groups=[{"params": [0]}, {"params": [1], "lr": 1e-3}],
      scheduler="ReduceLROnPlateau",
      scheduler_kwargs={"patience": 2, "factor": 0.5, "threshold": 0.05, "min_lr": [1e-4, 5e-4]}),
]


def main():
    torch.set_default_dtype(torch.float64)  # NAdam's mu_product lives in the default dtype
    out = {
        "generator": "scripts/make_reference_trajectories.py",
        "torch_version": torch.__version__,
        "steps": STEPS,
        "agree": AGREE,
        "problems": {"bowl_c": BOWL_C, "bowl_t": BOWL_T, "lsq_t": LSQ_T, "lsq_y": LSQ_Y,
                     "starts": STARTS},
        "cases": [],
    }
    for case in CASES:
        start = STARTS[case["problem"]]
        traj, lrs = run_case(case, start)
        traj2, _ = run_case(case, nudged(start))
        if traj2 == traj:
            raise SystemExit(f"{case['name']}: the nudged rerun is bit for bit the same; the chaos check "
                             f"would prove nothing")
        kept = agree_prefix(traj, traj2)
        entry = dict(case)
        entry["kwargs"] = {k: list(v) if isinstance(v, tuple) else v for k, v in case["kwargs"].items()}
        entry["kept_steps"] = kept - 1  # steps (beyond the start) whose result is comparable
        entry["trajectory"] = traj[:kept]
        if lrs:
            entry["lrs"] = lrs[: kept - 1]
        out["cases"].append(entry)
        print(f"{case['name']:40s} kept {kept - 1:3d}/{STEPS}  final {traj[kept - 1]}", file=sys.stderr)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=0) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
