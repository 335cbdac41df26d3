"""Every optimizer converges on a parabola and on Rosenbrock, in float64 and float32."""

from __future__ import annotations

import numpy as np
import pytest

import gradsolve as gs
import gradsolve.optim as optim
from optim_problems import flat, loss_fn, make_params

# (optimizer, kwargs, steps) per problem; chosen so each run is quick
PARABOLA = {
    "SGD": ({"lr": 0.1, "momentum": 0.5}, 200),
    "Adadelta": ({"lr": 5.0}, 1500),
    "Adam": ({"lr": 0.1}, 500),
    "AdamW": ({"lr": 0.1, "weight_decay": 0.0}, 500),
    "NAdam": ({"lr": 0.1}, 500),
    "RMSprop": ({"lr": 0.01, "momentum": 0.8}, 500),
    "Adagrad": ({"lr": 1.0}, 500),
    "LBFGS": ({"line_search_fn": "strong_wolfe", "tolerance_grad": 1e-12, "tolerance_change": 1e-14}, 5),
}
ROSENBROCK = {
    "SGD": ({"lr": 1e-3, "momentum": 0.9}, 10000),
    # Adadelta crawls along Rosenbrock's valley (or diverges with a large eps); it is held
    # to a smaller target below: loss 24.2 -> < 1.5 and 30% closer to (1, 1) in 5000 steps
    "Adadelta": ({"lr": 0.5, "rho": 0.99, "eps": 1e-4}, 5000),
    "Adam": ({"lr": 0.02, "betas": (0.9, 0.99)}, 3000),
    "AdamW": ({"lr": 0.02, "betas": (0.9, 0.99), "weight_decay": 0.0}, 3000),
    "NAdam": ({"lr": 0.005}, 10000),
    "RMSprop": ({"lr": 1e-3, "momentum": 0.9}, 3000),
    "Adagrad": ({"lr": 1.0}, 10000),
    "LBFGS": ({"line_search_fn": "strong_wolfe", "max_iter": 100, "max_eval": 200}, 3),
}
TOL = {"float64": {"bowl": 1e-6, "rosenbrock": 1e-3}, "float32": {"bowl": 1e-3, "rosenbrock": 1e-2}}


def run(name, kwargs, steps, problem, dtype):
    params = make_params(problem, dtype=dtype)
    opt = getattr(optim, name)(params, **kwargs)

    def closure():
        opt.zero_grad()
        loss = loss_fn(problem, params)
        loss.backward()
        return loss

    for _ in range(steps):
        opt.step(closure)
    for p in params:
        assert p.dtype == dtype and np.all(np.isfinite(p.numpy()))
    return np.array(flat(params))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(PARABOLA))
def test_parabola(name, dtype):
    kwargs, steps = PARABOLA[name]
    x = run(name, kwargs, steps, "bowl", getattr(gs, dtype))
    assert np.max(np.abs(x - [1.0, -2.0, 3.0])) < TOL[dtype]["bowl"]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(ROSENBROCK))
def test_rosenbrock(name, dtype):
    kwargs, steps = ROSENBROCK[name]
    x = run(name, kwargs, steps, "rosenbrock", getattr(gs, dtype))
    if name == "Adadelta":
        loss = (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2
        assert loss < 1.5  # 24.2 at the start
        assert np.linalg.norm(x - [1.0, 1.0]) < 0.7 * np.linalg.norm([-2.2, 0.0])
        return
    assert np.max(np.abs(x - [1.0, 1.0])) < TOL[dtype]["rosenbrock"]


def test_lbfgs_line_search_treats_nan_as_too_long_a_step():
    # f(w) = w log w - sqrt(w) from w = 3: the first trial steps land at w < 0, where f is NaN.
    # PyTorch's search compares NaNs there and fails; this one bisects back into the domain.
    import math

    w = gs.tensor(3.0, requires_grad=True)
    opt = gs.optim.LBFGS([w], line_search_fn="strong_wolfe", max_iter=100, tolerance_grad=1e-10,
                         tolerance_change=0.0)

    def closure():
        opt.zero_grad()
        loss = w * w.log() - w.sqrt()
        loss.backward()
        return loss

    with np.errstate(all="ignore"):
        opt.step(closure)
    v = w.item()
    assert math.isfinite(v) and v > 0
    assert math.log(v) + 1 - 1 / (2 * math.sqrt(v)) == pytest.approx(0.0, abs=1e-9)
