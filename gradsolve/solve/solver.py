"""Solve a parsed problem: lower it, run the loop (or a batch of starts), judge the outcome, describe solutions."""
from __future__ import annotations

import dataclasses

import numpy as np
import sympy

import gradsolve as gs
from gradsolve.problem import analysis
from gradsolve.problem.functions import maximum, minimum
from gradsolve.problem.lowering import lower
from gradsolve.problem.spec import ProblemSpec
from gradsolve.solve import direct
from gradsolve.solve.bounds import is_bounded, optional, unknown_scales
from gradsolve.solve.loop import run
from gradsolve.solve.options import SolveOptions, build_options, check_every, choose_method, default_every, flag
from gradsolve.solve.records import Outcome
from gradsolve.solve.result import Result
from gradsolve.solve.stopping import linear_fall, time_limit
from gradsolve.solve.trace import TracedPoint, TraceUnavailable, trace_problem
from gradsolve.solve.verdicts import judge_unsolved

__all__ = ["Objective", "is_smooth", "merged_options", "solve_spec", "make_trace", "to_result"]

#: Node classes with kinks or jumps: the problem language's own max/min (not sympy's Max/Min, which it never
#: builds), and sympy's Abs, sign, Heaviside (their derivatives), floor and ceiling, Min and Max.
NON_SMOOTH_NODES = (sympy.Abs, maximum, minimum, sympy.sign, sympy.Heaviside, sympy.floor, sympy.ceiling,
                    sympy.Min, sympy.Max)


class Objective:
    """What the loop drives: parameters, loss() and residuals (None for a minimize problem)."""

    def __init__(self, lowered, names, has_residuals, *, atol_applies=None, smooth=True, unused=()):
        self.lowered = lowered
        self.params = lowered.params
        self.names = names
        self.residuals = lowered.residuals if has_residuals else None
        self.atol_applies = has_residuals if atol_applies is None else atol_applies  # see gradsolve.solve.points
        self.smooth = smooth
        # each equation's constant terms, the part of its size J.x does not see (verdicts.residual_roundings)
        self.constant_terms = analysis.constant_term_sizes(lowered.spec) if has_residuals else None
        self.row_weights = equation_weights(lowered.spec, lowered, self.constant_terms)
        self.unused = frozenset(unused)  # unknowns no expression uses (points.unreached_unknowns)

    def loss(self):
        return self.lowered.loss()


def equation_weights(spec, lowered, constants):
    """1 / E_i for each equation (Levenberg-Marquardt's row weights), or None: E_i = sum_j |J_ij| s_j + c_i at
    the start, s the unknowns' own scales (bounds.unknown_scales, with their equations' constants) and c_i the
    equation's constant terms.

    Multiplying an equation by 10^k multiplies its E by 10^k, and writing an
    unknown in other units leaves every |J_ij| s_j as it was: Levenberg-Marquardt
    on the weighted residuals takes the same path in any units (its trust region
    lives in the Jacobian's column scale).  The roots are the same; for equations
    that cannot all hold, the loop goes on unweighted (the loss as written).
    """
    if constants is None or spec.kind != "equations" or spec.n_rows is not None:
        return None
    x0 = spec.initial_values()
    saved = lowered.values()
    try:
        J = np.abs(analysis.jacobian_matrix(lowered, x0))
        lo, hi = spec.bounds()
        scales = unknown_scales(x0, None, lo, hi, hint=analysis.constant_scales(lowered, x0, J))
    except Exception:  # noqa: BLE001 - no weights: the residuals as written
        return None
    finally:
        lowered.set_values(saved)
    sizes = J @ scales + constants
    if not (sizes.size and np.all(np.isfinite(sizes)) and np.all(sizes > 0)):
        return None
    return 1.0 / sizes


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
    return build_options(spec.solver, overrides)


def solve_spec(spec: ProblemSpec, options: SolveOptions, *, on_progress=None, every: int | None = None,
               on_start=None) -> Result:
    """Solve `spec` and return a Result; `on_progress` receives ProgressRow objects every `every` steps
    (None: every step for lm and lbfgs, every 100th for first-order methods).

    `on_start(label, names)` gets the method and how the graph is evaluated
    ("lm — traced: straight-line Python floats", or "eager" and why).  Tracing is
    on by default for every problem lowered from a spec (files, expressions and
    fits alike: all become the same compiled Program); `options.trace = False`
    (`--no-trace`) keeps the engine.  `options.starts > 1` solves a batch of
    starting points (gradsolve.solve.multistart).
    """
    if every is not None:
        check_every(every)
    # NaN and infinity are verdicts, not warnings (see loop.run): the residuals and checks below stay quiet too
    with np.errstate(all="ignore"), time_limit(options.time_limit):
        return _solve_spec(spec, options, on_progress, every, on_start)


