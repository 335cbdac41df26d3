"""Checks made while a spec is built: no unknowns, --init values, solver settings, escaping of messages."""

import numpy as np
import pytest

from gradsolve.problem import from_text, from_yaml_text
from gradsolve.problem.errors import ProblemError, escape, excerpt
from gradsolve.problem.grammar import Origin
from gradsolve.problem.settings import OPTIMIZERS, check_solver_settings, solver_settings_problems
from gradsolve.problem.spec import build_spec

# ----------------------------------------------------------------------------- no unknowns


@pytest.mark.parametrize("text, detail", [
    ("1 = 1\n", "the equation is a constant"),
    ("2 = 3\n", "the equation is a constant"),
    ("# nothing to solve\n1 = 1\n2 = 2\n", "every equation is a constant"),
    ("minimize: pi\n", "the expression to minimize is a constant"),
])
def test_text_problem_without_unknowns_is_an_error_at_its_first_expression(text, detail):
    with pytest.raises(ProblemError) as info:
        from_text(text, "p.txt")
    err = info.value
    assert err.message == f"the problem has no unknowns: {detail}"
    first = next(n for n, line in enumerate(text.splitlines(), 1) if not line.startswith("#"))
    assert (err.file, err.line) == ("p.txt", first)
    assert str(err).startswith(f"p.txt:{first}:")


def test_expression_without_unknowns_names_the_expression():
    for text in ("pi", "3", "exp(1) + 2"):
        with pytest.raises(ProblemError) as info:
            build_spec(kind="minimize", expressions=[(text, Origin("<expr>", 1, 1, text))], name="expression",
                       path="<expr>")
        assert info.value.message == "the problem has no unknowns: the expression to minimize is a constant"
        assert str(info.value).startswith("<expr>:1:1: error:")


def test_declared_but_unused_unknowns_do_not_count():
    with pytest.raises(ProblemError) as info:
        build_spec(kind="minimize", expressions=[("pi", Origin("<expr>", 1, 1, "pi"))], name="e", init={"x": 1.0})
    assert "'x' is declared but no expression uses it" in info.value.message
    with pytest.raises(ProblemError) as info:
        from_yaml_text("unknowns: {a: 1, b: 2}\nminimize: 3\n", "p.yaml")
    assert "'a', 'b' are declared but no expression uses them" in info.value.message
    assert (info.value.line, info.value.column) == (2, 11)


def test_yaml_without_unknowns_points_at_the_expression(tmp_path):
    with pytest.raises(ProblemError) as info:
        from_yaml_text("name: n\nequations:\n  - 1 = 1\n", "p.yaml")
    assert (info.value.line, info.value.column) == (3, 5) and "no unknowns" in info.value.message
    (tmp_path / "d.csv").write_text("x,y\n1,2\n2,4\n")
    with pytest.raises(ProblemError) as info:
        from_yaml_text("data: d.csv\nresiduals:\n  - y - 2*x\n", "p.yaml", base_dir=str(tmp_path))
    assert "every name used is a data column (x, y)" in info.value.message


def test_a_constant_equation_next_to_real_ones_is_only_a_warning():
    spec = from_text("1 = 1\nx = 2\n", "p.txt")
    assert spec.unknown_names == ["x"]
    assert any("involves no unknowns" in w for w in spec.warnings)


# ----------------------------------------------------------------------------- --init


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_init_values_must_be_finite_and_are_labelled_init(value):
    with pytest.raises(ProblemError) as info:
        from_text("x = 1\n", "p.txt", init={"x": value})
    assert info.value.file == "--init" and info.value.line is None
    assert "finite" in info.value.message
    assert str(info.value).startswith("--init: error:")


def test_init_outside_bounds_is_the_yaml_error_labelled_init():
    yaml_text = "unknowns:\n  x: {init: 0.5, min: 0, max: 1}\nequations:\n  - x^2 = 0.25\n"
    with pytest.raises(ProblemError) as from_file_init:
        from_yaml_text(yaml_text.replace("0.5, min", "5, min"), "p.yaml")
    with pytest.raises(ProblemError) as from_option:
        from_yaml_text(yaml_text, "p.yaml", init={"x": 5.0})
    assert from_option.value.message == from_file_init.value.message == "init of 'x' (5) is outside its bounds [0, 1]"
    assert from_file_init.value.file == "p.yaml" and from_file_init.value.line == 2
    assert from_option.value.file == "--init" and from_option.value.line is None
    assert from_yaml_text(yaml_text, "p.yaml", init={"x": 0.25}).unknowns[0].init == 0.25


