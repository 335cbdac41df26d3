"""Tracing: traced loss, gradient and Jacobian equal the engine's; traced and eager solves follow one trajectory."""
from __future__ import annotations

import functools
import io
import math
import re
import tokenize
from pathlib import Path

import numpy as np
import pytest

import gradsolve as gs
from gradsolve.methods import FIRST_ORDER
from gradsolve.ops.derivatives import DERIVATIVES
from gradsolve.problem.files import from_file
from gradsolve.problem.grammar import Origin
from gradsolve.problem.lowering import lower
from gradsolve.problem.spec import build_spec
from gradsolve.solve.solver import merged_options, solve_spec
from gradsolve.solve.trace import Trace, TraceUnavailable, trace_problem
from gradsolve.solve.trace.codegen import check_source, float_literal
from gradsolve.solve.trace.tape import UNARY

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p.name for p in (ROOT / "problems").iterdir() if p.suffix in (".yaml", ".txt"))
TOL = dict(rtol=1e-12, atol=1e-12)

EVERY_FUNCTION = ("exp(x/4) + log(y) + log1p(y) + expm1(x/5) + sqrt(y) + sin(x) + cos(y) + tan(x/3) + asin(x/9)"
                  " + acos(y/9) + atan(x) + atan2(x, y) + sinh(x/3) + cosh(y/4) + tanh(x) + asinh(y) + acosh(y + 2)"
                  " + atanh(x/9) + sigmoid(x) + abs(x - y) + sign(x) + min(x, y, 1) + max(x*y, 2) + x**3 + y**2.5"
                  " + 1/sqrt(y) + x*y/(1 + y**2) + 2**x + y**x + 1/x")


def spec_of(text, kind="minimize", **init):
    return build_spec(kind=kind, expressions=[(text, Origin("<test>", 1, 1, text))], name="t", path="<test>",
                      init=init, seed=0)


def eager_loss_grad(lowered, x):
    lowered.set_values(x)
    lowered.zero_grad()
    loss = lowered.loss()
    loss.backward()
    return float(loss.item()), np.array([0.0 if p.grad is None else float(p.grad.item()) for p in lowered.params])


def solve(path, trace, **overrides):
    spec = from_file(str(ROOT / "problems" / path))
    labels = []
    result = solve_spec(spec, merged_options(spec, {"trace": trace, **overrides}),
                        on_start=lambda label, names: labels.append(label))
    return result, labels[0]


def trajectory(path, trace, **overrides):
    """The solve's result, how it evaluated, and its progress rows, one per step: [step, loss, *parameters]."""
    spec = from_file(str(ROOT / "problems" / path))
    labels, rows = [], []
    result = solve_spec(spec, merged_options(spec, {"trace": trace, **overrides}), every=1,
                        on_start=lambda label, names: labels.append(label), on_progress=rows.append)
    return result, labels[0], np.array([[row.step, row.loss, *row.values.values()] for row in rows])


@pytest.mark.parametrize("path", EXAMPLES)
def test_every_example_traced_and_eager_trajectories_agree_for_100_steps(path):
    lm = {"optimizer": "lm"} if path == "four-unknowns.yaml" else {}  # auto solves a linear system directly
    traced, how, traced_rows = trajectory(path, True, steps=100, **lm)
    eager, eager_how, eager_rows = trajectory(path, False, steps=100, **lm)
    assert "traced" in how and eager_how.endswith("eager (--no-trace)")
    assert traced.steps == eager.steps and traced.status == eager.status
    np.testing.assert_allclose(traced.loss_history, eager.loss_history, **TOL)
    # the parameters step by step, not only where the runs end
    assert traced_rows.shape == eager_rows.shape and len(traced_rows) == traced.steps
    np.testing.assert_array_equal(traced_rows[:, 0], np.arange(1, traced.steps + 1))
    np.testing.assert_allclose(traced_rows[:, 2:], eager_rows[:, 2:], **TOL)
    np.testing.assert_allclose(traced_rows[:, 1], eager_rows[:, 1], **TOL)
    np.testing.assert_allclose(list(traced.parameters.values()), list(eager.parameters.values()), **TOL)


