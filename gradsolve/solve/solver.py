"""Solve a parsed problem: lower it, run the loop, judge the outcome, describe the solution set."""
from __future__ import annotations

import math
import numbers

import numpy as np
import sympy

import gradsolve as gs
from gradsolve.problem import analysis
from gradsolve.problem.grammar import maximum, minimum
from gradsolve.problem.lowering import lower
from gradsolve.problem.spec import ProblemSpec
from gradsolve.solve.loop import (CURVATURE_RTOL, HESSIAN_LIMIT, Outcome, SolveError, SolveOptions, choose_method,
                                  held_by_bounds, loss_hessian, more_starts, rounding_floor, run)
from gradsolve.solve.result import Result
from gradsolve.solve.trace import TracedPoint, TraceUnavailable, trace_problem

#: Node classes with kinks or jumps: the problem language's own max/min (not sympy's Max/Min, which it never
#: builds), and sympy's Abs, sign, Heaviside (their derivatives), floor and ceiling, Min and Max.
NON_SMOOTH_NODES = (sympy.Abs, maximum, minimum, sympy.sign, sympy.Heaviside, sympy.floor, sympy.ceiling,
                    sympy.Min, sympy.Max)


class _Objective:
    """What the loop drives: parameters, loss() and residuals (None for a minimize problem)."""

    def __init__(self, lowered, names, has_residuals, *, atol_applies=None, smooth=True, unused=()):
        self.lowered = lowered
        self.params = lowered.params
        self.names = names
        self.residuals = lowered.residuals if has_residuals else None
        self.atol_applies = has_residuals if atol_applies is None else atol_applies  # see loop.run
        self.smooth = smooth
        self.unused = frozenset(unused)  # unknowns no expression uses (loop.unreached_unknowns)

    def loss(self):
        return self.lowered.loss()


def is_smooth(spec: ProblemSpec) -> bool:
    """False when the expressions use kinks (abs, min, max, sign): L-BFGS's line search needs smoothness."""
    for expr in spec.expressions:
        for node in _walk(expr):
            if isinstance(node, NON_SMOOTH_NODES):
                return False
    return True


def _walk(expr):
    stack = [expr]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(node.args)


def merged_options(spec: ProblemSpec, overrides: dict) -> SolveOptions:
    """The problem file's `solver` settings, overridden by explicit options (None = not given)."""
    options = SolveOptions()
    for key, value in (spec.solver or {}).items():
        if hasattr(options, key) and value is not None:
            setattr(options, key, value)
    for key, value in overrides.items():
        if value is not None:
            if not hasattr(options, key):
                raise SolveError(f"unknown solve option {key!r}")
            setattr(options, key, value)
    if options.steps < 1:
        raise SolveError(f"steps must be at least 1, got {options.steps}")
    for key in ("tol", "atol"):
        value = getattr(options, key)
        if not (isinstance(value, numbers.Real) and math.isfinite(value) and value >= 0):
            raise SolveError(f"{key} must be a finite number >= 0, got {value!r}")
    if options.lr is not None and not (isinstance(options.lr, numbers.Real) and math.isfinite(options.lr)
                                       and options.lr > 0):
        raise SolveError(f"lr must be a finite number > 0, got {options.lr!r}")
    if not (isinstance(options.starts, int) and options.starts >= 1):
        raise SolveError(f"starts must be a positive integer, got {options.starts!r}")
    if options.dtype not in ("float64", "float32"):
        raise SolveError(f"dtype must be float64 or float32, got {options.dtype!r}")
    return options


