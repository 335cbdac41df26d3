"""Levenberg-Marquardt: rank-deficient puzzle, Rosenbrock residuals, bounds, exact Jacobian."""

from __future__ import annotations

import numpy as np
import pytest

import gradsolve as gs
from gradsolve.optim import LevenbergMarquardt


def scalars(*values):
    return [gs.tensor(v, requires_grad=True) for v in values]


def run(lm, max_steps):
    steps = 0
    while not lm.converged and lm.stop_reason is None and steps < max_steps:
        loss = lm.step()
        steps += 1
    return loss, steps


def test_puzzle_rank_deficient_to_1e_20_in_under_20_steps():
    a, b, c, d = params = scalars(0.5, -1.0, 2.0, 0.0)
    lm = LevenbergMarquardt(params, residuals=lambda: gs.stack([a + b - 9, c - d - 1, a + c - 8, b - d - 2]))
    loss, steps = run(lm, 19)
    assert loss < 1e-20 and steps < 20
    assert np.linalg.matrix_rank(lm.jacobian) == 3  # rank deficient: a line of solutions
    A, B, C, D = (p.item() for p in params)
    assert abs(A + B - 9) < 1e-10 and abs(C - D - 1) < 1e-10 and abs(A + C - 8) < 1e-10


def test_rosenbrock_residuals_reach_1_1_within_1e_10():
    x, y = scalars(-1.2, 1.0)
    lm = LevenbergMarquardt([x, y], residuals=lambda: gs.stack([10 * (y - x**2), 1 - x]))
    loss, steps = run(lm, 100)
    assert lm.converged, lm.stop_reason
    # distance from the minimizer (1, 1)
    assert np.hypot(x.item() - 1.0, y.item() - 1.0) < 1e-10
    assert loss < 1e-20


def test_step_returns_a_float_and_the_jacobian_is_exact():
    x, y = scalars(-1.2, 1.0)
    lm = LevenbergMarquardt([x, y], residuals=lambda: gs.stack([10 * (y - x**2), 1 - x]))
    loss = lm.step()
    assert isinstance(loss, float) and loss == lm.loss
    xv, yv = x.item(), y.item()
    assert np.allclose(lm.jacobian, [[-20 * xv, 10.0], [-1.0, 0.0]], rtol=0, atol=1e-14)
    assert np.allclose(lm.residuals, [10 * (yv - xv**2), 1 - xv], rtol=0, atol=1e-14)
    assert loss == pytest.approx(float(lm.residuals @ lm.residuals), rel=1e-15)


def test_more_residuals_than_parameters_exponential_fit():
    t = np.linspace(0.0, 1.0, 30)
    data = 2.0 * np.exp(-1.3 * t)
    amp, rate = scalars(1.0, 0.0)
    tt, yy = gs.tensor(t), gs.tensor(data)
    lm = LevenbergMarquardt([amp, rate], residuals=lambda: amp * gs.exp(-rate * tt) - yy)
    loss, _ = run(lm, 50)
    assert lm.jacobian.shape == (30, 2)
    assert abs(amp.item() - 2.0) < 1e-8 and abs(rate.item() - 1.3) < 1e-8


def test_vector_parameter_and_bounds_keep_the_iterates_in_the_box():
    # minimize (w0 - 3)^2 + (w1 + 1)^2 with w in [0, 2] x [-0.5, 5]: solution (2, -0.5)
    w = gs.tensor([0.5, 4.0], requires_grad=True)
    target = gs.tensor([3.0, -1.0])
    seen = []

    def residuals():
        seen.append(w.detach().numpy().copy())
        return w - target

    lm = LevenbergMarquardt([w], residuals=residuals, lower=[np.array([0.0, -0.5])], upper=[[2.0, 5.0]])
    run(lm, 50)
    assert lm.converged
    assert np.allclose(w.numpy(), [2.0, -0.5], atol=1e-12)
    for point in seen:
        assert np.all(point >= [0.0, -0.5]) and np.all(point <= [2.0, 5.0])


def test_start_outside_the_box_is_projected():
    (x,) = scalars(10.0)
    lm = LevenbergMarquardt([x], residuals=lambda: gs.stack([x - 1.0]), upper=[3.0])
    seen = []
    lm.residual_fn = lambda: (seen.append(x.item()), gs.stack([x - 1.0]))[1]
    run(lm, 20)
    assert max(seen) <= 3.0 and x.item() == pytest.approx(1.0, abs=1e-12)


def test_stopping_tests_and_no_op_after_convergence():
    (x,) = scalars(2.0)
    lm = LevenbergMarquardt([x], residuals=lambda: gs.stack([x - 1.0, x - 1.0]), atol=1e-6)
    run(lm, 20)
    assert lm.stop_reason == "atol" and lm.converged
    before = x.item()
    loss = lm.step()
    assert x.item() == before and loss <= 1e-6

    (x,) = scalars(2.0)
    lm = LevenbergMarquardt([x], residuals=lambda: gs.stack([x - 1.0, x + 1.0]), gtol=1e-8)
    run(lm, 50)  # least squares with a nonzero residual: the gradient vanishes
    assert lm.stop_reason in ("gtol", "xtol", "ftol") and abs(x.item()) < 1e-6


def test_invalid_arguments():
    (x,) = scalars(1.0)
    with pytest.raises(TypeError):
        LevenbergMarquardt([x], residuals=None)
    with pytest.raises(ValueError):
        LevenbergMarquardt([x], residuals=lambda: x, xtol=-1.0)
    with pytest.raises(ValueError):
        LevenbergMarquardt([x], residuals=lambda: x, lower=[2.0], upper=[1.0])
    lm = LevenbergMarquardt([x], residuals=lambda: x * x)  # 0-d, not a vector
    with pytest.raises(ValueError):
        lm.step()


def test_state_dict_round_trip():
    def make():
        x, y = scalars(-1.2, 1.0)
        return [x, y], LevenbergMarquardt([x, y], residuals=lambda: gs.stack([10 * (y - x**2), 1 - x]))

    params, lm = make()
    reference = [lm.step() for _ in range(12)]
    params, lm = make()
    first = [lm.step() for _ in range(6)]
    saved = lm.state_dict()
    params2, lm2 = make()
    for p, q in zip(params2, params):
        p._assign_(q._data.copy())
    lm2.load_state_dict(saved)
    assert first + [lm2.step() for _ in range(6)] == reference


def test_a_nonfinite_jacobian_stops_without_moving():
    # sqrt(x) = 1 from x = 0: the residual is finite (-1), its derivative infinite; no linear model exists
    (x,) = scalars(0.0)
    lm = LevenbergMarquardt([x], residuals=lambda: (x.sqrt() - 1).reshape(1))
    with np.errstate(all="ignore"):
        loss = lm.step()
    assert lm.stop_reason == "nonfinite" and not lm.converged
    assert loss == 1.0 and x.item() == 0.0