@pytest.mark.parametrize("path", ["four-unknowns.yaml", "rosenbrock.yaml"])
def test_first_order_parameter_trajectories_agree_step_by_step(path):
    # 100 steps that all run (no stopping test can fire): adam on the float trace against the engine
    traced, _, traced_rows = trajectory(path, True, steps=100, optimizer="adam", tol=0.0, atol=0.0)
    eager, _, eager_rows = trajectory(path, False, steps=100, optimizer="adam", tol=0.0, atol=0.0)
    assert traced.steps == eager.steps == 100 and traced_rows.shape == (100, eager_rows.shape[1])
    np.testing.assert_allclose(traced_rows, eager_rows, **TOL)


@pytest.mark.parametrize("method", FIRST_ORDER + ("lbfgs",))
def test_traced_optimizers_follow_the_gs_optim_trajectory(method):
    for path in ("four-unknowns.yaml", "polynomial.yaml"):
        traced, _ = solve(path, True, optimizer=method, steps=100)
        eager, _ = solve(path, False, optimizer=method, steps=100)
        assert traced.steps == eager.steps
        np.testing.assert_allclose(traced.loss_history, eager.loss_history, **TOL)
        np.testing.assert_allclose(list(traced.parameters.values()), list(eager.parameters.values()), **TOL)


def test_bounds_are_honoured_on_the_traced_path():
    traced, _ = solve("circuit.yaml", True, optimizer="adam", steps=300)
    eager, _ = solve("circuit.yaml", False, optimizer="adam", steps=300)
    np.testing.assert_allclose(traced.loss_history, eager.loss_history, **TOL)
    assert traced.parameters["B"] >= 0


def test_every_function_loss_and_gradient_match_the_engine():
    lowered = lower(spec_of(EVERY_FUNCTION, x=0.7, y=1.3))
    trace = trace_problem(lowered)
    assert trace.flavour == "float"
    rng = np.random.default_rng(1)
    points = np.column_stack([rng.uniform(0.2, 2.0, 20), rng.uniform(0.2, 2.0, 20)])
    points[0] = [1.0, 1.0]  # ties of min/max and abs share the gradient
    batch_loss, batch_grad = trace.batch_loss_grad(points)
    for k, x in enumerate(points):
        want_loss, want_grad = eager_loss_grad(lowered, x)
        loss, grad = trace.loss_grad(x)
        np.testing.assert_allclose([loss, *grad], [want_loss, *want_grad], **TOL)
        np.testing.assert_allclose([batch_loss[k], *batch_grad[k]], [want_loss, *want_grad], **TOL)


def test_every_traced_primitive_has_one_declared_derivative():
    recorded = {"add", "mul", "div", "pow_scalar", "pow", "maximum", "minimum", "atan2", *UNARY}
    assert recorded <= set(DERIVATIVES)


def test_the_engine_and_the_trace_read_the_same_declaration(monkeypatch):
    # change one rule: the engine's backward and the generated code both follow it
    monkeypatch.setitem(DERIVATIVES, "sin", (lambda M, g, x, out: g * 3.0 * M.cos(x),))
    want = 3.0 * math.cos(0.3)
    x = gs.tensor(0.3, requires_grad=True)
    gs.sin(x).backward()
    trace = trace_problem(lower(spec_of("sin(x)", x=0.3)), verify=False)
    got = [x.grad.item(), *trace.loss_grad([0.3])[1], trace.batch_loss_grad(np.array([[0.3]]))[1][0, 0]]
    np.testing.assert_allclose(got, [want] * 3, **TOL)


def test_residuals_and_jacobian_match_the_engine():
    for path in ("intersection.txt", "four-unknowns.yaml", "circuit.yaml", "polynomial.yaml"):
        lowered = lower(from_file(str(ROOT / "problems" / path)))
        trace = trace_problem(lowered)
        x = lowered.values() + 0.3
        lowered.set_values(x)
        jac = gs.autograd.functional.jacobian(lowered.residuals, lowered.params)
        want_J = np.stack([j.numpy().reshape(-1) for j in jac], axis=1)
        with gs.no_grad():
            want_r = lowered.residuals().numpy()
        r, J = trace.residuals_jacobian(x)
        np.testing.assert_allclose(r, want_r, **TOL)
        np.testing.assert_allclose(J, want_J, **TOL)
        R, JJ = trace.batch_residuals_jacobian(np.stack([x, x]))
        np.testing.assert_allclose(JJ[1], want_J, **TOL)
        np.testing.assert_allclose(R[1], want_r, **TOL)


