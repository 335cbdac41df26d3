"""The expression grammar: precedence, names, constants, functions, error positions."""

import math
import os

import pytest
import sympy

from gradsolve.problem.constants import CONSTANTS
from gradsolve.problem.errors import ProblemError
from gradsolve.problem.functions import FUNCTIONS
from gradsolve.problem.grammar import Origin, parse_equation, parse_expression
from gradsolve.problem.limits import MAX_DEPTH

DOCS = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "docs", "problem-language.md")


def sym(name):
    return sympy.Symbol(name, real=True)


def value(text, **env):
    expr = parse_expression(text, shadow=set(env)).expr
    return float(expr.subs({sym(k): v for k, v in env.items()}))


def error(text, **kw):
    with pytest.raises(ProblemError) as info:
        parse_expression(text, **kw)
    return info.value


@pytest.mark.parametrize(
    "text, x, expected",
    [
        ("2*x^2 + 1", 3, 19),
        ("-x^2", 3, -9),
        ("2^3^2", 0, 512),
        ("(2^3)^2", 0, 64),
        ("-2^2", 0, -4),
        ("x^-1", 4, 0.25),
        ("2**3**2", 0, 512),
        ("--x", 3, 3),
        ("-+-x", 3, 3),
        ("2 * -x", 3, -6),
        ("1 - -x", 3, 4),
        ("x/2/3", 12, 2),
        ("x - 1 - 1", 3, 1),
        ("1e-3 * x", 3, 0.003),
        (".5 + 2.", 0, 2.5),
        ("1E2", 0, 100),
    ],
)
def test_precedence_and_numbers(text, x, expected):
    assert value(text, x=x) == pytest.approx(expected, rel=1e-15)


def test_caret_is_power_at_token_level():
    expr = parse_expression("2*x^2 + 1").expr
    assert expr == 2 * sym("x") ** 2 + 1
    assert expr.subs(sym("x"), 3) == 19


def test_constants_and_shadowing():
    assert parse_expression("pi").expr == sympy.pi
    assert float(parse_expression("pi").expr) == pytest.approx(math.pi, rel=1e-15)
    assert parse_expression("e").expr == sympy.E
    parsed = parse_expression("e + pi", shadow={"e"})
    assert parsed.expr == sym("e") + sympy.pi
    assert parsed.names == {"e"} and parsed.constants == {"pi"}
    assert parse_expression("pi", shadow={"pi"}).expr == sym("pi")
    assert set(CONSTANTS) == {"pi", "e"}


@pytest.mark.parametrize("name", ["lambda", "E", "I", "S", "N", "Q", "None", "True", "if", "beta", "gamma", "O", "zeta"])
def test_any_identifier_is_a_plain_symbol(name):
    parsed = parse_expression(f"{name} + 1")
    assert parsed.expr == sym(name) + 1
    assert parsed.names == {name}
    assert parsed.expr.free_symbols == {sym(name)}


def test_equations():
    for text in ("x^2 = 4", "x^2 == 4", "x^2=4"):
        parsed = parse_equation(text)
        assert parsed.expr == sym("x") ** 2 - 4
        assert parsed.lhs == sym("x") ** 2 and parsed.rhs == 4
    with pytest.raises(ProblemError, match="no '='"):
        parse_equation("x + 1")
    with pytest.raises(ProblemError, match="more than one '='"):
        parse_equation("x = 1 = 2")
    with pytest.raises(ProblemError, match="left-hand side"):
        parse_equation("= 2")
    with pytest.raises(ProblemError, match="right-hand side"):
        parse_equation("x =")
    with pytest.raises(ProblemError, match="inside parentheses"):
        parse_equation("max(x=1, 2) = 1")


@pytest.mark.parametrize(
    "text, hint",
    [("2x", "write 2*x"), ("2(x+1)", "write 2*(...)"), ("x y", "write x*y"), ("(x+1)(x-1)", "write (...)*(...)"),
     ("3 pi", "write 3*pi"), ("x 2", "write x*2")],
)
def test_implicit_multiplication_is_refused_with_hint(text, hint):
    err = error(text)
    assert "implicit multiplication" in err.message
    assert err.hint == hint


def test_unknown_function_hint_and_caret():
    err = error("y + sinn(x)", origin=Origin("f.txt", 3, 1, "y + sinn(x)"))
    assert err.message == "unknown function 'sinn'"
    assert err.hint == "did you mean 'sin'?"
    assert (err.file, err.line, err.column) == ("f.txt", 3, 5)
    text = str(err)
    assert text.splitlines()[0] == "f.txt:3:5: error: unknown function 'sinn'"
    source, caret = text.splitlines()[1:3]
    assert caret.index("^") == source.index("sinn")
    assert "hint: did you mean 'sin'?" in text


