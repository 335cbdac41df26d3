"""`gradsolve fit` on every device: the data-sized work runs in the device's array namespace, and says so.

The fits go through `prepare_fit` + `run_fit`, the path the CLI takes (the CLI's --device accepts only
cpu/cuda/auto).  The strict Array API backend refuses NumPy-only calls and any mixing with NumPy
arrays, so a chunk left on the host, or a call CuPy would not have, fails here without a GPU.  A spy
on the map step and the residual pass records the namespace the chunks were in: running NumPy while
reporting another device fails the test.
"""
from __future__ import annotations

import numpy as np
import pytest

import gradsolve as gs
from gradsolve.backend import DeviceError
from gradsolve.solve.fit import bases, robust, transfer, tsqr
from gradsolve.solve.fit import task as fit_task
from gradsolve.solve.fit import prepare_fit, run_fit
from gradsolve.solve.options import SolveOptions

#: The array namespace each device must run the chunks in.
NAMESPACE = {"cpu": "numpy", "array-api-strict": "array_api_strict", "cuda": "cupy"}
N = 3000
TRUE_POLY = (1.5, -0.7, 0.25)  # c0 + c1*x + c2*x**2
TRUE_MODEL = {"a": 1.5, "b": -0.7, "c": 0.3}  # a + b*x + c*sin(z) + x**2/4


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory):
    """x, z, a weight column s; y (small noise), yo (y with gross outliers), ye (a decaying exponential)."""
    rng = np.random.default_rng(11)
    x = rng.uniform(-3.0, 5.0, N)
    z = rng.uniform(0.0, 2.0, N)
    s = rng.uniform(0.5, 2.0, N)
    noise = rng.normal(0.0, 0.01, N)
    poly = TRUE_POLY[0] + TRUE_POLY[1] * x + TRUE_POLY[2] * x * x
    y = poly + TRUE_MODEL["c"] * np.sin(z) + noise
    yo = poly + noise
    yo[::37] += rng.choice([-1.0, 1.0], yo[::37].size) * rng.uniform(5.0, 20.0, yo[::37].size)
    ye = 0.2 * np.exp(-0.8 * x) + 2.0 + noise * s
    path = tmp_path_factory.mktemp("fitdev") / "d.csv"
    rows = zip(x.tolist(), z.tolist(), s.tolist(), y.tolist(), yo.tolist(), ye.tolist())
    path.write_text("x,z,s,y,yo,ye\n" + "".join(",".join(repr(v) for v in row) + "\n" for row in rows))
    return str(path)


@pytest.fixture
def seen(monkeypatch):
    """The namespaces the map step and the residual pass ran in, and the types of the chunks they saw."""
    record = {"map": set(), "chunk": set(), "residuals": set()}
    map_chunk, residual_stats = tsqr.map_chunk, tsqr.residual_stats

    def spy_map(basis, xp, xs, y, **kw):
        record["map"].add(xp.__name__)
        record["chunk"].add(type(y).__module__.split(".")[0])
        return map_chunk(basis, xp, xs, y, **kw)

    def spy_residuals(basis, xp, chunks, b):
        record["residuals"].add(xp.__name__)
        return residual_stats(basis, xp, chunks, b)

    monkeypatch.setattr(tsqr, "map_chunk", spy_map)
    monkeypatch.setattr(tsqr, "residual_stats", spy_residuals)
    return record


def run(path, device, **kw):
    """Fit as the CLI does: prepare_fit, then run_fit with SolveOptions."""
    solve = {k: kw.pop(k) for k in ("optimizer",) if k in kw}
    task = prepare_fit(path, **kw)
    return run_fit(task, SolveOptions(device=device, **solve))


def assert_same(result, reference, rel):
    assert result.parameters.keys() == reference.parameters.keys()
    for name, value in reference.parameters.items():
        assert result.parameters[name] == pytest.approx(value, rel=rel, abs=0.0), (name, result.parameters)


