"""Problem files: YAML and text formats, locations, keys, data paths, the data reader."""

import io
import os
import subprocess
import sys

import numpy as np
import pytest
import sympy
import yaml

from gradsolve.problem import from_file, from_text, from_yaml_text, read_columns
from gradsolve.problem.errors import ProblemError
from gradsolve.problem.spec import MAX_UNKNOWNS

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))


def sym(name):
    return sympy.Symbol(name, real=True)


@pytest.fixture(params=["libyaml", "pure-python"])
def yaml_impl(request, monkeypatch):
    """Run YAML tests with libyaml's loader (when installed) and with PyYAML's own."""
    if request.param == "pure-python":
        monkeypatch.delattr(yaml, "CSafeLoader", raising=False)
    elif not getattr(yaml, "__with_libyaml__", False):
        pytest.skip("libyaml not installed")
    return request.param


# ----------------------------------------------------------------------------- YAML


def test_yaml_error_in_third_equation_has_its_line_and_column(yaml_impl):
    text = (
        "# comment\n"
        "name: demo\n"
        "equations:\n"
        "  - x + y = 1\n"
        "  - x - y = 0\n"
        "  - 'x * sinn(y) = 2'\n"
        "  - \"2x = 3\"\n"
        "  - y = 2*x ^ 2 + cos(x)\n"
    )
    with pytest.raises(ProblemError) as info:
        from_yaml_text(text, "demo.yaml")
    err = info.value
    assert len(err.issues) == 2  # every mistake is listed
    first, second = err.issues
    assert (first.line, first.column) == (6, 10)
    assert "sinn" in first.message and first.hint == "did you mean 'sin'?"
    assert text.splitlines()[5][first.column - 1 :].startswith("sinn")
    assert (second.line, second.column) == (7, 7)
    assert second.hint == "write 2*x"
    formatted = str(err)
    assert formatted.startswith("demo.yaml:6:10: error: unknown function 'sinn'")
    assert "demo.yaml:7:7: error: implicit multiplication is not allowed" in formatted
    assert formatted.rstrip().endswith("2 errors")


def test_yaml_plain_scalar_columns(yaml_impl):
    text = "equations:\n  - a = 1\n  -    b = c.d\n"
    with pytest.raises(ProblemError) as info:
        from_yaml_text(text, "p.yaml")
    assert (info.value.line, info.value.column) == (3, 13)
    assert "attribute access" in info.value.message


def test_yaml_block_scalar_minimize(yaml_impl):
    text = "minimize: |\n  (1 - x)^2 + y..2\n"
    with pytest.raises(ProblemError) as info:
        from_yaml_text(text, "p.yaml")
    assert info.value.line == 2 and info.value.column == 16


def test_unknown_keys_get_hints(yaml_impl):
    text = (
        "name: t\n"
        "unknows:\n  x: 1\n"
        "equations: [x = 1]\n"
        "solver:\n  optimiser: adam\n  lr: 0.1\n  step: 10\n"
    )
    with pytest.raises(ProblemError) as info:
        from_yaml_text(text, "t.yaml")
    issues = info.value.issues
    messages = [(i.line, i.message, i.hint) for i in issues]
    assert (2, "unknown key 'unknows' in the problem", "did you mean 'unknowns'?") in messages
    assert (6, "unknown key 'optimiser' in 'solver'", "did you mean 'optimizer'?") in messages
    assert (8, "unknown key 'step' in 'solver'", "did you mean 'steps'?") in messages
    with pytest.raises(ProblemError) as info:
        from_yaml_text("equations: [x = 1]\nunknowns:\n  x: {init: 1, mni: 0}\n", "t.yaml")
    assert info.value.hint == "did you mean 'min'?"