def test_caret_column_inside_a_longer_line():
    # the expression starts at column 7 of its line (as in a YAML list item)
    line = "  - a*b + c.d = 1"
    err = error("a*b + c.d", origin=Origin("p.yaml", 9, 5, line))
    assert (err.line, err.column) == (9, 12)
    assert line[err.column - 1] == "."
    source, caret = str(err).splitlines()[1:3]
    assert caret.index("^") == source.index(".")


@pytest.mark.parametrize(
    "text, column",
    [("x + 2y", 6), ("x + * y", 5), ("a.b", 2), ("x + 'a'", 5), ("exp(x, 2)", 1), ("x +", 4), ("(x", 1), ("x)", 2)],
)
def test_error_columns(text, column):
    assert error(text).column == column


def test_function_table_builds_and_matches_sympy():
    x, y = sym("x"), sym("y")
    checks = {
        "exp(x)": sympy.exp(x), "log(x)": sympy.log(x), "ln(x)": sympy.log(x),
        "log(x, 2)": sympy.log(x) / sympy.log(2), "log10(x)": sympy.log(x) / sympy.log(10),
        "log2(x)": sympy.log(x) / sympy.log(2), "sqrt(x)": sympy.sqrt(x), "abs(x)": sympy.Abs(x),
        "sign(x)": sympy.sign(x), "sin(x)": sympy.sin(x), "cos(x)": sympy.cos(x), "tan(x)": sympy.tan(x),
        "asin(x)": sympy.asin(x), "arcsin(x)": sympy.asin(x), "acos(x)": sympy.acos(x), "arccos(x)": sympy.acos(x),
        "atan(x)": sympy.atan(x), "arctan(x)": sympy.atan(x), "atan2(y, x)": sympy.atan2(y, x),
        "arctan2(y, x)": sympy.atan2(y, x), "sinh(x)": sympy.sinh(x), "cosh(x)": sympy.cosh(x),
        "tanh(x)": sympy.tanh(x), "asinh(x)": sympy.asinh(x), "acosh(x)": sympy.acosh(x),
        "atanh(x)": sympy.atanh(x),
        "pow(x, y)": x**y, "hypot(x, y)": sympy.sqrt(x**2 + y**2),
    }
    for text, expected in checks.items():
        assert parse_expression(text).expr == expected, text
    assert float(parse_expression("cbrt(-8)").expr) == -2.0
    assert float(parse_expression("min(3, 1, 2) + max(4, 7.5)").expr) == 8.5
    mx = parse_expression("max(x, y, 1)").expr
    assert str(mx) == "max(x, y, 1)" and mx.free_symbols == {x, y}
    assert float(mx.subs({x: 3, y: 2}).evalf()) == 3.0
    assert sympy.diff(mx, x).subs({x: 3, y: 2}) == 1  # Heaviside derivative
    assert parse_expression("min(x)").expr == x
    assert float(parse_expression("sigmoid(0)").expr) == 0.5
    assert float(parse_expression("log1p(1)").expr) == pytest.approx(math.log(2), rel=1e-15)
    assert float(parse_expression("expm1(1)").expr) == pytest.approx(math.e - 1, rel=1e-15)
    assert float(parse_expression("sigmoid(2)").expr) == pytest.approx(1 / (1 + math.exp(-2)), rel=1e-15)


def test_every_function_is_documented():
    with open(DOCS, encoding="utf-8") as fh:
        docs = fh.read()
    for name in FUNCTIONS:
        assert f"`{name}" in docs, name


@pytest.mark.parametrize(
    "text, message",
    [
        ("atan2(y)", "atan2() takes 2 arguments, got 1"),
        ("sin", "'sin' is a function"),
        ("x(2)", "unknown function 'x'"),
        ("1/0", "division by zero"),
        ("x/(1-1)", "division by zero"),
        ("log(0)", "undefined"),
        ("sqrt(-1)", "not a real number"),
        ("asin(2)", "not a real number"),
        ("(-8)^(1/3)", "not a real number"),
        ("exp(1000)", "too large"),
        ("10^400", "too large"),
        ("10^500", "out of range"),
        ("2^-5000", "out of range"),
        ("x ** 100000", "exponent is too large"),
        ("1_000", "separators"),
        ("0x1f", "decimal"),
        ("1j", "complex"),
        ("07", "leading zeros"),
        ("x // 2", "floor division"),
        ("x % 2", "remainder"),
        ("x < 2", "comparisons"),
        ("x; y", "';'"),
        ("", "empty"),
        ("   ", "empty"),
        ("()", "empty parentheses"),
        ("x, y", "tuples"),
        ("x += 1", "assignment operator"),
        ("__class__", "reserved"),
        ("max(*x)", "unpacking"),
    ],
)
def test_refusals(text, message):
    err = error(text)
    assert message in err.message