def assert_ran_in(seen, device):
    want = NAMESPACE[device]
    assert seen["map"] == {want}, seen
    assert seen["chunk"] == {want}, seen  # the chunk was moved before the map worked on it
    assert seen["residuals"] <= {want}, seen


# ----------------------------------------------------------------------------- linear path
def test_polynomial_fit_runs_on_the_device_and_matches_cpu(data_csv, device, seen):
    reference = run(data_csv, "cpu", degree=2, y_column="y", x_columns=["x"])
    seen.update(map=set(), chunk=set(), residuals=set())
    result = run(data_csv, device, degree=2, y_column="y", x_columns=["x"])
    assert result.status == "converged" and result.device == device
    assert_ran_in(seen, device)
    assert result.extra["fit"]["refined"] is True
    assert_same(result, reference, 1e-12)
    # the data were built with known coefficients (plus c*sin(z), which a parabola absorbs only roughly)
    assert result.parameters["c2"] == pytest.approx(TRUE_POLY[2], abs=0.02)


def test_linear_model_fit_runs_on_the_device_and_matches_cpu(data_csv, device, seen):
    model = "a + b*x + c*sin(z) + x**2/4"  # linear in a, b, c, with an offset f0 = x**2/4 and a constant
    reference = run(data_csv, "cpu", model=model, y_column="y")
    seen.update(map=set(), chunk=set(), residuals=set())
    result = run(data_csv, device, model=model, y_column="y", predict=["1.5,0.5"])
    assert result.extra["fit"]["path"].startswith("linear") and result.optimizer == "qr"
    assert result.status == "converged" and result.device == device
    assert_ran_in(seen, device)
    assert_same(result, reference, 1e-12)
    for name, exact in TRUE_MODEL.items():
        assert result.parameters[name] == pytest.approx(exact, abs=2e-3)
    expected = TRUE_MODEL["a"] + TRUE_MODEL["b"] * 1.5 + TRUE_MODEL["c"] * np.sin(0.5) + 1.5 ** 2 / 4
    assert result.extra["predictions"][0]["y"] == pytest.approx(expected, abs=2e-3)


def test_huber_fit_runs_on_the_device_and_matches_cpu(data_csv, device, seen):
    reference = run(data_csv, "cpu", degree=2, y_column="yo", robust_loss="huber", f_scale=0.05)
    seen.update(map=set(), chunk=set(), residuals=set())
    result = run(data_csv, device, degree=2, y_column="yo", robust_loss="huber", f_scale=0.05)
    assert result.status == "converged" and result.device == device and result.optimizer == "irls"
    assert_ran_in(seen, device)
    assert_same(result, reference, 1e-12)
    for k, exact in enumerate(TRUE_POLY):  # the outliers are discounted
        assert result.parameters[f"c{k}"] == pytest.approx(exact, abs=2e-3)


def test_weighted_streamed_fit_with_an_optimizer_runs_on_the_device(data_csv, device, seen, monkeypatch):
    """Streamed chunks (not in memory), --sigma weights, Adam on the reduced problem, then refinement."""
    reference = run(data_csv, "cpu", degree=2, y_column="y", sigma="s", optimizer="adam")
    monkeypatch.setattr(fit_task, "IN_MEMORY_BYTES", 0)
    seen.update(map=set(), chunk=set(), residuals=set())
    result = run(data_csv, device, degree=2, y_column="y", sigma="s", optimizer="adam")
    assert result.status == "converged" and result.device == device
    assert result.extra["statistics"]["sigma"] == "absolute"
    assert_ran_in(seen, device)
    assert_same(result, reference, 1e-12)


def test_linear_model_term_that_overflows_is_an_error_on_the_device(tmp_path, device):
    """The finiteness check of a --model's columns runs where the columns are evaluated."""
    from gradsolve.problem.errors import ProblemError

    path = tmp_path / "big.csv"
    path.write_text("x,y\n1,2\n2,3\n3,5\n800,7\n")
    with pytest.raises(ProblemError, match="the term 'exp\\(x\\)' of the model is not a finite number"):
        run(str(path), device, model="a*exp(x) + b")


