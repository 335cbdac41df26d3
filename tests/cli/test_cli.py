"""The real command: CliRunner for behaviour, subprocesses for streams, exit codes and signals."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gradsolve.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
PROBLEMS = ROOT / "problems"
ANSI = re.compile(r"\x1b\[")


def run(*args, input=None, timeout=120):
    """gradsolve in a subprocess, streams kept apart."""
    return subprocess.run([sys.executable, "-m", "gradsolve", *args], capture_output=True, text=True,
                          input=input, timeout=timeout, cwd=ROOT)


def invoke(*args, input=None):
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def test_four_unknowns_json_satisfies_equations_and_reports_the_family():
    proc = run("puzzle", "problems/four-unknowns.yaml", "--output", "json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    p = result["parameters"]
    for residual in (p["A"] + p["B"] - 9, p["C"] - p["D"] - 1, p["A"] + p["C"] - 8, p["B"] - p["D"] - 2):
        assert abs(residual) < 1e-10
    assert result["status"] == "converged" and result["schema"] == 1
    assert result["optimizer"] == "lm"
    family = result["solution_set"]
    assert family["rank"] == 3 and family["local"] is False
    (direction,) = family["free_directions"]
    d = np.array([direction[k] for k in "ABCD"])
    assert abs(np.linalg.norm(d) - 1) < 1e-12 and d[0] > 0
    np.testing.assert_allclose(d / d[1], np.array([-1.0, 1.0, 1.0, 1.0]), atol=1e-9)
    np.testing.assert_allclose([family["particular"][k] for k in "ABCD"], [6.0, 3.0, 2.0, 1.0], atol=1e-12)
    assert all(abs(r["value"]) < 1e-10 for r in result["residuals"])


def test_table_output_says_the_solution_is_not_unique():
    result = invoke("puzzle", str(PROBLEMS / "four-unknowns.yaml"), "--quiet")
    assert result.exit_code == 0
    assert "not unique" in result.output and "rank 3 of 4" in result.output


def test_progress_goes_to_stderr_without_ansi_codes_when_not_a_terminal():
    proc = run("puzzle", "problems/intersection.txt", "--output", "json")
    json.loads(proc.stdout)  # stdout is the JSON document alone
    assert "step" in proc.stderr and "loss" in proc.stderr
    assert not ANSI.search(proc.stderr) and not ANSI.search(proc.stdout)


def test_jsonl_progress_rows_parse():
    proc = run("minimize", "(x - 2)^2 + (y + 1)^2", "--progress", "jsonl", "--output", "json")
    rows = [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]
    assert rows and {"step", "loss", "gradient_norm", "parameters"} <= set(rows[0])
    assert proc.returncode == 0


def test_csv_output():
    result = invoke("puzzle", str(PROBLEMS / "intersection.txt"), "--quiet", "--output", "csv")
    lines = result.output.strip().splitlines()
    assert lines[0] == "name,value" and {line.split(",")[0] for line in lines[1:]} == {"x", "y"}


def test_minimize_abs_difference_meets_in_the_middle():
    result = invoke("minimize", "abs(x - y)", "--init", "x=5", "--init", "y=1", "--quiet", "--output", "json")
    data = json.loads(result.output)
    assert data["status"] == "converged" and data["optimizer"] == "adam"
    assert abs(data["parameters"]["x"] - data["parameters"]["y"]) < 1e-9
    assert abs(data["parameters"]["x"] - 3) < 1e-6


def test_stdin_problem():
    result = invoke("puzzle", "-", "--quiet", "--output", "json", input="x + y = 3\nx - y = 1\n")
    data = json.loads(result.output)
    assert result.exit_code == 0
    assert data["parameters"]["x"] == pytest.approx(2.0, abs=1e-12)


def test_exit_1_when_the_step_limit_is_reached():
    proc = run("minimize", "(1 - x)^2 + 100*(y - x^2)^2", "--init", "x=-1.2", "--init", "y=1",
               "--optimizer", "adam", "--steps", "5", "--output", "json", "--quiet")
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["status"] == "max_steps"


def test_exit_1_for_inconsistent_equations_with_the_least_squares_answer():
    proc = run("puzzle", "-", "--output", "json", "--quiet", input="x + y = 1\nx + y = 2\n")
    data = json.loads(proc.stdout)
    assert proc.returncode == 1 and data["status"] == "inconsistent"
    assert data["parameters"]["x"] + data["parameters"]["y"] == pytest.approx(1.5, abs=1e-9)


def test_exit_1_when_diverging_reports_the_last_finite_point():
    proc = run("minimize", "x^2", "--init", "x=1", "--optimizer", "sgd", "--lr", "10", "--output", "json", "--quiet")
    data = json.loads(proc.stdout)
    assert proc.returncode == 1 and data["status"] == "diverged"
    assert data["parameters"]["x"] is not None and np.isfinite(data["parameters"]["x"])
    assert "NaN" not in proc.stdout and "Infinity" not in proc.stdout


@pytest.mark.parametrize("args, needle", [
    (["puzzle", "problems/does-not-exist.yaml"], "does-not-exist.yaml"),
    (["minimize", "sinn(x)"], "did you mean 'sin'"),
    (["minimize", "2x + 1"], "2*x"),
    (["puzzle", "problems/four-unknowns.yaml", "--init", "A"], "NAME=VALUE"),
    (["puzzle", "problems/four-unknowns.yaml", "--optimizer", "newton"], "newton"),
    (["minimize", "x^2", "--optimizer", "lm"], "needs equations or residuals"),
    (["fit", "problems/polynomial.csv"], "--degree"),
])
def test_exit_2_for_bad_input_without_traceback(args, needle):
    proc = run(*args)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_exit_2_for_a_file_with_several_mistakes_lists_them_all(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("x + = 1\nsinn(y) = 2\nx + y = 3\n")
    proc = run("puzzle", str(bad))
    assert proc.returncode == 2
    assert f"{bad}:1:" in proc.stderr and f"{bad}:2:" in proc.stderr


def test_exit_3_for_an_internal_error_is_one_line(monkeypatch):
    import gradsolve.solve.solver as solver

    def broken(*args, **kwargs):
        raise ZeroDivisionError("simulated bug")

    monkeypatch.setattr(solver, "solve_spec", broken)
    result = CliRunner().invoke(cli, ["puzzle", str(PROBLEMS / "intersection.txt"), "--quiet"])
    assert result.exit_code == 3
    assert "internal error: ZeroDivisionError: simulated bug" in result.output
    assert "Traceback" not in result.output


def test_sigint_prints_the_best_point_and_exits_130():
    proc = subprocess.Popen(
        [sys.executable, "-m", "gradsolve", "minimize", "(x - 1)^2 + abs(y)", "--optimizer", "sgd", "--lr", "1e-9",
         "--steps", "100000000", "--tol", "0", "--atol", "0", "--output", "json", "--progress", "plain",
         "--every", "1000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        deadline = time.time() + 60
        seen = ""
        while time.time() < deadline:
            line = proc.stderr.readline()
            seen += line
            if re.match(r"\s+\d+\s", line) and " 1000 " in " " + line:
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, seen + err
    data = json.loads(out)
    assert data["status"] == "interrupted" and data["steps"] >= 1000
    assert "best point found so far" in err


def test_check_lists_every_file_and_fails_on_errors(tmp_path):
    good = invoke("check", str(PROBLEMS / "four-unknowns.yaml"), str(PROBLEMS / "intersection.txt"))
    assert good.exit_code == 0
    assert "unknowns: A, B, C, D" in good.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("equations:\n  - x +* 2 = 1\n")
    result = CliRunner().invoke(cli, ["check", str(PROBLEMS / "intersection.txt"), str(bad)])
    assert result.exit_code == 2
    assert "bad.yaml:2:" in result.output and "intersection.txt: ok" in result.output


def test_help_has_examples_on_every_command():
    for command in ("puzzle", "fit", "minimize", "check"):
        result = invoke(command, "--help")
        assert result.exit_code == 0 and "Example" in result.output


def test_help_imports_neither_sympy_nor_cupy():
    code = ("import sys\nfrom gradsolve.cli.main import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('sympy' in sys.modules, 'cupy' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.stdout.strip().splitlines()[-1] == "False False"


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and "gradsolve" in result.output


def test_device_cuda_without_a_gpu_is_a_clear_error():
    import gradsolve as gs

    if gs.cuda_available():  # pragma: no cover - needs a GPU
        pytest.skip("a GPU is present")
    proc = run("puzzle", "problems/intersection.txt", "--device", "cuda")
    assert proc.returncode == 2 and "cuda" in proc.stderr and "Traceback" not in proc.stderr
    auto = run("puzzle", "problems/intersection.txt", "--device", "auto", "--output", "json")
    assert auto.returncode == 0 and json.loads(auto.stdout)["device"] == "cpu"
    assert "solving on the cpu" in auto.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_live_table_renders_on_a_terminal():
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "gradsolve", "minimize", "(1 - x)^2 + 100*(y - x^2)^2",
                             "--init", "x=-1.2", "--init", "y=1", "--optimizer", "adam", "--steps", "3000",
                             "--every", "10", "--output", "json"],
                            stdout=subprocess.PIPE, stderr=slave, cwd=ROOT, env={**os.environ, "COLUMNS": "160"})
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(master)
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert "solving with adam" in screen
    assert "loss" in screen and "┃" in screen  # a rich table
    assert screen.count("solving with adam") >= 2  # redrawn as it updates
    json.loads(proc.stdout.read())


# ------------------------------------------------------------------ review fixes: no unknowns, options, escaping --


@pytest.mark.parametrize("args, where", [
    (["minimize", "pi"], "<expr>:1:1: error: the problem has no unknowns"),
    (["minimize", "3"], "<expr>:1:1: error: the problem has no unknowns"),
    (["minimize", "pi", "--init", "x=1"], "<expr>:1:1: error: the problem has no unknowns: 'x' is declared"),
    (["puzzle", "-"], "<stdin>:1:1: error: the problem has no unknowns"),
])
def test_problems_without_unknowns_are_exit_2(args, where):
    proc = run(*args, input="2 = 3\n")
    assert proc.returncode == 2, proc.stderr
    assert where in proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize("equation", ["1 = 1", "2 = 3"])
def test_puzzle_and_check_refuse_a_file_without_unknowns(tmp_path, equation):
    path = tmp_path / "constant.txt"
    path.write_text(f"# no unknowns\n{equation}\n")
    for command in ("puzzle", "check"):
        result = CliRunner().invoke(cli, [command, str(path)])
        assert result.exit_code == 2, result.output
        assert f"{path}:2:1: error: the problem has no unknowns" in result.output
        assert ": ok" not in result.output


@pytest.mark.parametrize("args, needle", [
    (["--seed", "-1"], "Invalid value for '--seed'"),
    (["--starts", "0"], "Invalid value for '--starts'"),
    (["--starts", "1000001"], "Invalid value for '--starts'"),
    (["--init", "x=nan"], "Invalid value for '--init'"),
    (["--init", "x=inf"], "Invalid value for '--init'"),
    (["--init", "x=-1e999"], "Invalid value for '--init'"),
])
def test_bad_option_values_are_usage_errors(args, needle):
    result = CliRunner().invoke(cli, ["minimize", "(x - 1)^2", "--quiet", *args])
    assert result.exit_code == 2, result.output
    assert needle in result.output and "Traceback" not in result.output


def test_init_outside_bounds_is_labelled_init(tmp_path):
    path = tmp_path / "bounded.yaml"
    path.write_text("unknowns:\n  x: {init: 0.5, min: 0, max: 1}\nequations:\n  - x^2 = 0.25\n")
    result = CliRunner().invoke(cli, ["puzzle", str(path), "--init", "x=5", "--quiet"])
    assert result.exit_code == 2
    assert result.output.startswith("--init: error: init of 'x' (5) is outside its bounds [0, 1]")
    assert str(path) not in result.output and "<input>" not in result.output
    path.write_text("unknowns:\n  x: {init: 5, min: 0, max: 1}\nequations:\n  - x^2 = 0.25\n")
    result = CliRunner().invoke(cli, ["check", str(path)])
    assert result.exit_code == 2 and f"{path}:2:6: error: init of 'x' (5) is outside its bounds [0, 1]" in result.output
    result = CliRunner().invoke(cli, ["minimize", "(x - 1)^2", "--init", "sin=1", "--quiet"])
    assert result.exit_code == 2 and result.output.startswith("--init: error: 'sin' is a function name")


def test_overflowing_coefficient_is_exit_2_with_location():
    result = CliRunner().invoke(cli, ["minimize", "x*1e308*10", "--quiet"])
    assert result.exit_code == 2
    assert result.output.startswith("<expr>:1:1: error: the constant 1.000e309 here is too large for double precision")


SETTINGS = {
    "unknown.yaml": ("equations: [x = 2]\nsolver: {optimizer: newton}\n", "2:21", "unknown optimizer 'newton'"),
    "bounds.yaml": ("unknowns:\n  x: {init: 1, min: 0}\nminimize: (x - 2)^2\nsolver:\n  optimizer: lbfgs\n", "5:14",
                    "optimizer lbfgs does not support bounds (min/max on x)"),
    "loss.yaml": ("minimize: (x - 2)^2\nsolver:\n  optimizer: lm\n", "3:14", "optimizer lm needs equations or residuals"),
}


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_check_and_puzzle_report_refused_solver_settings_at_their_line(tmp_path, name):
    text, where, message = SETTINGS[name]
    path = tmp_path / name
    path.write_text(text)
    for command in ("check", "puzzle"):
        result = CliRunner().invoke(cli, [command, str(path), *(["--quiet"] if command == "puzzle" else [])])
        assert result.exit_code == 2, result.output
        assert f"{path}:{where}: error: {message}" in result.output
    if name == "unknown.yaml":
        assert "hint: choose one of auto, sgd" in result.output
    else:  # the command line's --optimizer overrides the file's setting
        result = invoke("puzzle", str(path), "--optimizer", "adam", "--quiet", "--output", "csv")
        assert result.exit_code == 0


def test_markup_and_control_characters_in_user_text_are_printed_literally(tmp_path):
    name = "[bold red]x[/] [link=https://e.vil]y[/link] :thumbs_up: [/]"
    (tmp_path / "[red]dir").mkdir()
    path = tmp_path / "[red]dir" / "[bold]w.yaml"
    path.write_text(f"name: '{name}\\e[31m'\nequations:\n  - x + y = 3\n  - x - y = e\n".replace("'", '"'))
    result = CliRunner().invoke(cli, ["puzzle", str(path), "--quiet"], catch_exceptions=False,
                                env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"{name}\\x1b[31m: converged" in out  # literal markup, ESC shown escaped (one backslash)
    assert "\x1b" not in out and "👍" not in out
    warning = [line for line in out.splitlines() if "warning" in line][0]
    assert warning.startswith(f"{path}:4:5: warning: 'e' is read as") and warning.count("warning:") == 1
    check = CliRunner().invoke(cli, ["check", str(path)])
    assert check.exit_code == 0
    assert f"{path}: ok — 2 equations, unknowns: x, y" in check.output
    assert f"    {path}:4:5: warning: 'e' is read as" in check.output
    assert "warning: " + str(path) not in check.output


def test_check_escapes_control_characters_in_file_names(tmp_path):
    path = tmp_path / "a\x1bb.txt"
    path.write_text("x + 1 = 2\n")
    result = CliRunner().invoke(cli, ["check", str(path)])
    assert result.exit_code == 0
    assert "\x1b" not in result.output and f"{tmp_path}/a\\x1bb.txt: ok" in result.output


def test_fit_table_prints_the_plot_path_literally(tmp_path):
    import io

    from rich.console import Console

    from gradsolve.cli.render import render_table
    from gradsolve.solve.fit import prepare_fit, run_fit
    from gradsolve.solve.loop import SolveOptions

    data = tmp_path / "line.csv"
    data.write_text("x,y\n1,2\n2,4.1\n3,5.9\n4,8.2\n")
    result = run_fit(prepare_fit(str(data), degree=1), SolveOptions())
    result.extra["plot"] = "[red]out[/] [link=https://e.vil]x[/link].png"
    result.problem = "[bold]fit[/bold]"
    buffer = io.StringIO()
    render_table(result, Console(file=buffer, highlight=False, width=200))
    text = buffer.getvalue()
    assert "plot written to [red]out[/] [link=https://e.vil]x[/link].png" in text
    assert "[bold]fit[/bold]: converged" in text


def test_error_messages_show_user_backslashes_once(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text('equations: [x = 1]\nsolver: {"st\\\\ep": 1}\nunknowns:\n  "a\\x1bb": 1\n')
    result = CliRunner().invoke(cli, ["check", str(path)])
    assert result.exit_code == 2
    assert f"{path}:2:10: error: unknown key 'st\\ep' in 'solver'" in result.output
    assert f"{path}:4:3: error: 'a\\x1bb' is not a valid unknown name" in result.output
    assert '    solver: {"st\\\\ep": 1}' in result.output  # the source line exactly as written
    assert "\x1b" not in result.output
    proc = run("minimize", "x + \x01", "--output", "json")
    assert proc.returncode == 2 and "\x01" not in proc.stderr and "    x + \\x01\n" in proc.stderr