def test_other_init_mistakes_are_labelled_init_not_a_fake_file():
    for init, needle in (({"1x": 1.0}, "'1x' is not a valid name"), ({"sin": 1.0}, "function name")):
        with pytest.raises(ProblemError) as info:
            from_text("x = 1\n", "p.txt", init=init)
        assert info.value.file == "--init" and needle in info.value.message
        assert "<input>" not in str(info.value)
    spec = from_text("x = 1\n", "p.txt", init={"y": 2.0})
    assert spec.warnings == ["--init: warning: unknown 'y' does not appear in any expression"]


# ----------------------------------------------------------------------------- solver settings


def test_every_optimizer_name_is_one_the_solver_can_run():
    from gradsolve.methods import FIRST_ORDER, METHODS
    from gradsolve.solve.loop import FIRST_ORDER_CLASSES

    assert tuple(OPTIMIZERS) == ("auto",) + tuple(METHODS)  # check's choices are the table's
    assert set(FIRST_ORDER_CLASSES) == set(FIRST_ORDER)  # the loop builds every first-order method in the table
    assert set(METHODS) - set(FIRST_ORDER) == {"lbfgs", "lm"}


def test_unknown_optimizer_in_yaml_has_its_location_and_the_choices():
    with pytest.raises(ProblemError) as info:
        from_yaml_text("equations: [x = 1]\nsolver:\n  optimizer: lbgfs\n", "p.yaml")
    err = info.value
    assert (err.line, err.column) == (3, 14) and err.message == "unknown optimizer 'lbgfs'"
    assert "did you mean 'lbfgs'?" in err.hint and "adam" in err.hint and "lm" in err.hint


def test_settings_the_solver_refuses_are_reported_at_the_optimizer_line():
    bounded = from_yaml_text("unknowns:\n  x: {init: 1, min: 0}\nminimize: (x - 2)^2\nsolver: {optimizer: lbfgs}\n",
                             "b.yaml")
    with pytest.raises(ProblemError) as info:
        check_solver_settings(bounded)
    assert (info.value.file, info.value.line, info.value.column) == ("b.yaml", 4, 21)
    assert "lbfgs does not support bounds (min/max on x)" in info.value.message
    check_solver_settings(bounded, "adam")  # the command line's --optimizer wins
    with pytest.raises(ProblemError) as info:
        check_solver_settings(bounded, "lbfgs")
    assert info.value.file == "--optimizer" and info.value.line is None

    loss = from_yaml_text("minimize: (x - 2)^2\nsolver:\n  optimizer: lm\n", "c.yaml")
    (issue,) = solver_settings_problems(loss)
    assert (issue.line, issue.column) == (3, 14) and "needs equations or residuals" in issue.message
    assert solver_settings_problems(loss, "auto") == []
    assert solver_settings_problems(from_text("x = 1\n", "p.txt")) == []
    assert solver_settings_problems(from_yaml_text("equations: [x = 1]\nsolver: {optimizer: LM}\n", "p.yaml")) == []


def test_refused_settings_match_what_the_solver_refuses():
    """Every (optimizer, kind, bounds) the solver refuses is refused up front, and nothing else."""
    from gradsolve.solve.options import SolveError, choose_method

    texts = {
        ("minimize", False): "minimize: (x - 2)^2\n",
        ("minimize", True): "unknowns:\n  x: {init: 1, min: 0}\nminimize: (x - 2)^2\n",
        ("equations", False): "equations: [x = 2]\n",
        ("equations", True): "unknowns:\n  x: {init: 1, min: 0}\nequations: [x = 2]\n",
    }
    for (kind, bounded), text in texts.items():
        spec = from_yaml_text(text, "p.yaml")
        for method in OPTIMIZERS:
            try:
                choose_method(method, has_residuals=kind != "minimize", smooth=True, bounded=bounded)
                refused = False
            except SolveError:
                refused = True
            assert bool(solver_settings_problems(spec, method)) == refused, (kind, bounded, method)


# ----------------------------------------------------------------------------- escaping


def test_escape_is_idempotent_and_keeps_backslashes():
    nasty = "a\\b \x1b[31m \u202e \x00"
    once = escape(nasty)
    assert once == "a\\b \\x1b[31m \\u202e \\x00"
    assert escape(once) == once
    assert repr(excerpt("st\\ep")) == "'st\\ep'"
    assert repr(excerpt("it's")) == '"it\'s"'