def test_limits():
    assert "too long" in error("x+" * 5001 + "x").message
    assert "nested too deeply" in error("(" * (MAX_DEPTH + 1) + "x" + ")" * (MAX_DEPTH + 1)).message
    assert parse_expression("(" * MAX_DEPTH + "x" + ")" * MAX_DEPTH).expr == sym("x")
    assert "too many digits" in error("1" * 101).message
    assert "too many signs" in error("-" * 200 + "x").message
    assert parse_expression("sin(" * 60 + "x" + ")" * 60).names == {"x"}
    assert "nested too deeply" in error("x^" * 150 + "x").message


def test_long_flat_expressions_are_fine():
    # a flat sum near the length limit is not "deep": the walker flattens it
    text = "+".join(f"x{i % 50}" for i in range(2400))
    assert len(text) < 10_000
    parsed = parse_expression(text)
    assert len(parsed.names) == 50



@pytest.mark.parametrize("text, shown", [
    ("x*1e308*10", "1.000e309"),
    ("1e308*10*x", "1.000e309"),
    ("-1e308*x*10", "-1.000e309"),
    ("x^2*1e200*1e200", "1.000e400"),
    ("x/1e-308/1e-10", "1.000e318"),
    ("x*10^308*10", "1.000e309"),  # exact integers too
    ("(1e200*x)^2", "1.000e400"),
    ("2*(1e308*x + 1)", "2.000e308"),  # sympy distributes the 2 into the sum
    ("x + 1e308 + 1e308", "2.000e308"),
])
def test_folded_constants_that_overflow_are_refused_with_location(text, shown):
    with pytest.raises(ProblemError) as info:
        parse_expression("y + " + text, Origin("p.txt", 3, 1, "y + " + text))
    err = info.value
    assert err.message.startswith(f"the constant {shown} here is too large for double precision")
    assert (err.file, err.line) == ("p.txt", 3) and err.column is not None and err.column >= 1
    with pytest.raises(ProblemError):
        parse_equation(f"{text} = 1")


def test_large_but_finite_folded_constants_are_fine():
    assert parse_expression("x*1e308").expr == sympy.Float(1e308) * sym("x")
    assert value("x*1e200*1e200/1e300", x=2.0) == pytest.approx(2e100)
    assert value("x*1.7e308 - x*1.7e308", x=3.0) == 0.0


# ----------------------------------------------------------------------------- undefined constants

HIDDEN_ZERO = "(sqrt(2) + sqrt(3) - sqrt(5 + 2*sqrt(6)))"  # exactly 0: (sqrt(2) + sqrt(3))^2 = 5 + 2*sqrt(6)


@pytest.mark.parametrize("text, message, column", [
    ("x*tan(pi/2) + x^2", "undefined", 3),
    ("y + cos(x)/tan(pi/2 + pi)", "undefined", 12),
    (f"{HIDDEN_ZERO}^(-1)*x", "division by zero", 1),
    (f"x/{HIDDEN_ZERO}", "division by zero", 4),
    (f"log({HIDDEN_ZERO})*x", "undefined", 1),
    (f"x + 1/{HIDDEN_ZERO}", "division by zero", 8),
    ("log(tan(2), x)", "not a real number", 1),  # sympy turns log(tan(2)) into log(-tan(2)) + I*pi
])
def test_undefined_constants_are_refused_with_location(text, message, column):
    with pytest.raises(ProblemError) as info:
        parse_expression(text, Origin("p.txt", 4, 1, text))
    err = info.value
    assert message in err.message
    assert (err.file, err.line, err.column) == ("p.txt", 4, column)


def test_defined_constants_near_trouble_are_kept():
    assert value(f"x + {HIDDEN_ZERO}", x=2.0) == pytest.approx(2.0, abs=1e-30)
    ramanujan = parse_expression("x/(exp(pi*sqrt(163)) - 640320^3 - 744)").expr
    assert float(sympy.N(ramanujan.subs(sym("x"), 1), 30)) == pytest.approx(-1.3334624075128953e12, rel=1e-12)
    near_pole = parse_expression("x*tan(pi/2 - 10^-20)").expr.subs(sym("x"), 1)
    assert float(sympy.N(near_pole, 30)) == pytest.approx(1e20, rel=1e-12)
    assert value("x*tan(1.5707963)", x=1.0) == pytest.approx(math.tan(1.5707963), rel=1e-9)