def solve_spec(spec: ProblemSpec, options: SolveOptions, *, on_progress=None, every: int = 1,
               on_start=None) -> Result:
    """Solve `spec` and return a Result; `on_progress` receives ProgressRow objects.

    `on_start(label, names)` gets the method and how the graph is evaluated
    ("lm — traced: straight-line Python floats", or "eager" and why).  Tracing is
    on by default for every problem lowered from a spec (files, expressions and
    fits alike: all become the same compiled Program); `options.trace = False`
    (`--no-trace`) keeps the engine.  `options.starts > 1` solves a batch of
    starting points (gradsolve.solve.multistart).
    """
    check_every(every)
    # NaN and infinity are verdicts, not warnings (see loop.run): the residuals and checks below stay quiet too
    with np.errstate(all="ignore"):
        return _solve_spec(spec, options, on_progress, every, on_start)


def _solve_spec(spec, options, on_progress, every, on_start) -> Result:
    device = gs.backend.resolve_device(options.device)
    dtype = getattr(gs, options.dtype)
    lowered = lower(spec, dtype=dtype, device=device)
    names = spec.unknown_names
    has_residuals = spec.kind != "minimize"
    lo, hi = spec.bounds()
    lower_b = [None if not math.isfinite(v) else float(v) for v in lo]
    upper_b = [None if not math.isfinite(v) else float(v) for v in hi]
    bounded = any(v is not None for v in lower_b + upper_b)
    smooth = is_smooth(spec)
    method = choose_method(options.optimizer, has_residuals=has_residuals, smooth=smooth, bounded=bounded)
    atol_applies = has_residuals or analysis.is_nonnegative(spec.loss)
    used = set().union(*(expr.free_symbols for expr in spec.expressions))
    unused = [name for name, symbol in zip(names, spec.unknown_symbols) if symbol not in used]
    objective = _Objective(lowered, names, has_residuals, atol_applies=atol_applies, smooth=smooth, unused=unused)
    if options.starts > 1:
        from gradsolve.solve.multistart import solve_multistart

        return solve_multistart(spec, lowered, objective, options, method=method, lower=lower_b, upper=upper_b,
                                device=device, on_progress=on_progress, every=every, on_start=on_start)
    trace, how = make_trace(lowered, method, options, device)
    if on_start is not None:
        on_start(f"{method} — {how}", names)
    point = TracedPoint(trace, lowered.values(), lowered.dtype) if trace is not None else None
    outcome = run(objective, options, method=method, lower=lower_b, upper=upper_b, on_progress=on_progress,
                  every=every, point=point)
    return to_result(spec, lowered, objective, outcome, options, device)


def check_every(every) -> None:
    """A progress row every `every` steps: a positive whole number (SolveError otherwise)."""
    if isinstance(every, bool) or not isinstance(every, numbers.Integral) or every < 1:
        raise SolveError(f"every must be a whole number >= 1 (a progress row every N steps), got {every!r}")


def make_trace(lowered, method, options, device):
    """(Trace or None, how the graph is evaluated in words): None means the engine runs it, and why."""
    if not options.trace:
        return None, "eager (--no-trace)"
    if str(device) != "cpu":
        return None, f"eager: traced code runs on the cpu, not {device}"
    with gs.enable_grad():
        reaches = lowered.loss().requires_grad
    if not reaches:  # nothing to differentiate: the trace's check against the engine's gradient has no gradient
        return None, "eager: the loss has no path to the unknowns (piecewise constant)"
    try:
        trace = trace_problem(lowered)
    except TraceUnavailable as exc:
        return None, f"eager: cannot trace ({exc})"
    if method == "lm" and not trace.has_jacobian:
        return None, f"eager: cannot trace the Jacobian ({trace.jacobian_reason})"
    return trace, trace.label


