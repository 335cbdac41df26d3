"""Lowering: the compiled engine program agrees with sympy (value and derivative) to 1e-12."""

import glob
import os
import zlib

import numpy as np
import pytest
import sympy

import gradsolve as gs
from gradsolve.problem import from_file, from_text, lower
from gradsolve.problem.errors import ProblemError
from gradsolve.problem.lowering import LOWERING, compile_program

PROBLEMS = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "problems")
EXAMPLES = sorted(
    p for p in glob.glob(os.path.join(PROBLEMS, "*")) if p.endswith((".yaml", ".yml", ".txt"))
)
REL = 1e-12


def sympy_loss(spec):
    """The loss as a sympy expression in the unknowns, data substituted row by row."""
    if spec.kind == "minimize":
        return spec.loss, [spec.loss]
    residuals = []
    for r in spec.residuals:
        used = [name for name in spec.data if spec.symbol(name) in r.free_symbols]
        if not used:
            residuals.append(r)
            continue
        for row in range(spec.n_rows):
            residuals.append(r.subs({spec.symbol(n): sympy.Float(float(spec.data[n][row]), 30) for n in used}))
    return sympy.Add(*[r**2 for r in residuals]), residuals


def close(actual, expected, scale=1.0):
    return abs(actual - expected) <= REL * max(abs(expected), scale)


def check_against_sympy(spec, lowered, point):
    loss_expr, residual_exprs = sympy_loss(spec)
    env = {s: sympy.Float(float(v), 30) for s, v in zip(spec.unknown_symbols, point)}
    lowered.set_values(point)
    lowered.zero_grad()
    loss = lowered.loss()
    loss.backward()
    expected = float(loss_expr.subs(env).evalf(30))
    assert close(loss.item(), expected), (loss.item(), expected)
    grads = [float(sympy.diff(loss_expr, s).subs(env).evalf(30)) for s in spec.unknown_symbols]
    scale = max(1.0, max(abs(g) for g in grads))
    for p, g in zip(lowered.params, grads):
        assert close(p.grad.item(), g, scale), (p.grad.item(), g)
    if spec.kind != "minimize":
        r = lowered.residuals().numpy()
        want = [float(e.subs(env).evalf(30)) for e in residual_exprs]
        assert r.shape == (len(want),) == (lowered.n_residuals,)
        for a, b in zip(r, want):
            assert close(a, b, max(1.0, max(abs(w) for w in want)))