# ----------------------------------------------------------------------------- min/max derivatives, hints


def test_max_of_repeated_arguments_is_the_argument():
    y = sym("y")
    assert parse_expression("max(y, y, y)").expr == y
    assert sympy.diff(parse_expression("max(y, y, y)").expr, y) == 1
    assert parse_expression("min(x, y, x)").expr == parse_expression("min(x, y)").expr


def test_symbolic_extremum_derivative_follows_the_engine_tie_rule():
    import functools

    import gradsolve as gs

    x, y, z = sym("x"), sym("y"), sym("z")
    for text, reduce_with in (("max(x, y, z)", gs.maximum), ("min(x, y, z)", gs.minimum)):
        expr = parse_expression(text).expr
        for point in ((1.0, 1.0, 1.0), (1.0, 2.0, 2.0), (2.0, 2.0, 1.0), (3.0, 1.0, 2.0)):
            leaves = [gs.tensor(v, requires_grad=True) for v in point]
            functools.reduce(reduce_with, leaves).backward()
            env = dict(zip((x, y, z), map(sympy.Integer, map(int, point))))
            symbolic = [float(sympy.diff(expr, s).subs(env)) for s in (x, y, z)]
            assert symbolic == [leaf.grad.item() for leaf in leaves], (text, point)
            assert sum(symbolic) == 1


@pytest.mark.parametrize("text, hint", [
    ("SIN(x)", "did you mean 'sin'?"),
    ("Exp(x) + 1", "did you mean 'exp'?"),
    ("ATAN2(y, x)", "did you mean 'atan2'?"),
])
def test_unknown_function_hint_ignores_case(text, hint):
    err = error(text)
    assert err.message.startswith("unknown function") and err.hint.startswith(hint)


@pytest.mark.parametrize("text", ["floor(x)", "round(x) + 1", "heaviside(x - 1)"])
def test_an_unknown_function_says_so_and_where_the_functions_are(text):
    err = error(text)
    name = text.split("(")[0]
    assert err.message == f"unknown function '{name}'"
    assert err.hint == "the functions are listed in docs/problem-language.md (Functions)"
    assert "*(" not in err.hint  # not 'write floor*(...)'
    with open(DOCS) as fh:
        assert "### Functions" in fh.read()


@pytest.mark.parametrize("text, shadow", [("a(x + 1)", ()), ("k(x + 1)", ()), ("rate(x + 1)", ("rate",))])
def test_a_short_or_declared_name_before_a_parenthesis_suggests_a_product(text, shadow):
    err = error(text, shadow=frozenset(shadow))
    name = text.split("(")[0]
    assert err.message == f"unknown function '{name}'"
    assert err.hint == f"to multiply, write {name}*(...); the functions are listed in docs/problem-language.md " \
                       "(Functions)"


@pytest.mark.parametrize("file, hint", [
    ("-y", "-y takes a single expression: remove the ';'"),
    ("--model", "--model takes a single expression: remove the ';'"),
    ("<expr>", "minimize takes a single expression: remove the ';'"),
    ("problem.txt", "write one equation per line"),
    ("<stdin>", "write one equation per line"),
])
def test_a_semicolon_hint_fits_where_the_expression_came_from(file, hint):
    text = "y; rm -rf /"
    err = error(text, origin=Origin(file, 1, 1, text))
    assert err.message == "';' is not allowed" and err.hint == hint and err.column == 2


@pytest.mark.parametrize("text, origin, column", [
    ("(x-e)^2", Origin("<expr>", 1, 1, "(x-e)^2"), 4),
    ("x*2 = e + 1", Origin("p.yaml", 2, 5, "  - x*2 = e + 1"), 11),
    ("exp(x) - e", Origin("p.txt", 3, 1, "exp(x) - e"), 10),
    ("(x-e)^2", Origin("p.yaml", 1, 11, "minimize: >", exact=False), 11),  # folded: the expression's start
])
def test_the_bare_e_warning_points_at_the_e(text, origin, column):
    from gradsolve.problem.spec import build_spec

    kind = "equations" if "=" in text else "minimize"
    spec = build_spec(kind=kind, expressions=[(text, origin)], name="t", path=origin.file)
    (warning,) = spec.warnings
    assert warning.startswith(f"{origin.file}:{origin.line}:{column}: warning: 'e' is read as Euler's number")