def to_result(spec, lowered, objective, outcome: Outcome, options, device) -> Result:
    """The Result of `outcome`; the lowered problem's parameters must hold the reported point."""
    names = spec.unknown_names
    status = outcome.status
    reason = outcome.stop_reason
    residual_rows = []
    solution_set = None
    if spec.kind != "minimize":
        with gs.no_grad():
            per_item = [t.numpy() for t in lowered.outputs()]
        for source, values in zip(spec.sources, per_item):
            values = np.atleast_1d(np.asarray(values, dtype=np.float64))
            if values.size == 1 and spec.n_rows is None:
                residual_rows.append({"equation": source, "value": float(values[0])})
            else:
                residual_rows.append({"equation": source, "count": int(values.size),
                                      "rms": float(np.sqrt(np.mean(values ** 2))) if values.size else 0.0,
                                      "max": float(np.max(np.abs(values))) if values.size else 0.0})
        if status == "converged" and spec.kind == "equations" and spec.n_rows is None and outcome.loss > options.atol:
            status, reason = _judge_unsolved(spec, lowered, outcome, options, reason)
        if status in ("converged", "inconsistent"):  # elsewhere the point solves nothing: no family of solutions
            solution_set = _solution_set(spec, lowered, outcome)
    return Result(
        problem=spec.name, status=status, stop_reason=reason, optimizer=outcome.optimizer, steps=outcome.steps,
        loss=outcome.loss, gradient_norm=outcome.gradient_norm, parameters=dict(zip(names, map(float, outcome.values))),
        residuals=residual_rows, solution_set=solution_set, seed=options.seed, device=str(device),
        dtype=options.dtype, elapsed_s=outcome.elapsed_s, at_bounds=outcome.at_bounds,
        warnings=list(spec.warnings), loss_history=outcome.loss_history, kind=spec.kind,
    )


#: A point is stationary when a first-order step of the unknowns' own size would change the loss by at
#: most this fraction of it: |projected gradient| * max(1, |x|) <= STATIONARY_RTOL * loss.
STATIONARY_RTOL = 1e-6


def _judge_unsolved(spec, lowered, outcome, options, reason):
    """Equations left unsatisfied: inconsistent, or did the optimizer stall short of a solution?

    The verdict rests on the loss (sum of squared residuals) at the reported point:
    where it is stationary (projected gradient small against the loss itself,
    components held by a bound ignored) and curves upward in every free direction
    (Hessian positive semidefinite), the point is a local minimum with residuals
    left over: "inconsistent" (for a linear system a proof; for a nonlinear one a
    fact about this neighbourhood, which the message says). Anywhere else, a
    saddle or a slope, the optimizer stalled and the equations may well hold.
    """
    x = np.asarray(outcome.values, dtype=np.float64)
    if options.dtype == "float32":
        held = _held_to_float32(spec, x)
        if held is not None:
            return "converged", (f"the equations hold to float32 precision: every residual is within {held:.2g} "
                                 f"float32 roundings of its terms (loss {outcome.loss:.3g} > atol {options.atol:g} "
                                 f"is float32 rounding; --dtype float64 resolves further) ({reason})")
    lo, hi = spec.bounds()
    lower = [None if not math.isfinite(v) else float(v) for v in lo]
    upper = [None if not math.isfinite(v) else float(v) for v in hi]
    try:
        jac = analysis.jacobian_matrix(lowered, x)
        with gs.no_grad():
            r = lowered.residuals().numpy().astype(np.float64)
        loss = float(r @ r)
        g = 2.0 * jac.T @ r
        free = ~np.array(held_by_bounds(g, x, lower, upper), dtype=bool)
        slope = float(np.max(np.abs(g[free]))) if free.any() else 0.0
        stationary = (slope * max(1.0, float(np.max(np.abs(x))) if x.size else 0.0)
                      <= max(STATIONARY_RTOL, rounding_floor(options.dtype)) * loss)
        minimum = stationary
        if stationary and 0 < int(free.sum()) <= HESSIAN_LIMIT:
            H = loss_hessian(lowered, lowered.params, x)[np.ix_(free, free)]
            eig = np.linalg.eigvalsh(H)
            minimum = bool(eig[0] >= -CURVATURE_RTOL * max(1.0, float(np.max(np.abs(eig)))))
    except Exception:  # noqa: BLE001 - no verdict possible: say the optimizer stopped
        stationary = minimum = False
    bounded = not bool(free.all()) if stationary else False
    if minimum:
        if analysis.is_linear(spec) and not bounded:
            return "inconsistent", (f"the equations cannot all hold: the least-squares point leaves loss "
                                    f"{outcome.loss:.3g} > atol {options.atol:g} ({reason})")
        near = "within the bounds" if bounded else "near this point"
        return "inconsistent", (f"the equations cannot all hold {near}: the loss has a local minimum "
                                f"{outcome.loss:.3g} > atol {options.atol:g} here ({reason}); other starting "
                                f"points may find a solution ({more_starts(options)})")
    if stationary:
        return "stalled", (f"{outcome.optimizer} stopped ({reason}) where the loss {outcome.loss:.3g} is flat but "
                           f"not at a minimum (a saddle or a maximum): start elsewhere "
                           f"(--init, {more_starts(options)})")
    advice = (f"a smaller --tol, or other starting values (--init, {more_starts(options)})"
              if outcome.optimizer == "lm" else "try --optimizer lm or a smaller --tol")
    return "stalled", (f"{outcome.optimizer} stopped ({reason}) before the equations were satisfied: loss "
                       f"{outcome.loss:.3g} > atol {options.atol:g} and still falling from here; {advice}")


