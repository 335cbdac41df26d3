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
