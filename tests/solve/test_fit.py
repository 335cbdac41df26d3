"""`gradsolve fit`: the reader, the TSQR reduction, every optimizer on the preconditioned problem, statistics."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gradsolve.problem.errors import ProblemError
from gradsolve.problem.table import open_table
from gradsolve.solve.fit import bases, tsqr
from gradsolve.solve.fit import fit, prepare_fit

ROOT = Path(__file__).resolve().parents[2]
POLY = str(ROOT / "problems" / "polynomial.csv")
STRD = ROOT / "tests" / "data" / "strd" / "csv"
OPTIMIZERS = ["sgd", "adadelta", "adam", "adamw", "nadam", "rmsprop", "adagrad", "lbfgs", "lm", "auto"]
#: Agreement of every optimizer with the direct QR solve (--optimizer auto, refined), per coefficient.
AGREE_DIGITS = 11


def digits(value, exact):
    return 16.0 if value == exact else -math.log10(abs(value - exact) / abs(exact))


def write_csv(path, x, y):
    path.write_text("x,y\n" + "".join(f"{a!r},{b!r}\n" for a, b in zip(x.tolist(), y.tolist())))
    return str(path)


@pytest.fixture(scope="module")
def linear_sets(tmp_path_factory):
    """name -> (path, degree): noisy data generated here, and NIST's Pontius and Filip (StRD, tests/data/strd)."""
    folder = tmp_path_factory.mktemp("linear_sets")
    rng = np.random.default_rng(6)
    x = np.linspace(-3.0, 3.0, 50)
    quadratic = write_csv(folder / "quadratic.csv", x, x**2 + 2 * x + 3 + rng.normal(0.0, 0.1, x.size))
    x5 = rng.uniform(-2.0, 4.0, 80)
    quintic = write_csv(folder / "quintic.csv", x5, 0.5 - 1.2 * x5 + 0.3 * x5**2 - 0.8 * x5**3 + 0.1 * x5**4
                        + 0.05 * x5**5 + rng.normal(0.0, 0.3, x5.size))
    return {"noisy-degree-3": (quadratic, 3), "noisy-quadratic-degree-5": (quadratic, 5),
            "noisy-degree-5": (quintic, 5), "Pontius": (str(STRD / "Pontius.csv"), 2),
            "Filip": (str(STRD / "Filip.csv"), 10)}


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_polynomial_csv_recovers_3_2_1_to_12_digits_with_every_optimizer(optimizer):
    result = fit(POLY, degree=2, optimizer=optimizer)
    assert result.status == "converged", result.stop_reason
    for name, exact in (("c0", 3.0), ("c1", 2.0), ("c2", 1.0)):
        assert digits(result.parameters[name], exact) >= 12, (name, result.parameters)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("dataset", ["noisy-degree-3", "noisy-quadratic-degree-5", "noisy-degree-5", "Pontius",
                                     "Filip"])
def test_every_optimizer_converges_on_linear_fits_and_agrees_with_the_direct_solve(linear_sets, dataset,
                                                                                  optimizer):
    """Within the default steps, at the default settings: converged (exit 0), and 11 digits of every
    coefficient in common with the direct QR solve (the issue: "every optimizer, SGD included")."""
    path, degree = linear_sets[dataset]
    direct = fit(path, degree=degree, optimizer="auto")
    result = fit(path, degree=degree, optimizer=optimizer)
    assert result.status == "converged", (result.steps, result.stop_reason)
    assert result.steps < 10000
    for name, exact in direct.parameters.items():
        assert digits(result.parameters[name], exact) >= AGREE_DIGITS, (name, result.parameters, direct.parameters)


@pytest.mark.parametrize("optimizer", ["sgd", "adadelta", "adam", "lm"])
def test_cli_recovers_3_2_1_to_12_digits_and_exits_0(optimizer):
    """The issue's first Done-when, through the command."""
    from click.testing import CliRunner

    from gradsolve.cli.main import cli

    result = CliRunner().invoke(cli, ["fit", POLY, "--degree", "2", "--optimizer", optimizer, "--quiet",
                                      "--output", "json"])
    assert result.exit_code == 0, result.output
    values = json.loads(result.stdout)["parameters"]
    assert [digits(values[n], exact) >= 12 for n, exact in (("c0", 3.0), ("c1", 2.0), ("c2", 1.0))] == [True] * 3


def test_adadelta_on_the_reduced_problem_is_a_newton_step_for_any_target():
    """Why Adadelta needs its own settings on the reduced problem |u - z|^2 (Hessian 2I, |z| = 1).

    Its step is lr * sqrt(acc_delta + eps) / sqrt(acc_grad + eps) * g.  With both averages far below eps the
    ratio is 1: gradient descent with rate lr, the error times (1 - 2 lr).  The general default lr = 1 only
    flips the error's sign there; lr = 0.5 with eps = 1e4 (the target scaled far inside sqrt(eps)) is the
    Newton step from the first iteration, whatever the data (any direction of z, any number of terms).
    """
    import gradsolve as gs
    from gradsolve.solve.fit import PRECONDITIONED_LR, PRECONDITIONED_SETTINGS

    def errors(z, lr, settings, steps):
        u = [gs.tensor(0.0, dtype=gs.float64, requires_grad=True) for _ in z]
        opt = gs.optim.Adadelta([dict(settings, params=u)], lr=lr)
        target = gs.tensor(z)
        out = []
        for _ in range(steps):
            opt.zero_grad()
            r = gs.stack(u) - target
            (r * r).sum().backward()
            opt.step()
            out.append(float(np.max(np.abs(np.array([float(t.item()) for t in u]) - z))))
        return out

    rng = np.random.default_rng(7)
    for p in (1, 3, 11):
        for _ in range(5):
            z = rng.standard_normal(p)
            z /= np.linalg.norm(z)
            tuned = errors(z, PRECONDITIONED_LR["adadelta"], PRECONDITIONED_SETTINGS["adadelta"], 3)
            assert tuned[-1] <= 1e-12, tuned
            # the general default rate in the same regime: the error keeps its size, step after step
            flipped = errors(z, 1.0, PRECONDITIONED_SETTINGS["adadelta"], 20)
            assert flipped[-1] >= 0.9 * flipped[0] > 0, flipped
    # the published default eps = 1e-6 with |z| = 1: far from eps, the first steps are about sqrt(eps) long
    slow = errors(np.array([1.0]), PRECONDITIONED_LR["adadelta"], {}, 20)
    assert slow[-1] > 0.9