def test_math_domain_errors_take_numpy_semantics_like_the_engine():
    lowered = lower(spec_of("log(x) + sqrt(y) + 1/x", x=1.0, y=1.0))
    trace = trace_problem(lowered)
    for x in ([0.0, 1.0], [-1.0, -1.0], [1e-320, 4.0]):
        with np.errstate(all="ignore"):
            want_loss, want_grad = eager_loss_grad(lowered, x)
        loss, grad = trace.loss_grad(x)
        np.testing.assert_allclose([loss, *grad], [want_loss, *want_grad], equal_nan=True, **TOL)


def test_float32_problems_trace_as_numpy_and_match():
    spec = from_file(str(ROOT / "problems" / "intersection.txt"))
    traced = solve_spec(spec, merged_options(spec, {"dtype": "float32", "optimizer": "adam", "steps": 50}))
    eager = solve_spec(spec, merged_options(spec, {"dtype": "float32", "optimizer": "adam", "steps": 50,
                                                   "trace": False}))
    np.testing.assert_allclose(traced.loss_history, eager.loss_history, rtol=1e-6)
    assert Trace(lower(spec, dtype="float32")).flavour == "array"


def test_an_operation_without_a_trace_rule_falls_back_to_eager_and_says_why():
    spec = spec_of("(x - 2)**2", x=0.0)
    lowered = lower(spec)
    function, operands = lowered.program.code[0]
    lowered.program.code[0] = (lambda *a: function(*a), operands)
    with pytest.raises(TraceUnavailable, match="no trace rule"):
        trace_problem(lowered)

    def unknown_op(*args):  # an engine function outside the allowlist
        return functools.reduce(lambda a, b: a - b, args)

    def broken_lower(spec, dtype=None, device="cpu"):
        lowered = lower(spec, dtype=dtype, device=device)
        fn, ops = lowered.program.code[0]
        lowered.program.code[0] = (unknown_op, ops) if len(ops) > 1 else (lambda a: fn(a), ops)
        return lowered

    import gradsolve.solve.solver as solver

    original = solver.lower
    solver.lower = broken_lower
    try:
        labels = []
        result = solve_spec(spec, merged_options(spec, {"optimizer": "adam", "steps": 20}),
                            on_start=lambda label, names: labels.append(label))
    finally:
        solver.lower = original
    assert "eager: cannot trace (no trace rule for the operation" in labels[0]
    assert result.steps == 20


@pytest.mark.parametrize("value", [-math.inf, math.nan])
def test_non_finite_constants_are_bound_by_name_not_written_as_source(value):
    # In float32 a constant beyond 3.4e38 folds to -inf at lowering (constants fold from their exact
    # value, so no expression of the grammar yields a NaN constant: that one is put in by hand): the
    # generated code refers to it by a name bound in its namespace; repr() would write "-inf" or "nan",
    # names that do not exist there (and that check_source refuses).
    lowered = lower(spec_of("(x - 2)**2 + max(x, 1e39 - 2e39)", x=0.5), dtype="float32")
    if value != -math.inf:
        slot = next(i for i, leaf in enumerate(lowered.program.leaves)
                    if not leaf.requires_grad and float(leaf.item()) == -math.inf)
        lowered.program.leaves[slot] = gs.tensor(value, dtype=gs.float32)
    constants = [float(leaf.item()) for leaf in lowered.program.leaves if not leaf.requires_grad]
    assert any(c == value or (c != c and value != value) for c in constants)
    trace = trace_problem(lowered)  # agrees with the engine at the start
    names = {token.string for token in tokenize.generate_tokens(io.StringIO(trace.array_source).readline)
             if token.type == tokenize.NAME}
    assert not names & {"inf", "nan", "infinity", "float", "math"}
    bound = {name: v for name, v in trace._array_loss_grad.__globals__.items() if re.fullmatch(r"c\d+", name)}
    assert len(bound) == 1 and set(bound) <= names
    (v,) = bound.values()
    assert v == value or (v != v and value != value)
    x = np.array([0.5, 3.0])
    for k, xk in enumerate(x):
        want_loss, want_grad = eager_loss_grad(lowered, [xk])
        loss, grad = trace.batch_loss_grad(x.reshape(-1, 1))
        np.testing.assert_allclose([loss[k], grad[k, 0]], [want_loss, *want_grad], rtol=1e-6, equal_nan=True)


