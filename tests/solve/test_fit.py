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
from gradsolve.solve import linear
from gradsolve.solve.fit import fit, prepare_fit

ROOT = Path(__file__).resolve().parents[2]
POLY = str(ROOT / "problems" / "polynomial.csv")


def digits(value, exact):
    return 16.0 if value == exact else -math.log10(abs(value - exact) / abs(exact))


@pytest.mark.parametrize("optimizer", ["auto", "sgd", "adadelta", "adam", "lm", "nadam", "rmsprop", "adagrad", "lbfgs"])
def test_polynomial_csv_recovers_3_2_1_to_12_digits_with_every_optimizer(optimizer):
    result = fit(POLY, degree=2, optimizer=optimizer)
    assert result.status == "converged", result.stop_reason
    for name, exact in (("c0", 3.0), ("c1", 2.0), ("c2", 1.0)):
        assert digits(result.parameters[name], exact) >= 12, (name, result.parameters)


def test_each_first_order_method_converges_on_its_own_before_refinement(monkeypatch):
    """The refinement wins the last digits; the optimizer must already be close (not rescued from afar)."""
    seen = {}
    original = linear.refine

    def spy(basis, xp, red, chunks, b):
        seen["b"] = np.array(b)
        return original(basis, xp, red, chunks, b)

    monkeypatch.setattr(linear, "refine", spy)
    for optimizer in ("sgd", "adadelta", "adam"):
        result = fit(POLY, degree=2, optimizer=optimizer)
        assert result.status == "converged"
        assert np.allclose(seen["b"], [3.0, 2.0, 1.0], rtol=1e-8, atol=0)


def test_tsqr_map_reduce_is_the_qr_of_the_whole():
    rng = np.random.default_rng(1)
    x = rng.uniform(-3, 7, 1000)
    y = 1 - 2 * x + 0.5 * x**2 + rng.normal(0, 0.1, x.size)
    basis = linear.PolynomialBasis.for_range(2, x.min(), x.max())
    chunks = [([x[i:i + 97]], y[i:i + 97], None) for i in range(0, x.size, 97)]
    red = linear.reduce_chunks(basis, np, chunks)
    whole = linear.reduce_chunks(basis, np, [([x], y, None)])
    # R is unique up to the signs of its rows
    assert np.allclose(np.abs(red.R), np.abs(whole.R), rtol=1e-12)
    b = linear.to_user(red, linear.solve_reduced(red, red.z))
    assert np.allclose(b, np.polynomial.polynomial.polyfit(x, y, 2), rtol=1e-10)
    # the moments merge exactly (Chan's update)
    assert red.summary.n == 1000 and red.summary.mean == pytest.approx(y.mean(), rel=1e-14)
    assert red.summary.m2 == pytest.approx(((y - y.mean()) ** 2).sum(), rel=1e-12)


def test_streamed_file_gives_the_same_answer_as_in_memory(tmp_path, monkeypatch):
    import gradsolve.solve.fit as fitmod
    from gradsolve.problem import table as tablemod

    rng = np.random.default_rng(2)
    x = rng.uniform(0, 10, 5000)
    y = 3 + 2 * x + x**2 + rng.normal(0, 1, x.size)
    path = tmp_path / "d.csv"
    path.write_text("x,y\n" + "".join(f"{a!r},{b!r}\n" for a, b in zip(x.tolist(), y.tolist())))
    whole = fit(str(path), degree=2)
    monkeypatch.setattr(fitmod, "IN_MEMORY_BYTES", 0)
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