def test_adamw_fits_the_sum_of_squares_weight_decay_only_when_asked(monkeypatch, tmp_path):
    """AdamW's default weight decay (1e-2) would pull the coefficients toward 0: a fit uses 0 unless told."""
    from gradsolve.solve import loop

    decays = []
    original = loop.FIRST_ORDER_CLASSES["adamw"]

    def spy(params, **kw):
        opt = original(params, **kw)
        decays.append([g["weight_decay"] for g in opt.param_groups])
        return opt

    monkeypatch.setitem(loop.FIRST_ORDER_CLASSES, "adamw", spy)
    result = fit(POLY, degree=2, optimizer="adamw")
    assert result.status == "converged" and decays == [[0.0]]
    assert digits(result.parameters["c0"], 3.0) >= 12
    decays.clear()  # the nonlinear path too
    x = np.linspace(0.0, 2.0, 25)
    fit(write_csv(tmp_path / "e.csv", x, 2.0 * np.exp(0.5 * x)), model="a*exp(b*x)", optimizer="adamw",
        init={"a": 1.0, "b": 1.0}, steps=50)
    assert decays == [[0.0]]
    decays.clear()
    asked = fit(POLY, degree=2, optimizer="adamw", weight_decay=0.01)
    assert decays == [[0.01]] and asked.status != "converged"  # another objective: not the least squares
    with pytest.raises(ValueError, match="first-order"):
        fit(POLY, degree=2, optimizer="lm", weight_decay=0.01)
    with pytest.raises(ProblemError, match="weight_decay"):
        fit(POLY, degree=2, optimizer="adamw", weight_decay=-1)


def spy_on_refinement(monkeypatch) -> dict:
    """Record (in the returned dict, key "b") the coefficients the refinement pass starts from."""
    seen = {}
    original = tsqr.refine

    def spy(basis, xp, red, chunks, b):
        seen["b"] = np.array(b)
        return original(basis, xp, red, chunks, b)

    monkeypatch.setattr(tsqr, "refine", spy)
    return seen


def test_each_first_order_method_converges_on_its_own_before_refinement(monkeypatch):
    """The refinement wins the last digits; the optimizer must already be close (not rescued from afar)."""
    seen = spy_on_refinement(monkeypatch)
    for optimizer in ("sgd", "adadelta", "adam", "adamw", "nadam", "rmsprop", "adagrad"):
        seen.clear()
        result = fit(POLY, degree=2, optimizer=optimizer)
        assert result.status == "converged"
        assert np.allclose(seen["b"], [3.0, 2.0, 1.0], rtol=1e-8, atol=0)


def test_a_linear_model_with_a_term_without_parameters_is_reduced_with_it(tmp_path, monkeypatch):
    """y - f0 enters the QR (f0 = x**2/4 here): the optimizer's answer is right before the refinement too."""
    seen = spy_on_refinement(monkeypatch)
    rng = np.random.default_rng(9)
    x = rng.uniform(-3, 3, 200)
    path = write_csv(tmp_path / "f0.csv", x, 1.5 - 0.7 * x + x**2 / 4 + rng.normal(0, 0.01, x.size))
    A = np.stack([np.ones_like(x), x], axis=1)
    exact = np.linalg.lstsq(A, np.loadtxt(path, delimiter=",", skiprows=1)[:, 1] - x**2 / 4, rcond=None)[0]
    for optimizer in ("auto", "sgd", "adam"):
        result = fit(path, model="a + b*x + x**2/4", optimizer=optimizer)
        assert np.allclose(seen["b"], exact, rtol=1e-8, atol=0), (optimizer, seen["b"], exact)
        assert [result.parameters["a"], result.parameters["b"]] == pytest.approx(exact, rel=1e-12)
        assert result.extra["fit"]["refinement_change"] < 1e-8


def test_tsqr_map_reduce_is_the_qr_of_the_whole():
    rng = np.random.default_rng(1)
    x = rng.uniform(-3, 7, 1000)
    y = 1 - 2 * x + 0.5 * x**2 + rng.normal(0, 0.1, x.size)
    basis = bases.PolynomialBasis.for_range(2, x.min(), x.max())
    chunks = [([x[i:i + 97]], y[i:i + 97], None) for i in range(0, x.size, 97)]
    red = tsqr.reduce_chunks(basis, np, chunks)
    whole = tsqr.reduce_chunks(basis, np, [([x], y, None)])
    # R is unique up to the signs of its rows
    assert np.allclose(np.abs(red.R), np.abs(whole.R), rtol=1e-12)
    b = tsqr.to_user(red, tsqr.solve_reduced(red, red.z))
    assert np.allclose(b, np.polynomial.polynomial.polyfit(x, y, 2), rtol=1e-10)
    # the moments merge exactly (Chan's update)
    assert red.summary.n == 1000 and red.summary.mean == pytest.approx(y.mean(), rel=1e-14)
    assert red.summary.m2 == pytest.approx(((y - y.mean()) ** 2).sum(), rel=1e-12)


