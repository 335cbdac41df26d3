"""Levenberg-Marquardt: rank-deficient puzzle, Rosenbrock residuals, bounds, exact Jacobian, MINPACK's
trust region (NIST's MGH10 and BoxBOD from their hard first starts), parameters moved between steps."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

import gradsolve as gs
from gradsolve.optim import LevenbergMarquardt

STRD_CSV = pathlib.Path(__file__).resolve().parents[1] / "data" / "strd" / "csv"  # NIST StRD, see SOURCE.md


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
    with pytest.raises(ValueError):
        LevenbergMarquardt([x], residuals=lambda: x, factor=0.0)
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


def nist(name):
    data = np.loadtxt(STRD_CSV / f"{name}.csv", delimiter=",", skiprows=1)
    return gs.tensor(data[:, 0]), gs.tensor(data[:, 1])


def test_mgh10_from_nist_start_1():
    # y = b1 exp(b2 / (x + b3)) from (2, 400000, 25000): MINPACK's lmder solves it, a plain damped
    # Gauss-Newton with a multiplicative damping rule runs b1 to 0 along the valley b1 exp(b2/...)
    x, y = nist("MGH10")
    b1, b2, b3 = params = scalars(2.0, 400000.0, 25000.0)
    lm = LevenbergMarquardt(params, residuals=lambda: b1 * gs.exp(b2 / (x + b3)) - y)
    with np.errstate(all="ignore"):
        loss, steps = run(lm, 1000)
    assert lm.converged, lm.stop_reason
    certified = (5.6096364710e-03, 6.1813463463e03, 3.4522363462e02)  # NIST's certified values
    for p, value in zip(params, certified):
        assert abs(p.item() - value) <= 1e-7 * abs(value)
    assert loss == pytest.approx(8.7945855171e01, rel=1e-9)


def test_boxbod_from_nist_start_1():
    # y = b1 (1 - exp(-b2 x)) from (1, 1): with MINPACK's recommended factor 100 the first step sends b2
    # to 110.9, where the model is flat, and the run ends at (172.5, 110.9) as scipy's lm does; the
    # default factor 10 keeps the first step shorter (b2 = 22.7), from where the minimum is reached
    x, y = nist("BoxBOD")
    b1, b2 = params = scalars(1.0, 1.0)
    lm = LevenbergMarquardt(params, residuals=lambda: b1 * (1 - gs.exp(-b2 * x)) - y)
    with np.errstate(all="ignore"):
        loss, _ = run(lm, 200)
    assert lm.converged, lm.stop_reason
    for p, value in zip(params, (2.1380940889e02, 5.4723748542e-01)):
        assert abs(p.item() - value) <= 1e-7 * abs(value)


def test_the_first_step_stays_in_the_initial_trust_region():
    # a linear least-squares problem far from its solution: Gauss-Newton would jump there in one step;
    # with factor 0.1 the step is bounded by delta = 0.1 |D x0| (D = column norms), met to within 10%
    A = np.array([[3.0, 1.0], [1.0, 2.0], [0.0, 1.0]])
    b = np.array([1.0, 2.0, 3.0])
    w = gs.tensor([40.0, -30.0], requires_grad=True)
    lm = LevenbergMarquardt([w], residuals=lambda: gs.tensor(A) @ w - gs.tensor(b), factor=0.1)
    x0 = w.detach().numpy().copy()
    d = np.linalg.norm(A, axis=0)
    lm.step()
    step = np.linalg.norm(d * (w.detach().numpy() - x0))
    delta0 = 0.1 * np.linalg.norm(d * x0)
    assert lm.lam > 0 and 0.9 * delta0 <= step <= 1.1 * delta0
    # with the default factor the Gauss-Newton step fits: lam = 0 and the solution in one step
    w2 = gs.tensor([40.0, -30.0], requires_grad=True)
    lm2 = LevenbergMarquardt([w2], residuals=lambda: gs.tensor(A) @ w2 - gs.tensor(b))
    lm2.step()
    assert lm2.lam == 0.0
    assert np.allclose(w2.detach().numpy(), np.linalg.lstsq(A, b, rcond=None)[0], rtol=0, atol=1e-12)


def test_rescaling_a_parameter_changes_nothing():
    # D from column norms makes the iterates invariant to units: amp = 1000 a gives the same steps
    t = np.linspace(0.0, 2.0, 25)
    data = 3.0 * np.exp(-0.7 * t) + 0.01 * np.sin(7 * t)
    tt, yy = gs.tensor(t), gs.tensor(data)
    amp, rate = scalars(0.5, 4.0)
    a, rate2 = scalars(0.5e-3, 4.0)
    lm = LevenbergMarquardt([amp, rate], residuals=lambda: amp * gs.exp(-rate * tt) - yy)
    lm2 = LevenbergMarquardt([a, rate2], residuals=lambda: (1000.0 * a) * gs.exp(-rate2 * tt) - yy)
    for _ in range(12):
        lm.step()
        lm2.step()
        assert 1000.0 * a.item() == pytest.approx(amp.item(), rel=1e-10)
        assert rate2.item() == pytest.approx(rate.item(), rel=1e-10)


def test_parameters_moved_between_steps_are_evaluated_afresh():
    x, y = scalars(-1.2, 1.0)
    seen = []

    def residuals():
        seen.append((x.item(), y.item()))
        return gs.stack([10 * (y - x**2), 1 - x])

    lm = LevenbergMarquardt([x, y], residuals=residuals)
    lm.step()
    # the user moves the parameters: the next step linearizes there, not at the cached point
    x.data = gs.tensor(0.5)
    y.data = gs.tensor(0.2)
    seen.clear()
    lm.step()
    assert seen[0] == (0.5, 0.2)
    xv, yv = x.item(), y.item()
    assert np.allclose(lm.residuals, [10 * (yv - xv**2), 1 - xv], rtol=0, atol=1e-14)
    assert np.allclose(lm.jacobian, [[-20 * xv, 10.0], [-1.0, 0.0]], rtol=0, atol=1e-14)
    # moved onto the solution: the loss there is 0, so the next step stops (atol) without moving
    x.data = gs.tensor(1.0)
    y.data = gs.tensor(1.0)
    loss = lm.step()
    assert loss == 0.0 and lm.stop_reason == "atol" and (x.item(), y.item()) == (1.0, 1.0)


def test_parameters_moved_out_of_the_box_are_projected():
    (x,) = scalars(0.5)
    seen = []

    def residuals():
        seen.append(x.item())
        return gs.stack([x * x - 4.0])

    lm = LevenbergMarquardt([x], residuals=residuals, lower=[-2.0], upper=[3.0])
    lm.step()
    assert lm.stop_reason is None
    x.data = gs.tensor(10.0)
    seen.clear()
    lm.step()
    assert seen[0] == 3.0 and max(seen) <= 3.0
    run(lm, 50)
    assert lm.converged and x.item() == pytest.approx(2.0, abs=1e-12)