@pytest.mark.parametrize("optimizer", ["adadelta", "adamw"])
def test_first_order_methods_converge_on_the_reduced_problem_of_a_device_fit(data_csv, device, optimizer):
    """The reduced problem is p x p on the host whatever the device: Adadelta and AdamW at their fit settings."""
    reference = run(data_csv, "cpu", degree=2, y_column="y")
    result = run(data_csv, device, degree=2, y_column="y", optimizer=optimizer)
    assert result.status == "converged" and result.device == device and result.optimizer == optimizer
    assert_same(result, reference, 1e-11)


def test_double_double_residuals_stay_in_the_namespace(device):
    """The Horner residual in double-double arithmetic gives the same bits in every namespace."""
    xp = gs.backend.get_backend(device).xp
    rng = np.random.default_rng(5)
    x = rng.uniform(-1e3, 1e3, 257)
    b = np.array([1.0 / 3.0, -2.0 / 7.0, 1e-3, 5e-7])
    y = ((b[3] * x + b[2]) * x + b[1]) * x + b[0]
    basis = bases.PolynomialBasis(3)
    xs, yd, _ = transfer.to_device(xp, [x], y)
    r = basis.residual(xp, xs, yd, b)
    assert type(r).__module__.split(".")[0] == NAMESPACE[device]
    np.testing.assert_array_equal(transfer.to_host(xp, r), basis.residual(np, [x], y, b))


@pytest.mark.parametrize("loss", ["squared", "huber", "soft_l1", "cauchy"])
def test_robust_weights_in_any_namespace(device, loss):
    xp = gs.backend.get_backend(device).xp
    r = np.linspace(-3.0, 3.0, 13)
    w = robust.weights(loss, transfer.on_device(xp, r), 0.5, xp=xp)
    assert type(w).__module__.split(".")[0] == NAMESPACE[device]
    np.testing.assert_array_equal(transfer.to_host(xp, w), robust.weights(loss, r, 0.5))


# ----------------------------------------------------------------------------- nonlinear path
def test_weighted_robust_nonlinear_fit_runs_on_the_device(data_csv, device):
    """The engine runs eagerly on the device; the weights must live there too (not on the cpu)."""
    kw = dict(model="a*exp(b*x) + c", y_column="ye", sigma="s", robust_loss="huber", f_scale=0.05)
    reference = run(data_csv, "cpu", **kw)
    result = run(data_csv, device, **kw)
    assert result.status == "converged" and result.device == device and result.optimizer == "irls"
    assert_same(result, reference, 1e-9)
    assert [result.parameters[n] for n in "abc"] == pytest.approx([0.2, -0.8, 2.0], abs=5e-3)


# ----------------------------------------------------------------------------- auto and cuda
@pytest.mark.skipif(gs.cuda_available(), reason="a GPU is present: auto means cuda here")
@pytest.mark.parametrize("kw", [dict(degree=2, y_column="y"), dict(model="a*exp(b*x) + c", y_column="ye")],
                         ids=["polynomial", "nonlinear"])
def test_auto_without_a_gpu_runs_and_reports_cpu(data_csv, seen, kw):
    result = run(data_csv, "auto", **kw)
    assert result.device == "cpu"
    assert seen["map"] <= {"numpy"}


@pytest.mark.skipif(gs.cuda_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_is_an_error_not_a_numpy_run(data_csv):
    with pytest.raises(DeviceError):
        run(data_csv, "cuda", degree=2, y_column="y")


def test_cli_fit_reports_the_device_it_ran_on(data_csv):
    import json

    from click.testing import CliRunner

    from gradsolve.cli.main import cli

    device = "cuda" if gs.cuda_available() else "cpu"
    result = CliRunner().invoke(cli, ["fit", data_csv, "-x", "x", "-y", "y", "--degree", "2", "--device", "auto",
                                      "--quiet", "--output", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["device"] == device