def test_messages_quote_user_text_with_single_backslashes():
    with pytest.raises(ProblemError) as info:
        from_yaml_text('equations: [x = 1]\nsolver: {"st\\\\ep": 1}\n', "p.yaml")
    text = str(info.value)
    assert "unknown key 'st\\ep' in 'solver'" in text
    assert "\\\\" not in text.splitlines()[0]
    with pytest.raises(ProblemError) as info:
        from_yaml_text('unknowns:\n  "a\\x1bb": 1\nequations: [x = 1]\n', "p.yaml")
    text = str(info.value)
    assert "error: 'a\\x1bb' is not a valid unknown name" in text and "\x1b" not in text
    assert '    "a\\x1bb": 1' in text  # the source line as written, not with doubled backslashes


def test_warnings_escape_control_characters_in_file_names():
    spec = from_text("x + y = e\nx - y = 1\n", "evil\x1bname.txt")
    (warning,) = spec.warnings
    assert "\x1b" not in warning and warning.startswith("evil\\x1bname.txt:1:9: warning: 'e' is read as")


def test_random_starts_unchanged_by_the_checks():
    spec = from_text("x + y = 3\n", "p.txt")
    assert [u.init for u in spec.unknowns] == np.random.default_rng(0).standard_normal(2).tolist()


# ----------------------------------------------------------------------------- unknowns that cancel


@pytest.mark.parametrize("text, message", [
    ("0*x = 1\n", "the equation is a constant after simplification (0*x is 0)"),
    ("x + 1 = x\n", "the equation is a constant after simplification (lhs - rhs is 1)"),
    ("x - x = 0*z\n", "the equation is a constant after simplification (x - x is 0, 0*z is 0)"),
    ("minimize: 0*x\n", "the expression to minimize is a constant after simplification (0*x is 0)"),
    ("minimize: x - x\n", "the expression to minimize is a constant after simplification (x - x is 0)"),
])
def test_an_expression_whose_unknowns_cancel_is_an_error_at_it(text, message):
    with pytest.raises(ProblemError) as info:
        from_text("# the problem\n" + text, "p.txt")
    err = info.value
    assert err.message == message
    assert (err.file, err.line) == ("p.txt", 2) and err.column is not None


def test_cancelling_equation_next_to_real_ones_is_still_an_error():
    with pytest.raises(ProblemError) as info:
        from_text("x + y = 3\n0*x + 0*y = 1\nx - y = 1\n", "p.txt")
    assert info.value.line == 2 and "it says 0 = 1" in info.value.hint


def test_an_unknown_that_cancels_in_some_places_only_is_kept_with_a_warning():
    spec = from_text("x + 0*y = 1\nx - x + z = 2\n", "p.txt")
    assert spec.unknown_names == ["x", "y", "z"]  # y is written, so it stays an unknown nothing determines
    assert [w for w in spec.warnings if "'y'" in w] == [
        "p.txt:1:1: warning: unknown 'y' cancels out of every expression (sympy simplifies it away), "
        "so nothing determines its value"]
    assert not any("'x'" in w or "'z'" in w for w in spec.warnings)


def test_cli_refuses_cancelled_unknowns_with_exit_2():
    from click.testing import CliRunner

    from gradsolve.cli.main import cli

    for args, stdin in ((["minimize", "0*x"], ""), (["minimize", "x - x"], ""), (["puzzle", "-"], "0*x = 1\n"),
                        (["check", "-"], "0*x = 1\n")):
        run = CliRunner().invoke(cli, args, input=stdin)
        assert run.exit_code == 2, (args, run.output)
        assert "constant after simplification" in run.output and "internal error" not in run.output


# ----------------------------------------------------------------------------- names of functions


def test_a_data_column_named_like_a_function_cannot_be_used(tmp_path):
    (tmp_path / "d.csv").write_text("x,sin\n1,2\n2,3\n")
    with pytest.raises(ProblemError) as info:
        from_yaml_text("data: d.csv\nresiduals: [sin - a*x]\n", "p.yaml", base_dir=str(tmp_path))
    err = info.value
    assert (err.line, err.column) == (2, 13) and "'sin' is a function" in err.message
    assert err.hint == "the data column 'sin' has the name of a function and cannot be used; rename the column"
    spec = from_yaml_text("data: d.csv\nresiduals: [sin(x) - a*x]\n", "p.yaml", base_dir=str(tmp_path))
    assert set(spec.data) == {"x"}  # sin(x) is the function; the column is not used
    with pytest.raises(ProblemError, match="is a function name and cannot be an unknown"):
        from_text("x = 1", init={"sin": 1.0})