def test_yaml_full_problem(yaml_impl):
    text = (
        "name: full\n"
        "description: everything at once\n"
        "unknowns:\n"
        "  lambda: 1e-3\n"
        "  e: {init: pi/4, min: 0, max: 2}\n"
        "  z:\n"
        "equations:\n"
        "  - lambda * e = 2 + w\n"
        "  - w^2 == e + z + pi\n"
        "solver: {optimizer: Adam, lr: 1e-2, steps: 100, tol: 0, seed: 7}\n"
    )
    spec = from_yaml_text(text, "full.yaml")
    assert spec.name == "full" and spec.kind == "equations"
    assert spec.unknown_names == ["lambda", "e", "z", "w"]
    lam, e, z, w = (sym(n) for n in ("lambda", "e", "z", "w"))
    assert spec.residuals == [lam * e - 2 - w, w**2 - e - z - sympy.pi]
    assert spec.unknowns[0].init == 1e-3
    assert spec.unknowns[1].init == pytest.approx(np.pi / 4) and spec.unknowns[1].min == 0 and spec.unknowns[1].max == 2
    assert spec.solver == {"optimizer": "adam", "lr": 0.01, "steps": 100, "tol": 0.0, "seed": 7}
    # z (declared without value) and w (undeclared) start from default_rng(seed)
    draws = np.random.default_rng(7).standard_normal(2)
    assert [spec.unknowns[2].init, spec.unknowns[3].init] == draws.tolist()
    assert not spec.unknowns[3].declared and spec.unknowns[2].declared
    assert spec.warnings == []  # 'e' is declared, so no warning


def test_yaml_value_errors(yaml_impl):
    cases = {
        "equations: [x = 1]\nsolver: {lr: -1}\n": "'lr' must be > 0",
        "equations: [x = 1]\nsolver: {steps: 1.5}\n": "whole number",
        "equations: [x = 1]\nsolver: {lr: yes}\n": "must be a number",
        "equations: [x = 1]\nsolver: {lr: x + 1}\n": "not an expression",
        "equations: [x = 1]\nunknowns: {x: {init: 5, min: 0, max: 1}}\n": "outside its bounds",
        "equations: [x = 1]\nunknowns: {x: {min: 2, max: 1}}\n": "larger than its max",
        "equations: [x = 1]\nunknowns: {sin: 1}\n": "function name",
        "equations: [x = 1]\nunknowns: {'a b': 1}\n": "not a valid unknown name",
        "equations: [x = 1]\nminimize: x^2\n": "cannot be used together",
        "name: nothing\n": "needs one of",
        "equations: {x: 1}\n": "must be a list",
        "equations: [x = 1]\nequations: [x = 2]\n": "appears twice",
        "equations: [x = 1]\nsolver: {optimizer: 'rm -rf'}\n": "optimizer name",
        "equations: [x = 1]\nunknowns: 3\n": "'unknowns' must map",
        "equations: [~]\n": "must be an expression",
        "equations: []\n": "no equations",
    }
    for text, message in cases.items():
        with pytest.raises(ProblemError) as info:
            from_yaml_text(text, "v.yaml")
        assert any(message in issue.message for issue in info.value.issues), (text, str(info.value))


def test_yaml_list_of_unknowns_and_residuals_and_loss(yaml_impl):
    spec = from_yaml_text("unknowns: [b, a]\nresiduals:\n  - a - 1\n  - b - 2\n")
    assert spec.kind == "residuals" and spec.unknown_names == ["b", "a"]
    spec = from_yaml_text("loss: (x - 3)^2\n")
    assert spec.kind == "minimize" and spec.loss == (sym("x") - 3) ** 2 and spec.residuals == []


def test_max_unknowns():
    text = " + ".join(f"x{i}" for i in range(MAX_UNKNOWNS + 1)) + " = 0"
    with pytest.raises(ProblemError, match="too many unknowns"):
        from_text(text)


def test_e_warning_and_unused_unknown_warning():
    spec = from_text("a*e^x = 2\n")
    assert spec.unknown_names == ["a", "x"]
    assert any("Euler" in w for w in spec.warnings)
    spec = from_text("a*e^x = 2\n", init={"e": 1.0})
    assert spec.unknown_names == ["e", "a", "x"] and not spec.warnings
    spec = from_yaml_text("unknowns: {x: 1, unused: 2}\nequations: [x = 1]\n", "w.yaml")
    assert any("'unused' does not appear" in w for w in spec.warnings)