def test_examples_exist():
    names = {os.path.basename(p) for p in EXAMPLES}
    assert {"four-unknowns.yaml", "abs-difference.yaml", "circuit.yaml", "intersection.txt", "rosenbrock.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_example_lowers_and_matches_sympy(path):
    spec = from_file(path)
    lowered = lower(spec)
    assert lowered.unknowns == spec.unknown_names
    assert all(p.requires_grad and p.ndim == 0 and p.dtype == gs.float64 for p in lowered.params)
    np.testing.assert_array_equal(lowered.values(), spec.initial_values())
    check_against_sympy(spec, lowered, spec.initial_values())
    rng = np.random.default_rng(zlib.crc32(os.path.basename(path).encode()))
    for _ in range(3):
        check_against_sympy(spec, lowered, 2.0 * rng.standard_normal(len(spec.unknowns)))


FUNCTION_CASES = [
    "exp(x) + log(y) + ln(x*y)", "log(y, 2) + log10(x) + log2(y)", "log1p(x) + expm1(y)",
    "sqrt(x + y) + cbrt(x - y) + cbrt(y)", "abs(x - y) + sign(x - y) * x", "sin(x) * cos(y) + tan(x)",
    "asin(x) + acos(x*y) + atan(y) + arctan2(y, x) + atan2(x, -y)", "sinh(x) + cosh(y) + tanh(x*y)",
    "asinh(x) + acosh(1 + y) + atanh(x - 0.1)", "sigmoid(x - y) + sigmoid(-3*y)",
    "min(x, y, 0.5) + max(x, y, 0.1, x*y)", "pow(x, y) + hypot(x, y) + 2^x + x^y",
    "x^-1 + x^-2 + y^0.5 + y^-0.5 + y^1.5 + x^(1/3) + (x + y)^7",
    "x / (y * (1 + x)) - 3 / x / y + pi*x - e*y", "-(x - y)^2 / 2",
]


@pytest.mark.parametrize("text", FUNCTION_CASES)
def test_every_function_lowers_like_sympy(text):
    spec = from_text(f"minimize: {text}", init={"x": 0.3, "y": 0.7})
    lowered = lower(spec)
    check_against_sympy(spec, lowered, [0.3, 0.7])
    check_against_sympy(spec, lowered, [0.45, 0.2])


def test_table_covers_every_grammar_function():
    from gradsolve.problem.functions import FUNCTIONS

    for name in FUNCTIONS:
        args = ", ".join(["x", "y", "x"][: FUNCTIONS[name].min_args])
        if name in ("acosh", "arccosh"):
            args = "1 + y"
        spec = from_text(f"minimize: {name}({args}) + 0.5", init={"x": 0.3, "y": 0.7})
        lower(spec).loss()  # no "cannot lower" error
    assert len(LOWERING) >= 25


def test_evaluation_never_walks_sympy_again(monkeypatch):
    spec = from_file(os.path.join(PROBLEMS, "rosenbrock.yaml"))
    lowered = lower(spec)

    def forbidden(self):
        raise AssertionError("sympy was walked after lowering")

    monkeypatch.setattr(sympy.Basic, "args", property(forbidden))
    monkeypatch.setattr(sympy.Basic, "func", property(forbidden))
    lowered.set_values([1.0, 1.0])
    assert lowered.loss().item() == 0.0
    lowered.set_values([0.0, 0.0])
    loss = lowered.loss()
    loss.backward()
    assert loss.item() == 1.0
    assert [p.grad.item() for p in lowered.params] == [-2.0, 0.0]


def test_shared_subexpressions_are_computed_once():
    spec = from_text("minimize: sin(x + y)^2 + sin(x + y) + exp(sin(x + y))")
    lowered = lower(spec)
    # x + y, sin, ^2, exp, final sum: 5 instructions
    assert len(lowered.program) == 5


def test_constants_are_folded():
    spec = from_text("minimize: x * log(10) + sqrt(2) * pi")
    lowered = lower(spec)
    assert len(lowered.program) == 2  # the product and the sum; log(10), sqrt(2)*pi folded
    lowered.set_values([2.0])
    assert lowered.loss().item() == pytest.approx(2 * np.log(10) + np.sqrt(2) * np.pi, rel=1e-15)


def test_data_residuals_are_vectors():
    spec = from_file(os.path.join(PROBLEMS, "polynomial.yaml"))
    lowered = lower(spec)
    assert lowered.data["x"].shape == (20,)
    lowered.set_values([1.0, 2.0, 3.0])
    r = lowered.residuals()
    assert r.shape == (20,) and np.max(np.abs(r.numpy())) < 1e-12
    assert lowered.loss().item() < 1e-24


def test_mixed_scalar_and_vector_residuals(tmp_path):
    (tmp_path / "d.csv").write_text("t,v\n0,1\n1,3\n2,5\n")
    (tmp_path / "p.yaml").write_text("data: d.csv\nequations:\n  - v = a*t + b\n  - a = 2\n")
    spec = from_file(str(tmp_path / "p.yaml"))
    lowered = lower(spec)
    lowered.set_values([2.0, 1.0])
    r = lowered.residuals()
    assert r.shape == (4,) == (lowered.n_residuals,)
    np.testing.assert_array_equal(r.numpy(), np.zeros(4))
    check_against_sympy(spec, lowered, [0.3, -1.2])


def test_float32():
    spec = from_file(os.path.join(PROBLEMS, "rosenbrock.yaml"))
    lowered = lower(spec, dtype="float32")
    assert all(p.dtype == gs.float32 for p in lowered.params)
    loss = lowered.loss()
    assert loss.dtype == gs.float32
    assert loss.item() == pytest.approx(24.2, rel=1e-6)
    loss.backward()
    assert lowered.params[0].grad.item() == pytest.approx(-215.6, rel=1e-5)
    assert lower(spec, dtype=gs.float32, device="cpu").device == "cpu"
    with pytest.raises(ValueError):
        lower(spec, dtype="int64")


def test_minimize_has_no_residuals_and_set_values_checks_length():
    lowered = lower(from_file(os.path.join(PROBLEMS, "abs-difference.yaml")))
    with pytest.raises(ValueError):
        lowered.residuals()
    with pytest.raises(ValueError):
        lowered.set_values([1.0])
    assert lowered.loss().item() == 4.0


def test_compile_program_directly():
    x = sympy.Symbol("x", real=True)
    t = gs.tensor(3.0, requires_grad=True)
    program = compile_program([2 * x**2 + 1, -x**2], {x: t})
    a, b = program.run()
    assert (a.item(), b.item()) == (19.0, -9.0)


# ----------------------------------------------------------------------------- re/im, located failures, folding


@pytest.mark.parametrize("text", ["abs(exp(asin(y))) + x", "cbrt(2^asin(y)) + x", "abs(3^(x*y)) + abs(exp(acos(y)))"])
def test_real_parts_sympy_introduces_are_lowered(text):
    spec = from_text(f"minimize: {text}", init={"x": 0.3, "y": 0.5})
    assert spec.loss.has(sympy.re)  # sympy rewrites abs(b^z) as b^re(z)
    lowered = lower(spec)
    for point in ([0.3, 0.5], [-0.7, -0.2]):
        check_by_central_differences(spec, lowered, point)


def check_by_central_differences(spec, lowered, point):
    """Value from sympy at 30 digits; gradient by central differences at 30 digits (sympy.diff
    cannot differentiate sign(2^asin(y)), which cbrt builds)."""
    symbols = spec.unknown_symbols
    env = {s: sympy.Float(v, 30) for s, v in zip(symbols, point)}
    lowered.set_values(point)
    lowered.zero_grad()
    loss = lowered.loss()
    loss.backward()
    assert close(loss.item(), float(spec.loss.evalf(30, subs=env)))
    h = sympy.Float("1e-12", 30)
    for s, p in zip(symbols, lowered.params):
        up = spec.loss.evalf(30, subs={**env, s: env[s] + h})
        down = spec.loss.evalf(30, subs={**env, s: env[s] - h})
        assert close(p.grad.item(), float((up - down) / (2 * h))), s


def test_im_is_zero_for_real_values():
    x = sympy.Symbol("x", real=True)
    t = gs.tensor(0.4, requires_grad=True)
    (value,) = compile_program([sympy.im(sympy.asin(x)) + sympy.re(sympy.asin(x))], {x: t}).run()
    assert value.item() == pytest.approx(np.arcsin(0.4), rel=1e-15)


def test_a_lowering_failure_points_at_its_expression(monkeypatch):
    import importlib

    lower_module = importlib.import_module("gradsolve.problem.lowering")  # the attribute is the function
    spec = from_text("x + y = 1\n\n  exp(x) - y = 2\n", "p.txt")
    table = dict(lower_module.LOWERING)
    del table[sympy.exp]
    monkeypatch.setattr(lower_module, "LOWERING", table)
    with pytest.raises(ProblemError) as info:
        lower(spec)
    err = info.value
    assert (err.file, err.line, err.column) == ("p.txt", 3, 1)
    assert "cannot lower exp" in err.message and str(err).startswith("p.txt:3:1: error: cannot lower exp")
    assert err.hint and "bug" in err.hint


def test_constants_are_folded_from_their_exact_value():
    # exp(pi*sqrt(163)) is 640320^3 + 744 - 7.4992740280181e-13: folding step by step in
    # float64 loses every digit of the difference (-0.0021 instead of -1.33e12).
    spec = from_text("minimize: x/(exp(pi*sqrt(163)) - 640320^3 - 744)")
    lowered = lower(spec)
    lowered.set_values([1.0])
    exact = 1 / (sympy.exp(sympy.pi * sympy.sqrt(163)) - 640320**3 - 744)
    assert lowered.loss().item() == pytest.approx(float(sympy.N(exact, 30)), rel=1e-14)
    assert lowered.loss().item() == pytest.approx(-1.3334624075128953e12, rel=1e-14)
    assert len(lowered.program) == 1  # the division; the whole constant is one leaf
    # constant terms of a sum with unknowns are gathered and folded together, not added in float64
    spec = from_text("minimize: x + exp(pi*sqrt(163)) - 640320^3 - 744")
    lowered = lower(spec)
    lowered.set_values([1.0])
    assert lowered.loss().item() == pytest.approx(1 - 7.4992740280181e-13, abs=1e-16)
    assert len(lowered.program) == 1


def test_an_expression_the_table_cannot_lower_is_refused_when_the_spec_is_built(monkeypatch):
    import importlib

    lower_module = importlib.import_module("gradsolve.problem.lowering")
    table = dict(lower_module.LOWERING)
    del table[sympy.re]
    monkeypatch.setattr(lower_module, "LOWERING", table)
    with pytest.raises(ProblemError) as info:
        from_text("x + y = 1\nabs(exp(asin(y))) = 2\n", "p.txt")  # sympy writes exp(re(asin(y)))
    err = info.value
    assert (err.file, err.line, err.column) == ("p.txt", 2, 1) and err.message.startswith("cannot lower re")