def test_non_finite_constants_in_float_code_are_bound_by_name():
    # float64 problems cannot hold one (the problem language refuses), so put -inf and NaN into a lowered program
    lowered = lower(spec_of("(x - 2)**2 + max(x, -5) + min(y, 7)", x=0.5, y=1.0))
    leaves = lowered.program.leaves
    (i,) = [k for k, leaf in enumerate(leaves) if not leaf.requires_grad and float(leaf.item()) == -5.0]
    (j,) = [k for k, leaf in enumerate(leaves) if not leaf.requires_grad and float(leaf.item()) == 7.0]
    leaves[i] = gs.tensor(-math.inf, dtype=gs.float64)
    leaves[j] = gs.tensor(math.nan, dtype=gs.float64)
    trace = trace_problem(lowered)
    assert trace.flavour == "float"
    for source in (trace.float_source, trace.array_source):
        assert f"c{i}" in source and f"c{j}" in source and "inf" not in source and "nan" not in source
    for x in ([0.5, 1.0], [3.0, -2.0]):
        want_loss, want_grad = eager_loss_grad(lowered, x)
        loss, grad = trace.loss_grad(x)
        np.testing.assert_allclose([loss, *grad], [want_loss, *want_grad], equal_nan=True, **TOL)
    with pytest.raises(ValueError):
        float_literal(math.inf)


def host(array):
    """A NumPy copy of an array of any backend (NumPy, CuPy, Array API strict)."""
    if isinstance(array, np.ndarray):
        return array
    return array.get() if hasattr(array, "get") else np.from_dlpack(array)