@pytest.mark.parametrize("name", ["nan", "NaN", "NAN", "inf", "Inf", "INF", "infinity", "Infinity"])
def test_a_name_that_reads_as_a_number_elsewhere_warns_where_it_is_written(name):
    # `x = nan` made 'nan' an unknown and said converged (rank 1 of 2) without a word
    spec = from_text(f"x + 1 = {name}\n", "p.txt")
    assert set(spec.unknown_names) == {"x", name} and spec.name == "p"  # the problem keeps its own name
    assert [w for w in spec.warnings if f"{name!r} is read as an unknown, not as a number" in w] == \
        [w for w in spec.warnings if w.startswith("p.txt:1:9: warning:")]
    assert len([w for w in spec.warnings if "not as a number" in w]) == 1
    declared = from_text(f"x + 1 = {name}\n", "p.txt", init={name: 2.0})  # declared: the user means a name
    assert not any("not as a number" in w for w in declared.warnings)


# ----------------------------------------------------------------------------- text


def test_text_problem_comments_and_minimize():
    spec = from_text("# circle and line\n\nx^2 + y^2 = 25   # circle\n  x + y = 7\n", "c.txt")
    assert spec.kind == "equations" and spec.name == "c"
    assert spec.residuals == [sym("x") ** 2 + sym("y") ** 2 - 25, sym("x") + sym("y") - 7]
    spec = from_text("# rosenbrock\nminimize: (1 - x)^2 + 100*(y - x^2)^2\n")
    assert spec.kind == "minimize" and spec.unknown_names == ["x", "y"]
    with pytest.raises(ProblemError, match="not both"):
        from_text("x = 1\nminimize: x^2\n")
    with pytest.raises(ProblemError) as info:
        from_text("x = 1\nx + 1\n", "t.txt")
    assert info.value.line == 2 and "no '='" in info.value.message and "minimize" in info.value.hint
    with pytest.raises(ProblemError, match="no equations"):
        from_text("# nothing\n\n")


def test_text_errors_all_listed_with_lines_and_columns():
    with pytest.raises(ProblemError) as info:
        from_text("x = 1\ny = 2z\nz = sinn(x)\nminimise: x\n", "m.txt")
    lines = [(i.line, i.column) for i in info.value.issues]
    assert lines == [(2, 6), (3, 5), (4, 9)]


def test_init_override_and_seed():
    spec = from_text("x + y = 1\n", init={"y": 4.5}, seed=3)
    assert spec.unknown_names == ["y", "x"]
    assert spec.unknowns[0].init == 4.5
    assert spec.unknowns[1].init == np.random.default_rng(3).standard_normal(1)[0]
    assert from_text("x = 1").unknowns[0].init == np.random.default_rng(0).standard_normal(1)[0]


def test_stdin():
    spec = from_file("-", stream=io.StringIO("x + y = 7\nx - y = 1\n"))
    assert spec.path == "<stdin>" and spec.kind == "equations" and len(spec.residuals) == 2
    spec = from_file("-", stream=io.StringIO("unknowns: {x: 2}\nminimize: x^2\n"))
    assert spec.unknowns[0].init == 2.0
    spec = from_file("-", stream=io.BytesIO(b"minimize: x^2\n"))
    assert spec.kind == "minimize"


def test_missing_file():
    with pytest.raises(ProblemError, match="problem file not found"):
        from_file("/nonexistent/problem.yaml")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this platform")
