"""Tracing: traced loss, gradient and Jacobian equal the engine's; traced and eager solves follow one trajectory."""
from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pytest

import gradsolve as gs
from gradsolve.problem.files import from_file
from gradsolve.problem.grammar import Origin
from gradsolve.problem.lower import lower
from gradsolve.problem.spec import build_spec
from gradsolve.solve import trace as trace_module
from gradsolve.solve.loop import FIRST_ORDER
from gradsolve.solve.solver import merged_options, solve_spec
from gradsolve.solve.trace import Trace, TraceUnavailable, trace_problem

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


@pytest.mark.parametrize("path", EXAMPLES)
def test_every_example_traced_and_eager_trajectories_agree_for_100_steps(path):
    traced, how = solve(path, True, steps=100)
    eager, eager_how = solve(path, False, steps=100)
    assert "traced" in how and eager_how.endswith("eager (--no-trace)")
    assert traced.steps == eager.steps and traced.status == eager.status
    np.testing.assert_allclose(traced.loss_history, eager.loss_history, **TOL)
    np.testing.assert_allclose(list(traced.parameters.values()), list(eager.parameters.values()), **TOL)


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


def test_generated_code_admits_only_allowlisted_names():
    trace_module._check_source("def _loss_grad(x0):\n    v1 = _m.exp(x0) * 2.5\n    return (v1,)\n")
    for bad in ("__import__('os')", "x0.__class__", "open(x0)", "'text'"):
        with pytest.raises(TraceUnavailable):
            trace_module._check_source(f"def _loss_grad(x0):\n    return {bad}\n")
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