def test_streamed_file_gives_the_same_answer_as_in_memory(tmp_path, monkeypatch):
    import gradsolve.solve.fit.task as fit_task
    from gradsolve.problem import table as tablemod

    rng = np.random.default_rng(2)
    x = rng.uniform(0, 10, 5000)
    y = 3 + 2 * x + x**2 + rng.normal(0, 1, x.size)
    path = tmp_path / "d.csv"
    path.write_text("x,y\n" + "".join(f"{a!r},{b!r}\n" for a, b in zip(x.tolist(), y.tolist())))
    whole = fit(str(path), degree=2)
    monkeypatch.setattr(fit_task, "IN_MEMORY_BYTES", 0)
    monkeypatch.setattr(tablemod, "BLOCK_SIZE", 1 << 14)
    original = tablemod.Table.batches
    monkeypatch.setattr(tablemod.Table, "batches", lambda self, cols, **kw: original(self, cols, **{**kw, "block_size": 1 << 14}))
    streamed = fit(str(path), degree=2)
    assert streamed.extra["fit"]["rows"] == 5000
    for name in ("c0", "c1", "c2"):
        assert streamed.parameters[name] == pytest.approx(whole.parameters[name], rel=1e-13)


def test_statistics_match_the_textbook_formulas(tmp_path):
    rng = np.random.default_rng(3)
    x = np.linspace(0, 5, 40)
    y = 1.5 + 0.7 * x + rng.normal(0, 0.2, x.size)
    path = tmp_path / "line.csv"
    path.write_text("t,v\n" + "".join(f"{a!r},{b!r}\n" for a, b in zip(x.tolist(), y.tolist())))
    result = fit(str(path), degree=1)
    stats = result.extra["statistics"]
    A = np.stack([np.ones_like(x), x], axis=1)
    coef, rss, *_ = np.linalg.lstsq(A, y, rcond=None)
    cov = rss[0] / (x.size - 2) * np.linalg.inv(A.T @ A)
    assert stats["covariance"] == "ok" and stats["dof"] == 38
    assert stats["rss"] == pytest.approx(rss[0], rel=1e-10)
    assert stats["stderr"]["c0"] == pytest.approx(math.sqrt(cov[0, 0]), rel=1e-9)
    assert stats["stderr"]["c1"] == pytest.approx(math.sqrt(cov[1, 1]), rel=1e-9)
    assert stats["correlation"]["matrix"][0][1] == pytest.approx(cov[0, 1] / math.sqrt(cov[0, 0] * cov[1, 1]), rel=1e-9)
    assert stats["r_squared"] == pytest.approx(1 - rss[0] / ((y - y.mean()) ** 2).sum(), rel=1e-12)
    assert stats["rmse"] == pytest.approx(math.sqrt(rss[0] / x.size), rel=1e-10)
    assert result.extra["model"].startswith("v = ")


def test_sigma_gives_weights_and_absolute_errors(tmp_path):
    x = np.arange(10.0)
    s = np.where(x < 5, 0.1, 1.0)
    y = 2 + 3 * x + np.array([0.05, -0.1, 0.08, -0.02, 0.0, 0.9, -0.7, 0.3, -1.1, 0.5])
    path = tmp_path / "w.csv"
    path.write_text("x,y,s\n" + "".join(f"{a},{b!r},{c}\n" for a, b, c in zip(x.tolist(), y.tolist(), s.tolist())))
    result = fit(str(path), degree=1, sigma="s")
    A = np.stack([np.ones_like(x), x], axis=1) / s[:, None]
    coef = np.linalg.lstsq(A, y / s, rcond=None)[0]
    cov = np.linalg.inv(A.T @ A)  # absolute: no reduced chi-square
    assert [result.parameters["c0"], result.parameters["c1"]] == pytest.approx(coef, rel=1e-12)
    assert result.extra["statistics"]["stderr"]["c1"] == pytest.approx(math.sqrt(cov[1, 1]), rel=1e-9)
    assert result.extra["statistics"]["sigma"] == "absolute"


