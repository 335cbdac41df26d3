"""Stop at step 50, save, load into a fresh optimizer (and scheduler), continue: same trajectory."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import gradsolve.optim as optim
from optim_problems import flat, loss_fn, make_params

CONFIGS = [
    ("SGD", {"lr": 1e-3, "momentum": 0.9, "nesterov": True}, "rosenbrock", None),
    ("Adadelta", {"lr": 0.5, "weight_decay": 0.01}, "puzzle", None),
    ("Adam", {"lr": 0.01, "amsgrad": True}, "rosenbrock", None),
    ("AdamW", {"lr": 0.05}, "bowl", None),
    ("NAdam", {"lr": 0.01, "decoupled_weight_decay": True, "weight_decay": 0.01}, "puzzle", None),
    ("RMSprop", {"lr": 0.01, "centered": True, "momentum": 0.5}, "lsq", None),
    ("Adagrad", {"lr": 0.3, "lr_decay": 0.01, "initial_accumulator_value": 0.1}, "puzzle", None),
    ("LBFGS", {"max_iter": 2, "history_size": 3}, "bowl", None),
    ("LBFGS", {"max_iter": 1, "max_eval": 10, "line_search_fn": "strong_wolfe"}, "puzzle", None),
    ("SGD", {"lr": 0.05, "momentum": 0.5}, "bowl", ("StepLR", {"step_size": 7, "gamma": 0.7})),
    ("Adam", {"lr": 0.1}, "bowl", ("CosineAnnealingLR", {"T_max": 30, "eta_min": 1e-3})),
    ("SGD", {"lr": 2e-3}, "rosenbrock", ("ReduceLROnPlateau", {"patience": 2, "factor": 0.5})),
    ("SGD", {"lr": 1e-3}, "rosenbrock", ("ExponentialLR", {"gamma": 0.98})),
]


def build(name, kwargs, problem, sched_spec, start=None):
    params = make_params(problem, start)
    opt = getattr(optim, name)(params, **kwargs)
    sched = None
    if sched_spec is not None:
        sched = getattr(optim.lr_scheduler, sched_spec[0])(opt, **sched_spec[1])
    return params, opt, sched


def advance(params, opt, sched, problem, steps):
    out = []
    for _ in range(steps):
        def closure():
            opt.zero_grad()
            loss = loss_fn(problem, params)
            loss.backward()
            return loss

        loss = opt.step(closure)
        if sched is not None:
            if isinstance(sched, optim.lr_scheduler.ReduceLROnPlateau):
                sched.step(loss.item())
            else:
                sched.step()
        out.append(flat(params))
    return out


@pytest.mark.parametrize("name, kwargs, problem, sched_spec", CONFIGS,
                         ids=[f"{c[0]}-{c[2]}-{c[3][0] if c[3] else 'nosched'}-{i}" for i, c in enumerate(CONFIGS)])
def test_resume_from_state_dict_equals_uninterrupted_run(name, kwargs, problem, sched_spec):
    params, opt, sched = build(name, kwargs, problem, sched_spec)
    reference = advance(params, opt, sched, problem, 100)

    params, opt, sched = build(name, kwargs, problem, sched_spec)
    first = advance(params, opt, sched, problem, 50)
    saved_opt = opt.state_dict()
    saved_sched = sched.state_dict() if sched else None
    saved_copy = copy.deepcopy(saved_opt)
    advance(params, opt, sched, problem, 5)  # later steps must not change the saved dict
    assert _same(saved_opt, saved_copy)

    start = [[v] for v in first[-1]] if problem not in ("bowl", "lsq") else [first[-1]]
    params2, opt2, sched2 = build(name, kwargs, problem, sched_spec, start=start)
    opt2.load_state_dict(saved_opt)
    if sched2 is not None:
        sched2.load_state_dict(saved_sched)
    rest = advance(params2, opt2, sched2, problem, 50)
    assert first + rest == reference
    assert _same(saved_opt, saved_copy)  # loading copies too


def test_state_dict_layout_follows_pytorch():
    params = make_params("puzzle")
    opt = optim.SGD([{"params": params[:2]}, {"params": params[2:], "lr": 0.2}], lr=0.1, momentum=0.9)
    loss_fn("puzzle", params).backward()
    opt.step()
    sd = opt.state_dict()
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2, 3]]
    assert sd["param_groups"][1]["lr"] == 0.2
    assert sorted(sd["state"]) == [0, 1, 2, 3]
    assert set(sd["state"][0]) == {"momentum_buffer"}


def _same(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if hasattr(a, "shape"):
        return np.array_equal(np.asarray(a), np.asarray(b))
    return a == b