def _solve_spec(spec, options, on_progress, every, on_start) -> Result:
    device = gs.backend.resolve_device(options.device)
    dtype = getattr(gs, options.dtype)
    lowered = lower(spec, dtype=dtype, device=device)
    names = spec.unknown_names
    has_residuals = spec.kind != "minimize"
    lower_b, upper_b = optional(*spec.bounds())
    smooth = is_smooth(spec)
    method = choose_method(options.optimizer, has_residuals=has_residuals, smooth=smooth,
                           bounded=is_bounded(lower_b, upper_b))
    every = every if every is not None else default_every(method)
    atol_applies = has_residuals or analysis.is_nonnegative(spec.loss)
    used = set().union(*(expr.free_symbols for expr in spec.expressions))
    unused = [name for name, symbol in zip(names, spec.unknown_symbols) if symbol not in used]
    objective = Objective(lowered, names, has_residuals, atol_applies=atol_applies, smooth=smooth, unused=unused)
    if direct.applies(spec, options, bounded=is_bounded(lower_b, upper_b)):
        if on_start is not None:
            on_start("qr — solved directly (the equations are linear)", names)
        return to_result(spec, lowered, objective, direct.solve_linear(spec, objective, options), options, device)
    trace, how = make_trace(lowered, method, options, device)
    if options.starts > 1:
        # the batch machinery only when it runs
        from gradsolve.solve.multistart import solutions_listed, solve_multistart

        outcome, solutions, candidates = solve_multistart(
            spec, lowered, objective, options, method=method, lower=lower_b, upper=upper_b, trace=trace, how=how,
            on_progress=on_progress, every=every, on_start=on_start)
        result = to_result(spec, lowered, objective, outcome, options, device)
        if result.solution_set is not None:  # a continuum: one entry, every start that reached it
            solutions = [(solutions[0][0], candidates, solutions[0][2], solutions[0][3])]
        result.extra["solutions"] = solutions_listed(names, solutions)
        result.extra["starts"] = options.starts
        return result
    if on_start is not None:
        on_start(f"{method} — {how}", names)
    point = TracedPoint(trace, lowered.values(), lowered.dtype) if trace is not None else None
    outcome = run(objective, options, method=method, lower=lower_b, upper=upper_b, on_progress=on_progress,
                  every=every, point=point)
    return to_result(spec, lowered, objective, outcome, options, device)


def make_trace(lowered, method, options, device):
    """(Trace or None, how the graph is evaluated in words): None means the engine runs it, and why."""
    if not options.trace:
        return None, f"eager ({flag('no_trace')})"
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
    extra = {}
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
        if (status in ("converged", "stalled") and spec.kind == "equations" and spec.n_rows is None
                and outcome.loss > options.atol and not outcome.atol_stop):
            status, reason = judge_unsolved(spec, lowered, outcome, options, reason)
        if status in ("converged", "inconsistent"):  # elsewhere the point solves nothing: no family of solutions
            solution_set = _solution_set(spec, lowered, outcome, status)
            if isinstance(solution_set, analysis.MultipleRoot):
                extra["multiple_root"] = dataclasses.asdict(solution_set)
                solution_set = None
    return Result(
        problem=spec.name, status=status, stop_reason=reason, optimizer=outcome.optimizer, steps=outcome.steps,
        loss=outcome.loss, gradient_norm=outcome.gradient_norm, parameters=dict(zip(names, map(float, outcome.values))),
        residuals=residual_rows, solution_set=solution_set, seed=options.seed, device=str(device),
        dtype=options.dtype, elapsed_s=outcome.elapsed_s, at_bounds=outcome.at_bounds,
        warnings=list(spec.warnings), loss_history=outcome.loss_history, kind=spec.kind, extra=extra,
    )


def _solution_set(spec, lowered, outcome, status):
    """Rank and free directions of the residual Jacobian at the solution; None when the solution is isolated,
    an analysis.MultipleRoot when it is isolated but the Jacobian is singular there.

    For a linear system the family is exact: the minimum-norm solution plus the
    null space of the coefficient matrix. For a nonlinear one the directions are
    only tangent to the family at this point ("local").
    """
    names = spec.unknown_names
    try:
        info = analysis.jacobian_rank(lowered, outcome.values)
    except Exception:  # noqa: BLE001 - analysis is a courtesy; a failure must not hide the answer
        return None
    # a root reached by a linear fall has a singular Jacobian even where rounding leaves it full rank (x^2 = 0
    # at x = 1e-80): stopping.linear_fall
    fall = status == "converged" and spec.kind == "equations" and linear_fall(outcome.loss_history) is not None
    linear = analysis.is_linear(spec)
    if (info.rank < len(names) or fall) and not linear and status == "converged":
        lower, upper = spec.bounds()
        scales = unknown_scales(outcome.values, spec.initial_values(), lower, upper)
        try:
            root = analysis.multiple_root(lowered, outcome.values, info, scales)
        except Exception:  # noqa: BLE001 - a courtesy, as above
            root = None
        if root is not None:
            return root
    if info.rank >= len(names):
        return None
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
