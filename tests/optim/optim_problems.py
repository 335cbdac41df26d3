"""The float64 test problems of the optimizer tests, in gradsolve.

They mirror scripts/make_reference_trajectories.py operation for operation (the
generator writes the same problems with torch); keep the two in step.
"""

from __future__ import annotations

import gradsolve as gs

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

MINIMA = {
    "bowl": [1.0, -2.0, 3.0],
    "rosenbrock": [1.0, 1.0],
    "lsq": None,  # computed by the tests with numpy
}


def make_params(problem, start=None, dtype=gs.float64):
    """Leaf tensors of a problem; one-element starts become 0-d tensors (as in the generator)."""
    start = STARTS[problem] if start is None else start
    vector = problem in ("bowl", "lsq")
    return [gs.tensor(v if vector else v[0], dtype=dtype, requires_grad=True) for v in start]


def loss_fn(problem, params, negate=False):
    if problem == "bowl":
        (x,) = params
        c = gs.tensor(BOWL_C, dtype=x.dtype)
        t = gs.tensor(BOWL_T, dtype=x.dtype)
        loss = (c * (x - t) ** 2).sum()
    elif problem == "rosenbrock":
        x, y = params
        loss = (1 - x) ** 2 + 100 * (y - x**2) ** 2
    elif problem == "puzzle":
        a, b, c, d = params
        loss = (a + b - 9) ** 2 + (c - d - 1) ** 2 + (a + c - 8) ** 2 + (b - d - 2) ** 2
    elif problem == "lsq":
        (w,) = params
        design = gs.stack([gs.ones(len(LSQ_T), dtype=w.dtype), gs.tensor(LSQ_T, dtype=w.dtype)], dim=1)
        r = design @ w - gs.tensor(LSQ_Y, dtype=w.dtype)
        loss = (r * r).sum()
    elif problem == "abs":
        x, y = params
        loss = (x - y).abs()
    else:
        raise ValueError(problem)
    return -loss if negate else loss


def flat(params):
    out = []
    for p in params:
        out.extend(float(v) for v in p.detach().numpy().reshape(-1).tolist())
    return out