def test_rank_deficient_model_says_which_parameters_and_why(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("x,y\n1,2\n2,4.1\n3,5.9\n4,8.2\n")
    result = fit(str(path), model="a*x + b*x")
    stats = result.extra["statistics"]
    assert stats["covariance"] == "unavailable"
    assert set(stats["unavailable"]) == {"a", "b"} and "rank 1 of 2" in stats["reason"]
    assert result.parameters["a"] + result.parameters["b"] == pytest.approx(2.03, abs=0.01)
    json.dumps(result.to_dict(), allow_nan=False)


def test_no_degrees_of_freedom_is_reported(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("x,y\n1,2\n2,3\n")
    stats = fit(str(path), degree=1).extra["statistics"]
    assert stats["covariance"] == "unavailable" and "no degrees of freedom" in stats["reason"]


def test_general_linear_model_with_several_predictors_and_a_y_expression(tmp_path):
    rng = np.random.default_rng(4)
    u, v = rng.uniform(1, 2, 50), rng.uniform(-1, 1, 50)
    y = np.exp(0.5 + 2 * u - 0.3 * v * v)
    path = tmp_path / "d.tsv"
    path.write_text("u\tv\ty\n" + "".join(f"{a!r}\t{b!r}\t{c!r}\n" for a, b, c in zip(u.tolist(), v.tolist(), y.tolist())))
    result = fit(str(path), model="k + p*u + q*v**2", x_columns=["u", "v"], y_column="log(y)")
    assert result.optimizer == "qr"
    assert [result.parameters[n] for n in "kpq"] == pytest.approx([0.5, 2.0, -0.3], rel=1e-12)


def test_nonlinear_fit_starts_from_the_data_and_says_so(tmp_path):
    x = np.linspace(0, 4, 30)
    y = 5.0 * np.exp(-1.3 * x) + 0.5
    path = tmp_path / "d.csv"
    path.write_text("x,y\n" + "".join(f"{a!r},{b!r}\n" for a, b in zip(x.tolist(), y.tolist())))
    result = fit(str(path), model="a*exp(b*x) + c")
    assert result.status == "converged" and result.optimizer == "lm"
    assert [result.parameters[n] for n in "abc"] == pytest.approx([5.0, -1.3, 0.5], rel=1e-9)
    assert "from the data" in result.extra["fit"]["start"]["source"]


@pytest.mark.parametrize("loss", ["huber", "soft_l1", "cauchy"])
def test_robust_losses_ignore_outliers(tmp_path, loss):
    x = np.linspace(-2, 2, 41)
    y = 1 + 2 * x + 0.01 * np.sin(7 * x)
    y[[5, 20, 33]] += [30.0, -25.0, 40.0]
    path = tmp_path / "d.csv"
    path.write_text("x,y\n" + "".join(f"{a!r},{b!r}\n" for a, b in zip(x.tolist(), y.tolist())))
    plain = fit(str(path), degree=1)
    robust = fit(str(path), degree=1, robust_loss=loss, f_scale=0.1)
    assert abs(plain.parameters["c0"] - 1) > 0.5
    assert robust.parameters["c0"] == pytest.approx(1.0, abs=0.02)
    assert robust.parameters["c1"] == pytest.approx(2.0, abs=0.02)
    nonlinear = fit(str(path), model="a + b*x + 0*exp(x)*a*b", robust_loss=loss, f_scale=0.1, init={"a": 0, "b": 1})
    assert nonlinear.parameters["a"] == pytest.approx(1.0, abs=0.02)


def test_predictions_with_standard_errors():
    result = fit(POLY, degree=2, predict=["1.5", "-2"])
    preds = result.extra["predictions"]
    assert preds[0]["x"] == {"x": 1.5} and preds[0]["y"] == pytest.approx(3 + 3 + 2.25, rel=1e-13)
    assert preds[1]["y"] == pytest.approx(3, rel=1e-13) and preds[1]["stderr"] >= 0


# ----------------------------------------------------------------------------- the reader
def test_reader_sniffs_header_delimiter_and_names_headerless_columns(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("1;2;3\n4;5;6\n")
    table = open_table(str(p))
    assert table.delimiter == ";" and not table.has_header and table.names == ["col0", "col1", "col2"]
    p2 = tmp_path / "b.csv"
    p2.write_text("1,2\n3,4\n5,6.5\n")
    assert open_table(str(p2)).names == ["x", "y"]
    assert open_table(str(p2), header=True).names == ["1", "2"]
    result = fit(str(p2), degree=1)
    assert result.parameters["c1"] == pytest.approx(1.125)


def test_a_byte_order_mark_is_not_part_of_the_first_column_name(tmp_path):
    # Excel's "CSV UTF-8" starts with EF BB BF: '-x x' then failed with "did you mean '\ufeffx'?"
    p = tmp_path / "excel.csv"
    p.write_bytes(b"\xef\xbb\xbfx,y\n1,2\n2,4\n3,6.5\n")
    assert open_table(str(p)).names == ["x", "y"]
    assert fit(str(p), degree=1, x_columns=["x"]).parameters["c1"] == pytest.approx(2.25)
    headerless = tmp_path / "numbers.csv"
    headerless.write_bytes(b"\xef\xbb\xbf1,2\n2,4\n3,6.5\n")
    assert open_table(str(headerless)).names == ["x", "y"]
    assert fit(str(headerless), degree=1).parameters["c1"] == pytest.approx(2.25)


def test_bad_cell_names_row_line_and_column_or_is_dropped(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("x,y\n1,3\n2,5\n\n3,oops\n4,9\n5,\n6,13\n")
    with pytest.raises(ProblemError) as info:
        fit(str(p), degree=1)
    text = info.value.format()
    assert "row 3, column 'y'" in text and "'oops' is not a number" in text and ":5:" in text
    result = fit(str(p), degree=1, drop_invalid=True)
    assert result.extra["fit"]["dropped"] == 2 and result.extra["fit"]["rows"] == 4
    assert result.parameters["c1"] == pytest.approx(2.0)


def test_missing_value_is_an_error(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("x,y\n1,3\n2,\n")
    with pytest.raises(ProblemError, match="row 2, column 'y': missing value"):
        fit(str(p), degree=1)


def test_parquet_and_columns_by_index(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = np.linspace(0, 1, 20)
    pq.write_table(pa.table({"noise": np.zeros(20), "t": x, "v": 4 - x}), tmp_path / "d.parquet")
    result = fit(str(tmp_path / "d.parquet"), degree=1, x_columns=["1"], y_column="v")
    assert [result.parameters["c0"], result.parameters["c1"]] == pytest.approx([4.0, -1.0], rel=1e-13)


def test_parquet_text_column_is_read_as_csv_text_is(tmp_path, monkeypatch):
    """Strings in Parquet: numbers parsed, the first bad cell named by row and column, or its row dropped."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import gradsolve.solve.fit.task as fit_task

    path = str(tmp_path / "s.parquet")
    pq.write_table(pa.table({"x": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "y": ["3", " 5", "x", "9", None, "13"]}), path)
    with pytest.raises(ProblemError) as info:
        fit(path, degree=1)
    assert "row 3, column 'y': 'x' is not a number" in info.value.format()
    result = fit(path, degree=1, drop_invalid=True)
    assert result.extra["fit"]["dropped"] == 2 and result.extra["fit"]["rows"] == 4
    assert [result.parameters["c0"], result.parameters["c1"]] == pytest.approx([1.0, 2.0], rel=1e-13)
    monkeypatch.setattr(fit_task, "IN_MEMORY_BYTES", 0)  # streamed batches: the same checks
    with pytest.raises(ProblemError, match="row 3, column 'y'"):
        fit(path, degree=1)
    assert fit(path, degree=1, drop_invalid=True).extra["fit"]["dropped"] == 2
    monkeypatch.undo()
    pq.write_table(pa.table({"x": [1.0, 2.0, 3.0], "y": pa.array(["1", "nan", ""]).dictionary_encode()}), path)
    with pytest.raises(ProblemError, match="row 2, column 'y': not a finite number"):
        fit(path, degree=1)
    pq.write_table(pa.table({"x": [1.0, 2.0, 3.0], "y": pa.array([[1.0], [2.0], [3.0]])}), path)
    with pytest.raises(ProblemError, match=r"column .y.: a column of type list<.*> is not numeric"):
        fit(path, degree=1)


def test_parquet_is_recognised_by_its_magic_on_stdin_and_unknown_extensions(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from click.testing import CliRunner

    from gradsolve.cli.main import cli

    x = np.linspace(0, 1, 20)
    path = tmp_path / "d.bin"
    pq.write_table(pa.table({"t": x, "v": 4 - x}), path)
    result = fit(str(path), degree=1)
    assert [result.parameters["c0"], result.parameters["c1"]] == pytest.approx([4.0, -1.0], rel=1e-13)
    run = CliRunner().invoke(cli, ["fit", "-", "--degree", "1", "--output", "json", "--quiet"],
                             input=path.read_bytes())
    assert run.exit_code == 0, run.output
    data = json.loads(run.stdout)
    assert data["model"].startswith("v = ") and data["parameters"]["c1"] == pytest.approx(-1.0, rel=1e-13)
    # text that merely starts with the magic is still text
    text = tmp_path / "par.dat"
    text.write_text("PAR1,y\n1,2\n2,4\n3,6.5\n")
    assert open_table(str(text)).format == "csv" and open_table(str(text)).names == ["PAR1", "y"]


def test_fit_notes_have_the_same_keys_on_every_path(tmp_path):
    """README: fit is {path, rows, dropped, refined, refinement_change, start}, the same keys on every path."""
    keys = {"path", "rows", "dropped", "refined", "refinement_change", "start"}
    linear_fit = fit(POLY, degree=2).to_dict()["fit"]
    assert set(linear_fit) == keys and linear_fit["refined"] is True and linear_fit["start"] is None
    assert 0 <= linear_fit["refinement_change"] < 1e-12
    robust_fit = fit(POLY, degree=2, robust_loss="huber").to_dict()["fit"]
    assert set(robust_fit) == keys and robust_fit["refined"] is True and robust_fit["refinement_change"] is None
    x = np.linspace(0, 4, 30)
    nonlinear = fit(write_csv(tmp_path / "e.csv", x, 5.0 * np.exp(-1.3 * x) + 0.5), model="a*exp(b*x) + c")
    notes = nonlinear.to_dict()["fit"]
    assert set(notes) == keys and notes["refined"] is False and notes["refinement_change"] is None
    assert notes["start"]["source"].startswith("from the data")


def test_model_evaluations_outside_the_loop_raise_no_numpy_warnings(tmp_path):
    """Overflow and logs of negatives are NaN/inf the fit checks and reports, never RuntimeWarnings."""
    import warnings

    neg = tmp_path / "neg.csv"
    neg.write_text("x,y\n1,2\n2,-1\n3,5\n")
    big = tmp_path / "big.csv"
    big.write_text("x,y\n1,2\n2,3\n3,5\n800,7\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ProblemError, match="row 2: the response -y 'log\\(y\\)' is not a finite number"):
            fit(str(neg), degree=1, y_column="log(y)")
        # a linear model whose term overflows: a clear error (it was an internal error)
        with pytest.raises(ProblemError, match="the term 'exp\\(x\\)' of the model is not a finite number"):
            fit(str(big), model="a*exp(x) + b")
        # a prediction where the model overflows: null, quietly
        result = fit(str(big), model="a*exp(b*x)", init={"a": 1.0, "b": 0.001}, predict=["1e6"])
        assert result.to_dict()["predictions"][0]["stderr"] is None
        result = fit(str(STRD / "MGH10.csv"), model="a + b*x**c", y_column="y")
        assert math.isfinite(result.loss)


@pytest.mark.parametrize("args", [
    ["MGH10.csv", "--model", "a + b*x**c"],
    # BoxBOD from NIST's first start: the model overflows on the way (exp(-b2*x) with b2 large)
    ["BoxBOD.csv", "--model", "b1*(1-exp(-b2*x))", "--init", "b1=1", "--init", "b2=1"],
], ids=["MGH10 power", "BoxBOD start1"])
def test_quiet_fit_writes_nothing_to_stderr(args):
    proc = subprocess.run([sys.executable, "-m", "gradsolve", "fit", str(STRD / args[0]), *args[1:], "-y", "y",
                           "-q", "--output", "json"], capture_output=True, text=True, cwd=ROOT)
    assert proc.stderr == "", proc.stderr
    assert json.loads(proc.stdout)["schema"] == 1


# ----------------------------------------------------------------------------- --plot
def test_plot_without_matplotlib_is_a_clear_error(monkeypatch, tmp_path):
    import builtins
    import importlib.util

    from click.testing import CliRunner

    from gradsolve.cli.main import cli
    from gradsolve.solve.fit import plot_fit

    real_import, real_find_spec = builtins.__import__, importlib.util.find_spec

    def no_matplotlib(name, *args, **kw):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.split(".")[0] == "matplotlib" else real_find_spec(name, *a))
    out = tmp_path / "fit.png"
    with pytest.raises(ProblemError, match=r"--plot needs matplotlib: pip install 'gradsolve\[plot\]'"):
        prepare_fit(POLY, degree=2, plot=str(out))
    task = prepare_fit(POLY, degree=2)  # checked up front, and again when drawing
    from gradsolve.solve.fit import run_fit
    from gradsolve.solve.options import SolveOptions

    result = run_fit(task, SolveOptions())
    with pytest.raises(ProblemError, match="--plot needs matplotlib"):
        plot_fit(task, result, str(out))
    run = CliRunner().invoke(cli, ["fit", POLY, "--degree", "2", "--plot", str(out), "--quiet"])
    assert run.exit_code == 2 and "--plot needs matplotlib" in run.output and "Traceback" not in run.output
    assert not out.exists()


@pytest.mark.parametrize("kind", ["polynomial", "nonlinear", "two predictors"])
def test_plot_writes_a_png(tmp_path, kind, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from gradsolve.solve.fit import plot_fit, run_fit

    figures = []
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: (figures.append(fig), close(fig)))
    from gradsolve.solve.options import SolveOptions

    out = tmp_path / "fit.png"
    if kind == "polynomial":
        task = prepare_fit(POLY, degree=2, plot=str(out))
    elif kind == "nonlinear":
        x = np.linspace(0, 4, 30)
        task = prepare_fit(write_csv(tmp_path / "e.csv", x, 5.0 * np.exp(-1.3 * x) + 0.5), model="a*exp(b*x) + c",
                           plot=str(out))
    else:
        rng = np.random.default_rng(8)
        u, v = rng.uniform(0, 1, 30), rng.uniform(0, 1, 30)
        data = tmp_path / "uv.csv"
        data.write_text("u,v,y\n" + "".join(f"{a!r},{b!r},{1 + 2 * a - b!r}\n" for a, b in zip(u.tolist(), v.tolist())))
        task = prepare_fit(str(data), model="k + p*u + q*v", y_column="y", plot=str(out))
    result = run_fit(task, SolveOptions())
    plot_fit(task, result, str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10000
    # what was drawn: the data and the fitted curve above, one residual per row below
    top, bottom = figures[0].axes
    data, curve = top.get_lines()
    rows = result.extra["fit"]["rows"]
    assert data.get_label() == "data" and len(data.get_xdata()) == rows and curve.get_label().startswith("fit")
    residuals = bottom.get_lines()[0].get_ydata()
    assert len(residuals) == rows and np.max(np.abs(residuals)) <= 1e-6 * np.max(np.abs(data.get_ydata()))
    assert result.to_dict()["plot"] == str(out)
    with pytest.raises(ProblemError, match="--plot: cannot write"):
        plot_fit(task, result, str(tmp_path / "no such folder" / "fit.png"))


def test_unknown_column_suggests_a_name():
    with pytest.raises(ProblemError) as info:
        prepare_fit(POLY, degree=2, y_column="yy")
    assert "did you mean 'y'" in info.value.format()


# ----------------------------------------------------------------------------- the command
def test_cli_fit_json_and_stdin_without_sympy():
    code = ("import sys, io\nfrom gradsolve.cli.main import main\n"
            "try:\n    main(['fit', '-', '--degree', '1', '--output', 'json', '--quiet'])\n"
            "except SystemExit as e:\n    print('EXIT', e.code, 'sympy' in sys.modules, file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", code], input="t\tv\n0\t1\n1\t3\n2\t5.2\n", capture_output=True,
                          text=True, cwd=ROOT)
    assert "EXIT 0 False" in proc.stderr, proc.stderr
    data = json.loads(proc.stdout)
    assert data["schema"] == 1 and data["status"] == "converged" and data["optimizer"] == "qr"
    assert set(data["statistics"]) >= {"stderr", "correlation", "r_squared", "rmse", "rss", "dof", "covariance",
                                       "reason"}
    assert data["model"].startswith("v = ") and data["residuals"][0]["count"] == 3


def test_cli_fit_table_and_bad_input_exit_codes(tmp_path):
    from click.testing import CliRunner

    from gradsolve.cli.main import cli

    result = CliRunner().invoke(cli, ["fit", POLY, "--degree", "2", "--optimizer", "sgd", "--quiet",
                                      "--predict", "2"])
    assert result.exit_code == 0, result.output
    assert "3 +/- " in result.output and "correlation" in result.output and "R^2" in result.output
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\n2,zz\n")
    result = CliRunner().invoke(cli, ["fit", str(bad), "--degree", "1"])
    assert result.exit_code == 2 and "row 2, column 'y'" in result.output and "Traceback" not in result.output


def test_chunks_mapped_on_two_threads_give_the_same_fit_to_the_last_bit(tmp_path, monkeypatch):
    """The map steps work on two chunks at once; results are summed in chunk order, so no bit moves."""
    import gradsolve.solve.fit.task as fit_task

    rng = np.random.default_rng(11)
    x = rng.uniform(-5, 5, 5000)
    path = write_csv(tmp_path / "many.csv", x, 3 + 2 * x + x**2 + rng.normal(0, 0.1, x.size))
    monkeypatch.setattr(fit_task, "CHUNK_ROWS", 256)  # 20 chunks
    results = {}
    mapped = []
    original = tsqr.map_chunk
    monkeypatch.setattr(tsqr, "map_chunk", lambda *a, **k: mapped.append(1) or original(*a, **k))
    for threads in (1, 2):
        monkeypatch.setattr(tsqr, "MAP_THREADS", threads)
        result = fit(path, degree=2, sigma=None)
        results[threads] = (result.parameters, result.extra["statistics"]["rss"], result.extra["statistics"]["stderr"])
    assert results[1] == results[2]
    assert len(mapped) == 2 * 20  # the chunks really were many


def test_a_fit_whose_squares_overflow_is_diverged_and_quiet_on_every_thread(tmp_path, monkeypatch):
    """x = y near 1e200: the sums of squares overflow. The verdict says so (never a 'converged' fit without a
    loss), and no NumPy warning escapes from the worker threads, which keep the caller's np.errstate."""
    import warnings

    import gradsolve.solve.fit.task as fit_task

    x = np.linspace(1.0, 2.0, 2000) * 1e200
    path = write_csv(tmp_path / "huge.csv", x, x)
    monkeypatch.setattr(fit_task, "CHUNK_ROWS", 128)
    monkeypatch.setattr(tsqr, "MAP_THREADS", 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = fit(path, degree=2)
    assert result.status == "diverged" and result.exit_code == 1 and "overflow" in result.stop_reason


@pytest.mark.parametrize("where", ["file", "stdin", "streamed"])
def test_a_ragged_row_names_its_line_and_never_quotes_the_row(tmp_path, monkeypatch, where):
    """As a problem file's data: reader does (gradsolve/problem/data.py): the counts, the line, not the row."""
    import io

    import gradsolve.solve.fit.task as fit_task

    text = "x,y\n1,2\n\n2,3,secret-token\n3,4\n"
    path = tmp_path / "ragged.csv"
    path.write_text(text)
    if where == "streamed":
        monkeypatch.setattr(fit_task, "IN_MEMORY_BYTES", 0)
    with pytest.raises(ProblemError) as info:
        if where == "stdin":
            task = prepare_fit("-", degree=1, stdin=io.StringIO(text))
            task.data.load()
            list(task.chunks())
        else:
            fit(str(path), degree=1)
    formatted = info.value.format()
    assert formatted.splitlines()[0].endswith(":4: error: cannot read the data: Expected 2 columns, got 3")
    assert "secret" not in formatted and "2,3" not in formatted
    assert info.value.line == 4


def test_dtype_float32_is_used_on_the_nonlinear_path_and_never_claimed_on_the_linear_one(tmp_path):
    x = np.linspace(0, 4, 30)
    path = write_csv(tmp_path / "e.csv", x, 5.0 * np.exp(-1.3 * x) + 0.5)
    nonlinear = fit(path, model="a*exp(b*x) + c", dtype="float32")
    wide = fit(path, model="a*exp(b*x) + c")
    assert nonlinear.status == "converged" and nonlinear.dtype == "float32" and nonlinear.warnings == []
    for name, value in nonlinear.parameters.items():  # the engine ran in float32: its values are float32 numbers
        assert float(np.float32(value)) == value
        assert value == pytest.approx(wide.parameters[name], rel=1e-4)
    assert any(float(np.float32(v)) != v for v in wide.parameters.values())
    for kwargs in ({}, {"robust_loss": "huber"}):
        linear_fit = fit(POLY, degree=2, dtype="float32", **kwargs)
        assert linear_fit.dtype == "float64" and linear_fit.to_dict()["dtype"] == "float64"
        assert linear_fit.warnings == ["--dtype: warning: linear fits reduce in float64; --dtype float32 applies "
                                       "to nonlinear models"]
        assert digits(linear_fit.parameters["c2"], 1.0) >= 14
    assert fit(POLY, degree=2).warnings == []


def test_cli_dtype_float32_linear_fit_warns_on_stderr_and_reports_float64():
    proc = subprocess.run([sys.executable, "-m", "gradsolve", "fit", POLY, "--degree", "2", "--dtype", "float32",
                           "--output", "json", "--quiet"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["dtype"] == "float64"
    assert proc.stderr.strip() == ("--dtype: warning: linear fits reduce in float64; --dtype float32 applies to "
                                   "nonlinear models")


def test_refinement_change_is_the_largest_relative_change_of_a_coefficient(monkeypatch):
    """README: max over k of |b_k after - b_k before| / |b_k after|."""
    seen = {}
    original = tsqr.refine

    def spy(basis, xp, red, chunks, b):
        seen["before"] = np.array(b, dtype=np.float64)
        seen["after"] = np.asarray(original(basis, xp, red, chunks, b), dtype=np.float64)
        return seen["after"]

    monkeypatch.setattr(tsqr, "refine", spy)
    result = fit(POLY, degree=2, optimizer="adam")
    expected = float(np.max(np.abs(seen["after"] - seen["before"]) / np.abs(seen["after"])))
    assert result.extra["fit"]["refinement_change"] == pytest.approx(expected, rel=1e-12, abs=0)
    assert result.extra["fit"]["refinement_change"] > 1e-12  # Adam alone has about 9 digits


def test_the_direct_solve_progress_row_shows_the_result_loss():
    rows = []
    result = fit(POLY, degree=2, on_progress=rows.append)
    assert result.optimizer == "qr" and len(rows) == 1
    assert rows[0].loss == result.loss
    assert rows[0].values == result.parameters


@pytest.mark.parametrize("where", ["file", "stdin"])
def test_no_rows_is_one_wording_for_a_file_and_for_stdin(tmp_path, where):
    import io

    path = tmp_path / "empty.csv"
    path.write_text("x,y\n")
    with pytest.raises(ProblemError) as info:
        if where == "stdin":
            prepare_fit("-", degree=1, stdin=io.StringIO("x,y\n")).data.load()
        else:
            fit(str(path), degree=1)
    assert info.value.message == "the data has no rows"
    with pytest.raises(ProblemError) as info:
        prepare_fit("-", degree=1, stdin=io.StringIO(""))
    assert info.value.message == "the data has no rows"


@pytest.mark.parametrize("options", [{"bogus_option": 3}, {"steps": 0}, {"tol": -1}, {"lr": float("nan")},
                                     {"optimizer": "newton"}, {"starts": 0}, {"dtype": "float16"}])
def test_fit_refuses_options_that_cannot_work_as_solve_does(options):
    # options are built in one place (gradsolve.solve.options) for gs.solve, fit and the command alike
    import gradsolve as gs
    from gradsolve.solve.options import SolveError

    with pytest.raises(SolveError):
        fit(POLY, degree=2, **options)
    with pytest.raises(SolveError):
        gs.solve(gs.Problem.from_text("x + y = 3\nx - y = 1"), **options)


@pytest.mark.parametrize("model, init", [("a*log(x - b) + c", {"a": 1.0, "b": 1.0, "c": 0.0}),
                                         ("a*sqrt(r^2 - x^2)", {"a": 1.0, "r": 0.5})])
def test_a_fit_whose_start_is_outside_the_models_domain_diverges_as_puzzle_does(tmp_path, model, init):
    # the log's argument and the hemisphere's root are negative on some rows at the start: exit 1 with
    # puzzle's message, no statistics, never an internal error (the SVD of a NaN Jacobian raised before)
    x = np.linspace(0.1, 0.9, 30)
    data = tmp_path / "d.csv"
    data.write_text("x,y\n" + "".join(f"{float(a)!r},{float(2 * np.log(a + 0.5) + 1)!r}\n" for a in x))
    result = fit(str(data), model=model, init=init)
    assert result.status == "diverged" and "at the starting point" in result.stop_reason
    assert result.to_dict()["statistics"]["covariance"] == "unavailable"
    proc = subprocess.run([sys.executable, "-m", "gradsolve", "fit", str(data), "--model", model, "--quiet",
                           *[f"--init={k}={v}" for k, v in init.items()]], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1 and "diverged" in proc.stdout and "internal error" not in proc.stderr


def test_fit_with_starts_lists_the_minima_it_found_and_reports_the_best(tmp_path):
    # `fit --starts K` was accepted and ignored: a sine from a poor start ends in a local minimum (loss ~151 here);
    # more starts find others, the global one (loss ~2: 40 rows of noise 0.2) among them, reported as puzzle does
    rng = np.random.default_rng(3)
    x = np.linspace(0, 6, 40)
    y = 3 * np.sin(2.4 * x + 0.4) + 0.5 + rng.normal(0, 0.2, x.size)
    data = tmp_path / "sine.csv"
    data.write_text("x,y\n" + "".join(f"{float(a)!r},{float(b)!r}\n" for a, b in zip(x, y)))
    result = fit(str(data), model="A*sin(w*x + phi) + c", init={"w": 1, "A": 1, "phi": 0, "c": 0}, starts=3)
    doc = result.to_dict()
    solutions = doc["solutions"]
    assert doc["starts"] == 3 and 2 <= len(solutions) <= 3 and sum(s["starts"] for s in solutions) <= 3
    assert [s["loss"] for s in solutions] == sorted(s["loss"] for s in solutions)
    # the best solution, as polished afterwards (LM again from it at tolerance 1e-15)
    assert doc["parameters"] == pytest.approx(solutions[0]["parameters"], rel=1e-6) and result.status == "converged"
    assert result.loss < 10 and solutions[-1]["loss"] > 100  # the global minimum, and the poor start's local one
    assert abs(doc["parameters"]["w"] - 2.4) < 0.05


def test_parameters_running_off_along_a_flat_valley_carry_a_warning(tmp_path):
    # a + b*exp(c*t) on a straight line: c runs to 0 while a and b run off in opposite directions, the fit
    # itself converged (a straight line is its limit); the result must say that a, b and c are not determined
    rng = np.random.default_rng(3)
    t = np.linspace(0, 10, 25)
    y = 2 + 0.7 * t + rng.normal(0, 0.3, t.size)
    data = tmp_path / "line.csv"
    data.write_text("t,y\n" + "".join(f"{float(a)!r},{float(b)!r}\n" for a, b in zip(t, y)))
    result = fit(str(data), model="a + b*exp(c*t)", init={"a": 1, "b": 1, "c": 1})
    assert result.status == "converged"
    (warning,) = [w for w in result.warnings if "near-flat valley" in w]
    assert "a and b (correlation -1.0000)" in warning
    # a well-determined fit carries none
    good = fit(str(data), degree=1)
    assert not [w for w in good.warnings if "near-flat valley" in w]


def test_an_underdetermined_fit_is_reported_as_a_family(tmp_path):
    data = tmp_path / "three.csv"
    data.write_text("x,y\n0,1\n1,3\n2,7\n")
    doc = fit(str(data), degree=4).to_dict()
    stats = doc["statistics"]
    assert stats["dof"] == 0 and stats["deficit"] == 2  # n - rank = 3 - 3; p - rank = 5 - 3
    family = doc["solution_set"]
    assert family["rank"] == 3 and len(family["free_directions"]) == 2 and family["local"] is False
    # every free direction changes the fitted values at the data nowhere
    x = np.array([0.0, 1.0, 2.0])
    for direction in family["free_directions"]:
        d = np.array([direction[f"c{k}"] for k in range(5)])
        assert np.max(np.abs(np.vander(x, 5, increasing=True) @ d)) < 1e-9