#: A float32 run has solved its equations when every residual, evaluated in float64 at its point, is within this
#: many float32 roundings of the residual's own size.
FLOAT32_ROUNDINGS = 16


def _held_to_float32(spec, x):
    """max_i |r_i(x)| / (eps32 * max(1, sum_j |J_ij x_j|)) when at most FLOAT32_ROUNDINGS; else None.

    A float32 loss cannot fall to atol: each residual carries rounding of about
    float32's epsilon times its terms.  So the equations are judged in float64 at
    the same point, each residual against the size of its own terms (estimated
    by |J_i| . |x|, at least 1, as atol is absolute): a residual that is rounding
    passes, one that is wrong (an inconsistent system's least-squares point, or
    a small unknown far from its value next to a large one) does not.
    """
    try:
        exact = lower(spec, dtype=gs.float64, device="cpu")
        exact.set_values(x.tolist())
        with gs.no_grad():
            r = np.asarray(exact.residuals().numpy(), dtype=np.float64).reshape(-1)
        jac = analysis.jacobian_matrix(exact, x.tolist())
        if not (r.size and np.all(np.isfinite(r)) and np.all(np.isfinite(jac))):
            return None
    except Exception:  # noqa: BLE001 - no verdict possible: the caller judges as before
        return None
    terms = np.maximum(np.abs(jac) @ np.abs(x), 1.0) if x.size else np.ones_like(r)
    roundings = float(np.max(np.abs(r) / (float(np.finfo(np.float32).eps) * terms)))
    return roundings if roundings <= FLOAT32_ROUNDINGS else None


def _solution_set(spec, lowered, outcome):
    """Rank and free directions of the residual Jacobian at the solution; None when the solution is isolated.

    For a linear system the family is exact: the minimum-norm solution plus the
    null space of the coefficient matrix. For a nonlinear one the directions are
    only tangent to the family at this point ("local").
    """
    names = spec.unknown_names
    try:
        info = analysis.jacobian_rank(lowered, outcome.values)
    except Exception:  # noqa: BLE001 - analysis is a courtesy; a failure must not hide the answer
        return None
    if info.rank >= len(names):
        return None
    linear = analysis.is_linear(spec)
    particular = None
    directions = info.null_space
    if linear:
        try:
            exact = analysis.linear_solution(spec)
            particular = dict(zip(names, map(float, exact.x)))
            directions = exact.null_space
        except ValueError:
            linear = False
    return {
        "rank": int(info.rank),
        "unknowns": list(names),
        "particular": particular,
        "free_directions": [dict(zip(names, map(float, d))) for d in directions],
        "local": not linear,
    }