DEVICE_TOL = dict(rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_array_code_runs_on_the_device_the_problem_was_lowered_on(device, dtype):
    # The same generated text, bound to the device's namespace: arrays in and out on the device, data kept
    # there, values as the cpu's (bit for bit on the strict backend, which wraps NumPy)
    specs = [from_file(str(ROOT / "problems" / path)) for path in EXAMPLES] + [spec_of(EVERY_FUNCTION, x=0.7, y=1.3)]
    tol = DEVICE_TOL if dtype == "float64" else dict(rtol=1e-5, atol=1e-6)
    for spec in specs:
        cpu = trace_problem(lower(spec, dtype=dtype))
        lowered = lower(spec, dtype=dtype, device=device)
        on_device = trace_problem(lowered)
        assert on_device.flavour == cpu.flavour  # float64 without data: floats on the host for single points
        if device != "cpu":
            assert on_device.batch_label == f"traced: array code on {device}"
            assert on_device.label == (on_device.batch_label if cpu.flavour == "array" else
                                       f"traced: straight-line Python floats on the host (a scalar problem; "
                                       f"batches run on {device})")
        X = np.random.default_rng(4).uniform(0.3, 1.9, (7, cpu.n_params))
        loss, G = on_device.batch_loss_grad(X)
        assert type(loss) is type(lowered.params[0]._data) and type(G) is type(loss)
        want_loss, want_G = cpu.batch_loss_grad(X)
        np.testing.assert_allclose(host(loss), want_loss, **tol)
        np.testing.assert_allclose(host(G), want_G, **tol)
        if cpu.has_jacobian:
            R, J = on_device.batch_residuals_jacobian(X)
            want_R, want_J = cpu.batch_residuals_jacobian(X)
            np.testing.assert_allclose(host(R), want_R, **tol)
            np.testing.assert_allclose(host(J), want_J, **tol)
            r, j = on_device.residuals_jacobian(X[0])
            assert isinstance(r, np.ndarray) and isinstance(j, np.ndarray)
            np.testing.assert_allclose(j, want_J[0], **tol)
        value, grad = on_device.loss_grad(X[0])
        assert isinstance(value, float) and all(isinstance(g, float) for g in grad)
        np.testing.assert_allclose([value, *grad], [want_loss[0], *want_G[0]], **tol)


@pytest.mark.parametrize("overrides", [{}, {"optimizer": "adam", "steps": 200}, {"optimizer": "lbfgs"},
                                       {"starts": 8}, {"starts": 8, "optimizer": "adam", "steps": 200}])
def test_the_solver_can_trace_on_a_device(device, overrides, monkeypatch):
    # solver.make_trace returns no trace for a device other than the cpu; this is the solve once that check
    # is gone (here: make_trace is told the device is the cpu, while the problem is lowered on `device`)
    import gradsolve.solve.solver as solver

    paths = ("intersection.txt", "polynomial.yaml")
    specs = [from_file(str(ROOT / "problems" / path)) for path in paths]
    wants = [solve_spec(spec, merged_options(spec, dict(overrides))) for spec in specs]  # traced on the cpu
    original = solver.make_trace
    monkeypatch.setattr(solver, "make_trace", lambda lowered, method, options, _device:
                        original(lowered, method, options, "cpu"))
    for spec, want in zip(specs, wants):
        labels = []
        got = solve_spec(spec, merged_options(spec, {**overrides, "device": device}),
                         on_start=lambda label, names: labels.append(label))
        # array code on the device for batches and data; a scalar problem's single points are floats on the host
        on_device = ("starts" in overrides and overrides.get("optimizer") == "adam") or spec.data
        assert ("traced: array code on" in labels[0]) == (device != "cpu" and bool(on_device))
        assert "traced" in labels[0] and "eager" not in labels[0]
        assert got.status == want.status and got.steps == want.steps and got.device == device
        np.testing.assert_allclose(list(got.parameters.values()), list(want.parameters.values()), rtol=1e-9,
                                   atol=1e-12)
        if "starts" in overrides:
            assert [s["starts"] for s in got.extra["solutions"]] == [s["starts"] for s in want.extra["solutions"]]


def test_generated_code_admits_only_allowlisted_names():
    check_source("def _loss_grad(x0):\n    v1 = _m.exp(x0) * 2.5\n    return (v1,)\n")
    for bad in ("__import__('os')", "x0.__class__", "open(x0)", "'text'"):
        with pytest.raises(TraceUnavailable):
            check_source(f"def _loss_grad(x0):\n    return {bad}\n")
    lowered = lower(from_file(str(ROOT / "problems" / "four-unknowns.yaml")))
    source = Trace(lowered).float_source
    assert "exec" not in source and "import" not in source


def test_a_trace_that_disagrees_with_the_engine_is_refused(monkeypatch):
    lowered = lower(from_file(str(ROOT / "problems" / "intersection.txt")))
    monkeypatch.setattr(Trace, "loss_grad", lambda self, x: (1.0, [0.0, 0.0]))
    with pytest.raises(TraceUnavailable, match="differs"):
        trace_problem(lowered)


def test_cli_no_trace_and_progress_say_how_the_graph_is_evaluated():
    from click.testing import CliRunner

    from gradsolve.cli.main import cli

    runner = CliRunner()
    out = runner.invoke(cli, ["puzzle", str(ROOT / "problems/intersection.txt"), "--progress", "plain",
                              "--output", "json"])
    assert out.exit_code == 0, out.output
    assert "solving with lm — traced: straight-line Python floats" in out.output
    out = runner.invoke(cli, ["puzzle", str(ROOT / "problems/intersection.txt"), "--no-trace", "--progress",
                              "plain", "--output", "json"])
    assert out.exit_code == 0, out.output
    assert "solving with lm — eager (--no-trace)" in out.output
    assert math.isclose(float(out.output.split('"loss": ')[1].split(",")[0]) + 1.0, 1.0)