def test_a_fifo_a_directory_or_a_device_is_refused_before_it_is_opened(tmp_path):
    # opening a FIFO waits for a writer forever: `mkfifo p; gradsolve puzzle p` and `check p` hung
    fifo = tmp_path / "p.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ProblemError, match=r"problem file is a FIFO \(named pipe\), not a regular file"):
        from_file(str(fifo))
    with pytest.raises(ProblemError, match="problem file is a directory"):
        from_file(str(tmp_path))
    if os.path.exists("/dev/zero"):
        with pytest.raises(ProblemError, match="problem file is a character device"):
            from_file("/dev/zero")
    proc = subprocess.run([sys.executable, "-m", "gradsolve", "check", str(fifo)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "FIFO" in proc.stderr and "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- data


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_data_columns_become_vectors(tmp_path):
    _write(tmp_path / "d.csv", "x,y,note_col\n1,3,0\n2,5,0\n3,7.5,0\n")
    problem = _write(tmp_path / "p.yaml", "data: d.csv\nequations:\n  - y = a*x + b\n")
    spec = from_file(str(problem))
    assert spec.unknown_names == ["a", "b"]
    assert set(spec.data) == {"x", "y"}  # only columns the expressions use
    np.testing.assert_array_equal(spec.data["y"], [3.0, 5.0, 7.5])
    assert spec.n_rows == 3
    with pytest.raises(ProblemError, match="vector"):
        from_file(str(_write(tmp_path / "m.yaml", "data: d.csv\nminimize: (y - a*x)^2\n")))


def test_data_column_shadows_constant_and_clashes_with_unknown(tmp_path):
    _write(tmp_path / "d.csv", "e,y\n1,2\n")
    spec = from_file(str(_write(tmp_path / "p.yaml", "data: d.csv\nequations: [y = k*e]\n")))
    assert spec.unknown_names == ["k"] and "e" in spec.data and not spec.warnings
    with pytest.raises(ProblemError, match="both an unknown and a data column"):
        from_file(str(_write(tmp_path / "q.yaml", "data: d.csv\nunknowns: {y: 1}\nequations: [y = e]\n")))


def test_data_paths_must_stay_inside(tmp_path):
    inside = tmp_path / "proj"
    inside.mkdir()
    (inside / "sub").mkdir()
    _write(tmp_path / "secret.csv", "x,y\n1,2\n")
    _write(inside / "sub" / "ok.csv", "x,y\n1,2\n")
    os.symlink(tmp_path / "secret.csv", inside / "link.csv")
    os.symlink(tmp_path, inside / "linkdir")
    cases = {
        str(tmp_path / "secret.csv"): "absolute",
        "../secret.csv": "climbs out",
        "sub/../../secret.csv": "climbs out",
        "link.csv": "symbolic link",
        "linkdir/secret.csv": "symbolic link",
    }
    for data, message in cases.items():
        problem = _write(inside / "p.yaml", f"data: '{data}'\nequations: [y = a*x]\n")
        with pytest.raises(ProblemError) as info:
            from_file(str(problem))
        assert message in info.value.message, info.value
        assert info.value.line == 1 and "--allow-data-outside" in info.value.hint
        spec = from_file(str(problem), allow_data_outside=True)
        np.testing.assert_array_equal(spec.data["y"], [2.0])
    spec = from_file(str(_write(inside / "p.yaml", "data: sub/ok.csv\nequations: [y = a*x]\n")))
    assert spec.n_rows == 1
    # relative to the problem file, not to the working directory
    spec = from_file(os.path.relpath(inside / "p.yaml"))
    assert spec.n_rows == 1


def test_data_reader_errors(tmp_path):
    cases = {
        "x,y\n1,2\n3,abc\n": ("row 2, column 'y': 'abc' is not a number", 3),
        "x,y\n1,2\n\n3,\n": ("row 2, column 'y': missing value", 4),
        "x,y\n1,nan\n": ("'nan' is not a number", 2),
        "x,y\n1,1e999\n": ("too large", 2),
        "x,y\n1,2\n1,2,3\n": ("Expected 2 columns", 3),
        "x,x\n1,2\n": ("appears twice", 1),
        "x,\n1,2\n": ("empty column name", 1),
        "x,y\n1,\x1b[31m\n": ("is not a number", 2),
    }
    for text, (message, line) in cases.items():
        path = _write(tmp_path / "d.csv", text)
        with pytest.raises(ProblemError) as info:
            read_columns(str(path))
        assert message in info.value.message, str(info.value)
        assert info.value.line == line
        assert "\x1b" not in str(info.value)
    with pytest.raises(ProblemError, match="not found"):
        read_columns(str(tmp_path / "missing.csv"))
    with pytest.raises(ProblemError, match="no column"):
        read_columns(str(_write(tmp_path / "d.csv", "x,y\n1,2\n")), columns=["z"])


def test_data_reader_values(tmp_path):
    path = _write(tmp_path / "d.csv", "x , y\n1, 2.5\n-3e2,  .5\n")
    columns = read_columns(str(path))
    assert list(columns) == ["x", "y"]
    assert columns["x"].dtype == np.float64
    np.testing.assert_array_equal(columns["x"], [1.0, -300.0])
    np.testing.assert_array_equal(columns["y"], [2.5, 0.5])
    assert list(read_columns(str(path), columns=["y"])) == ["y"]


def test_polynomial_csv_is_reproducible(tmp_path, problems_dir):
    out = tmp_path / "poly.csv"
    subprocess.run([sys.executable, os.path.join(REPO, "scripts", "make_polynomial_data.py"), str(out)], check=True,
                   capture_output=True)
    with open(os.path.join(problems_dir, "polynomial.csv"), encoding="utf-8") as fh:
        assert out.read_text(encoding="utf-8") == fh.read()
    columns = read_columns(str(out))
    x = 5.0 * np.random.default_rng(0).standard_normal(20)
    np.testing.assert_array_equal(columns["x"], x)  # repr round-trips exactly
    np.testing.assert_array_equal(columns["y"], x**2 + 2 * x + 3)


# ----------------------------------------------------------------------------- data errors: location, paths, excerpts


def test_missing_data_file_points_at_the_data_value_with_the_path_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "nf.yaml", "data: nothere.csv\nresiduals: [y - a*x]\n")
    with pytest.raises(ProblemError) as info:
        from_file("nf.yaml")
    err = info.value
    assert (err.file, err.line, err.column) == ("nf.yaml", 1, 7)
    assert err.message == "data file not found: 'nothere.csv'"
    text = str(err)
    assert str(tmp_path) not in text
    assert text.splitlines()[1:3] == ["    data: nothere.csv", "          ^"]


def test_errors_inside_a_data_file_name_it_relative_to_the_working_folder(tmp_path, monkeypatch):
    (tmp_path / "proj" / "sub").mkdir(parents=True)
    _write(tmp_path / "proj" / "sub" / "cell.csv", "x,y\n1,2\n3,zz\n")
    _write(tmp_path / "proj" / "p.yaml", "data: sub/cell.csv\nresiduals: [y - a*x]\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ProblemError) as info:
        from_file(os.path.join("proj", "p.yaml"))
    err = info.value
    assert (err.file, err.line) == (os.path.join("proj", "sub", "cell.csv"), 3)
    assert str(tmp_path) not in str(err) and "'zz' is not a number" in err.message


def test_data_file_errors_quote_only_a_short_excerpt(tmp_path):
    from gradsolve.problem.errors import EXCERPT_CHARS

    secret = "root:x:0:0:root:/root:/bin/bash-" + "s3cr3t" * 30
    _write(tmp_path / "d.csv", f"a,b\n1,2,3,{secret}\n")
    _write(tmp_path / "p.yaml", "data: d.csv\nresiduals: [b - a*x]\n")
    for allow in (False, True):
        with pytest.raises(ProblemError) as info:
            from_file(str(tmp_path / "p.yaml"), allow_data_outside=allow)
        err = info.value
        assert err.line == 2 and "Expected 2 columns, got 4" in err.message
        assert "s3cr3t" not in str(err) and "root:x" not in str(err)
        quoted = err.message.split("cannot read the data file: ", 1)[1]
        assert len(quoted) <= EXCERPT_CHARS
        assert err.file == str(tmp_path / "d.csv")  # the problem file's folder, as the problem file was named


# ----------------------------------------------------------------------------- YAML numbers


@pytest.mark.parametrize("value, message, hint", [
    ("012", "leading zeros are not allowed in numbers: '012'", "write 12 (YAML 1.1 would read 012 as the octal number 10)"),
    ("1:30", "must be a decimal number, got '1:30' (YAML 1.1 would read it as the base-60 number 90)", "1.5"),
    ("-1:30:00", "must be a decimal number", "-1.5"),
    ("1_000", "digit separators", "write 1000"),
    ("0x1F", "only decimal numbers", None),
    (".inf", "must be a finite number", None),
    ("-.inf", "must be a finite number", None),
    ("yes", "must be a number, got 'yes'", "YAML reads yes as true"),
    ("no", "must be a number, got 'no'", "YAML reads no as false"),
    ("on", "must be a number, got 'on'", None),
    ("off", "must be a number, got 'off'", None),
    ("'012'", "leading zeros", None),
])
def test_yaml_numbers_follow_the_grammar_not_yaml_1_1(yaml_impl, value, message, hint):
    text = f"unknowns: {{a: 1, b: {value}}}\nequations: [a + b = 1]\n"
    with pytest.raises(ProblemError) as info:
        from_yaml_text(text, "n.yaml")
    err = info.value
    assert len(err.issues) == 1 and message in err.message, str(err)
    assert (err.line, err.column) == (1, 21 + (1 if value.startswith("'") else 0))
    if hint is not None:
        assert hint in err.hint


def test_yaml_numbers_in_every_numeric_position(yaml_impl):
    text = ("unknowns: {a: {init: 1.5, min: 012, max: 2:00}}\nequations: [a = 1]\n"
            "solver: {steps: 010, seed: 1:00, lr: 1e-3, tol: off}\n")
    with pytest.raises(ProblemError) as info:
        from_yaml_text(text, "n.yaml")
    assert [(i.line, i.column) for i in info.value.issues] == [(1, 32), (1, 42), (3, 17), (3, 28), (3, 49)]
    spec = from_yaml_text("name: 012\nunknowns: {a: 1e3, b: -2, c: +0.5, d: pi/4}\nequations: [a + b + c + d = 1]\n"
                          "solver: {steps: 1e3, seed: 7}\n", "ok.yaml")
    assert spec.name == "012"
    assert [u.init for u in spec.unknowns] == [1000.0, -2.0, 0.5, pytest.approx(0.7853981633974483)]
    assert spec.solver["steps"] == 1000 and spec.solver["seed"] == 7


# ----------------------------------------------------------------------------- text and YAML structure errors


def test_text_mixing_equations_and_minimize_lists_every_problem():
    with pytest.raises(ProblemError) as info:
        from_text("sinn(x)+y = 2\n2x = 3\nminimize: x\n", "m.txt")
    issues = info.value.issues
    assert [(i.line, i.column) for i in issues] == [(1, 1), (2, 2), (3, 1)]
    assert "unknown function 'sinn'" in issues[0].message
    assert "implicit multiplication" in issues[1].message
    assert "not both" in issues[2].message
    with pytest.raises(ProblemError) as info:
        from_text("minimize: x\nminimize: sinn(y)\n", "mm.txt")
    assert [(i.line, i.column) for i in info.value.issues] == [(2, 1), (2, 11)]


def test_yaml_control_character_has_its_line_and_column(yaml_impl):
    with pytest.raises(ProblemError) as info:
        from_yaml_text("name: n\nequations: [x\0 = 1]\n", "n.yaml")
    err = info.value
    assert (err.line, err.column) == (2, 14)
    assert err.message == "invalid YAML: control character U+0000 is not allowed"
    lines = str(err).splitlines()
    assert lines[1] == "    equations: [x\\x00 = 1]" and lines[2] == "    " + " " * 13 + "^"
    assert "position" not in str(err)
