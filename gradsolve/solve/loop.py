"""The solve loop: drive any optimizer over an objective and keep the best point.

Every method is driven the same way: one call of `step()` is one iteration;
after it the loop measures the loss, the gradient and step norms, and hands them
to the stopping tests (gradsolve.solve.stopping), which also report progress
rows.  When a test fires, the loop evaluates the best point seen afresh on the
objective and leaves the verdict to gradsolve.solve.verdicts (`judge`): a stop
that rests on the steps stopping is only provisional (a rate shrunk on a slope,
a failed line search or Levenberg-Marquardt's damping on a plateau all stop the
steps short of a minimum), and every converged stop but atol is confirmed a
local minimum there.  Where Levenberg-Marquardt stops at a saddle, or at a
degenerate minimum whose flat valley leads to negative curvature, it continues
from a clearly lower point along that curvature (`escape_point`), at most
ESCAPE_LIMIT times: Gauss-Newton steps cannot see negative curvature.

The result is the best point seen, not the last, for every status: NaN or
infinity stops the run at once ("diverged") and the best finite point seen is
reported; Ctrl-C stops it ("interrupted") with the best point so far.
"""
from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np

import gradsolve as gs
from gradsolve import optim
from gradsolve.methods import DEFAULT_LR, FIRST_ORDER
from gradsolve.solve.bounds import is_bounded, names_at_bounds, projected_max_abs, unbounded
from gradsolve.solve.options import SolveOptions, flag
from gradsolve.solve.points import (EagerPoint, evaluators, loss_and_gradient, loss_traits, set_values,
                                    unreached_unknowns, values_of)
from gradsolve.solve.probes import escape_point
from gradsolve.solve.records import Outcome, ProgressRow
from gradsolve.solve.stopping import RateRule, Watch
from gradsolve.solve.verdicts import Stop, diverged_advice, judge

__all__ = ["run", "sgd_rate", "make_optimizer", "FIRST_ORDER_CLASSES", "ESCAPE_LIMIT"]

# Levenberg-Marquardt at a saddle, or at a degenerate minimum whose flat valley leads to negative curvature:
# continue from a clearly lower point found along that curvature, at most ESCAPE_LIMIT times.
ESCAPE_LIMIT = 5

FIRST_ORDER_CLASSES = {"sgd": optim.SGD, "adadelta": optim.Adadelta, "adam": optim.Adam, "adamw": optim.AdamW,
                       "nadam": optim.NAdam, "rmsprop": optim.RMSprop, "adagrad": optim.Adagrad}


def sgd_rate(objective, params) -> float:
    """1/L, with L the largest curvature at the start (exact for quadratics: SGD then never overshoots).

    For residual problems L = 2 |J|_2^2 from the Jacobian; otherwise the Hessian's
    largest eigenvalue by a few Hessian-vector products (power iteration).
    """
    try:
        if objective.residuals is not None:
            jac = gs.autograd.functional.jacobian(objective.residuals, params)
            J = np.stack([j.numpy().reshape(j.shape[0], -1)[:, 0] if j.ndim > 1 else j.numpy() for j in jac], axis=1)
            curvature = 2.0 * float(np.linalg.norm(J, 2)) ** 2
        else:
            rng = np.random.default_rng(0)
            v = rng.standard_normal(len(params))
            curvature = 0.0
            for _ in range(20):
                v = v / (np.linalg.norm(v) or 1.0)
                vecs = [gs.tensor(x, dtype=params[0].dtype, device=params[0].device) for x in v]
                hv = gs.autograd.functional.hvp(objective.loss, params, vecs)
                hv = np.array([float(h.item()) for h in hv])
                curvature = abs(float(v @ hv))
                v = hv
        if curvature > 0 and math.isfinite(curvature):
            return 1.0 / curvature
    except Exception:  # noqa: BLE001 - a heuristic; fall back to a safe small rate
        pass
    return 1e-3


def make_optimizer(method, point, objective, options, lower, upper, row_weights=None):
    """The optimizer for `method` over `point.params`, and its learning rate (None for lm, which weighs its
    residuals by `row_weights` when given)."""
    lr = options.lr
    params = point.params
    if method == "lm":
        # atol is judged by the stopping tests (stopping.Watch), which let LM polish a few more steps first.
        settings = {} if row_weights is None else {"row_weights": row_weights}
        return point.make_lm(xtol=options.tol, ftol=options.tol, gtol=0.0, atol=0.0, lower=lower,
                             upper=upper, **settings), None
    if method == "lbfgs":
        return optim.LBFGS(params, lr=lr or DEFAULT_LR["lbfgs"], max_iter=1, max_eval=25, tolerance_grad=0.0,
                           tolerance_change=0.0, history_size=50, line_search_fn="strong_wolfe"), lr or 1.0
    if method == "sgd":
        lr = lr or sgd_rate(objective, objective.params)
        return optim.SGD(params, lr=lr), lr
    lr = lr or DEFAULT_LR[method]
    # the loss as written is what is minimized: no weight decay (AdamW's default of 1e-2 would pull every
    # unknown toward 0 and no equation would hold); a fit's parameter groups may still set one
    return FIRST_ORDER_CLASSES[method](params, lr=lr, weight_decay=0.0), lr


def run(objective, options: SolveOptions, *, method: str, lower=None, upper=None,
        on_progress: Callable[[ProgressRow], None] | None = None, every: int = 1, point=None,
        confirm_minimum: bool = True) -> Outcome:
    """Minimize `objective` with `method`, reporting a progress row every `every` steps (see `_run`).

    NaN and infinity are verdicts ("diverged"), not warnings: NumPy's
    RuntimeWarnings (log of a negative number, overflow in exp) stay quiet.
    `confirm_minimum=False` leaves the curvature check of a converged stop
    (gradsolve.solve.verdicts) to the caller (multistart checks once per distinct point).
    """
    with np.errstate(all="ignore"):
        weights = getattr(objective, "row_weights", None) if method == "lm" else None
        start = values_of(objective.params) if point is None else np.asarray(point.values(), dtype=np.float64)
        outcome = _run(objective, options, method=method, lower=lower, upper=upper, on_progress=on_progress,
                       every=every, point=point, confirm=confirm_minimum, row_weights=weights)
        if weights is not None and not outcome.atol_stop and outcome.status in ("converged", "stalled"):
            outcome = _unweighted(objective, options, outcome, lower, upper, on_progress, every, point,
                                  confirm_minimum, start)
        if method == "lm" and confirm_minimum:
            outcome = _escape(objective, options, outcome, lower, upper, on_progress, every, point, start)
        return outcome


def _unweighted(objective, options, outcome, lower, upper, on_progress, every, point, confirm, start):
    """Equations weighted by their sizes (Objective.row_weights) that do not hold: the least-squares point of the
    loss as written is another, so Levenberg-Marquardt goes on from here on the residuals as written."""
    set_values(objective.params, outcome.values)
    if point is not None:
        point.set_values(outcome.values)
    after = _run(objective, options, method="lm", lower=lower, upper=upper, on_progress=on_progress, every=every,
                 point=point, confirm=confirm, origin=start)
    after.steps += outcome.steps
    after.elapsed_s += outcome.elapsed_s
    after.loss_history = outcome.loss_history + after.loss_history
    return after


def _escape(objective, options, outcome, lower, upper, on_progress, every, point, start):
    """Levenberg-Marquardt stopped at a saddle, or at a minimum whose flat valley leads to negative curvature:
    continue from a clearly lower point along that curvature (`escape_point`), at most ESCAPE_LIMIT times.

    Gauss-Newton steps cannot see negative curvature (J^T J has none), so LM
    settles on such points; the full Hessian of the loss can.  A run from the
    lower point replaces the outcome where it ends lower and, when the outcome
    was converged, converged too: the verdict always belongs to the point reported.
    """
    params = objective.params
    lower, upper = _optional_bounds(lower, upper, len(params))
    eps = float(np.finfo(np.float32 if options.dtype == "float32" else np.float64).eps)
    loss_at, hessian_at = evaluators(objective, params)

    for _ in range(ESCAPE_LIMIT):
        if outcome.atol_stop or not (outcome.status == "converged" or outcome.not_minimum):
            break
        if outcome.status == "converged" and outcome.loss <= options.atol:
            break
        set_values(params, outcome.values)
        _, g = loss_and_gradient(objective, params)
        try:
            z = escape_point(loss_at, hessian_at, outcome.values, g, lower, upper, eps=eps)
        finally:
            set_values(params, outcome.values)
        if z is None:
            break
        set_values(params, z)
        if point is not None:
            point.set_values(z)
        after = _run(objective, options, method="lm", lower=lower, upper=upper, on_progress=on_progress,
                     every=every, point=point, confirm=True, origin=start)
        if not (after.loss < outcome.loss and (after.status == "converged" or outcome.status != "converged")):
            break
        left = "a saddle point or maximum" if outcome.not_minimum else "a degenerate minimum"
        after.stop_reason = (f"{after.stop_reason} (after stepping off {left} at loss {outcome.loss:.3g} along "
                             f"its negative curvature)")
        after.steps += outcome.steps
        after.elapsed_s += outcome.elapsed_s
        after.loss_history = outcome.loss_history + after.loss_history
        outcome = after
    set_values(params, outcome.values)
    if point is not None:
        point.set_values(outcome.values)
    return outcome


def _run(objective, options, *, method, lower, upper, on_progress, every, point, confirm=True,
         row_weights=None, origin=None) -> Outcome:
    """Minimize `objective` with `method`, reporting a progress row every `every` steps.

    `objective` has `params` (0-d leaf tensors), `names`, `loss()` (0-d tensor) and
    `residuals` (a closure returning the 1-D residual tensor, or None).  `point` is
    what the optimizer moves: the objective's own tensors (`EagerPoint`, the
    default) or a traced stand-in (`gradsolve.solve.trace.TracedPoint`) with the
    same methods; the reported point is always evaluated afresh on `objective`.
    An objective may say `atol_applies` (default: it has residuals): its loss
    cannot go below zero; and `smooth` (default True): False for a loss with
    kinks (see gradsolve.solve.points).
    """
    atol_applies, smooth = loss_traits(objective)
    params = objective.params
    point = point if point is not None else EagerPoint(objective)
    lower, upper = _optional_bounds(lower, upper, len(params))
    bounded = is_bounded(lower, upper)
    point.project(lower, upper)
    set_values(params, point.values())
    opt, lr = make_optimizer(method, point, objective, options, lower, upper, row_weights)
    # adaptive methods settle on a point by halving their rate, and cross long slopes by doubling it
    rates = RateRule(opt.param_groups[0]["lr"]) if method in FIRST_ORDER and method != "sgd" else None

    start = time.perf_counter()
    x = point.values()
    # where the solve started (a continued run keeps its first run's start): the unknowns' own scales
    x0 = np.asarray(x if origin is None else origin, dtype=np.float64).copy()
    watch = Watch(options, method, objective.names, on_progress, every, start, x, atol_applies=atol_applies,
                  smooth=smooth, constants=getattr(objective, "constant_terms", None))
    status, reason = "max_steps", f"reached the step limit ({options.steps})"
    step = 0
    loss0 = math.nan
    try:
        loss0 = point.loss()
        if not math.isfinite(loss0):
            # nothing to descend from: say where, rather than "became nan" after a step that never ran
            status = "diverged"
            why = ("a function outside its domain, such as sqrt or log of a negative number" if loss0 != loss0 else
                   "a value beyond float64's range, such as exp of a large number")
            reason = (f"the loss is {loss0} at the starting point ({why}): start elsewhere ({flag('init')}) or "
                      f"bound the unknowns")
            step = 0
        elif method in FIRST_ORDER:
            step, stop = _first_order_steps(point.descent(opt), opt, rates, watch, lower, upper, options.steps)
            if stop is not None:
                status, reason = stop
        else:
            step, stop = _iterate(point, opt, method, lr, watch, lower, upper, bounded, options.steps)
            if stop is not None:
                status, reason = stop
    except KeyboardInterrupt:
        status, reason = "interrupted", f"interrupted at step {watch.current_step}"
        step = watch.current_step
    if status == "diverged" and method in FIRST_ORDER and step > 1:
        reason = f"{reason}{diverged_advice(float(opt.param_groups[0]['lr']))}"
    elapsed = time.perf_counter() - start
    # Report the best point seen (whatever the status), evaluated afresh on the engine.
    set_values(params, watch.best_x if math.isfinite(watch.best_loss) else watch.last_finite_x)
    final_loss, g = loss_and_gradient(objective, params)
    flat = unreached_unknowns(objective, params)
    values = values_of(params)
    jacobian = None
    if method == "lm":
        try:
            jac = gs.autograd.functional.jacobian(objective.residuals, params)
            jacobian = np.stack([j.numpy().reshape(-1) for j in jac], axis=1) if jac else None
        except Exception:  # noqa: BLE001 - the Jacobian is a courtesy for statistics
            jacobian = None
    stop = Stop(objective, values, g, lower, upper, options, method, status, reason, loss=final_loss, loss0=loss0,
                check=watch.confirm, moving_why=watch.moving_why, first_grad_norm=watch.first_grad_norm,
                rate=float(opt.param_groups[0]["lr"]) if method in FIRST_ORDER else None, jacobian=jacobian,
                flat=flat, at_atol=watch.at_atol, start=x0)
    status, reason, not_minimum = judge(stop, confirm_minimum=confirm)
    return Outcome(status=status, stop_reason=reason, optimizer=method, steps=step, loss=final_loss,
                   gradient_norm=float(np.max(np.abs(g))) if g.size else 0.0, values=values,
                   elapsed_s=elapsed, loss_history=watch.history,
                   at_bounds=names_at_bounds(objective.names, values, lower, upper), jacobian=jacobian,
                   atol_stop=watch.at_atol, not_minimum=not_minimum)


def _first_order_steps(descent, opt, rates, watch, lower, upper, steps):
    """The first-order loop, for every point: returns (steps run, (status, reason) or None).

    Each step: the optimizer's rule from the gradient at x (``descent.step``, projected
    into the bounds), then the loss and gradient at the new point from one evaluation,
    the rate rule, and the stopping tests (``watch``).  `descent` is the point's own
    way to do this (`points.TensorDescent` on tensors; Python floats for a float trace).
    """
    bounded = is_bounded(lower, upper)
    group = opt.param_groups[0]
    move, evaluate, distance, norm, max_abs = (descent.step, descent.loss_grad, descent.distance, descent.norm,
                                               descent.max_abs)
    observe, offer, isfinite = watch.observe, watch.offer, math.isfinite
    x = descent.start()
    loss, g = evaluate(x)
    step = 0
    try:
        for step in range(1, steps + 1):
            watch.current_step = step
            if not isfinite(loss):
                return step, ("diverged", f"the loss became {loss} at step {step}")
            offer(loss, x)
            x_new = move(g, lower, upper, bounded)
            rate = float(group["lr"])  # the rate this step used
            grad_norm = projected_max_abs(g, x, lower, upper) if bounded else max_abs(g)
            loss, g = evaluate(x_new)
            if rates is not None:
                group["lr"] = rates.step(loss, True, group["lr"])
            stop = observe(step, loss, grad_norm, distance(x_new, x), norm(x_new), x_new, rate, "lr")
            x = x_new
            if stop is not None:
                return step, stop
        return step, None
    finally:
        descent.finish(x if all(map(isfinite, x)) else watch.last_finite_x)


def _optional_bounds(lower, upper, n):
    """The loop's bounds as lists (None: no bound), for n unknowns."""
    free_lower, free_upper = unbounded(n)
    return (list(lower) if lower is not None else free_lower, list(upper) if upper is not None else free_upper)


def _iterate(point, opt, method, lr, watch, lower, upper, bounded, steps):
    """The loop for Levenberg-Marquardt and L-BFGS, whose optimizers evaluate the point themselves: returns
    (steps run, (status, reason) or None)."""
    x = point.values()
    step = 0
    for step in range(1, steps + 1):
        watch.current_step = step
        merit = None
        if method == "lm":
            loss_now = merit = float(opt.step())
            x_new = point.values()
            jacobian, residuals, weights = opt.jacobian, opt.residuals, opt.row_weights
            # the stopping tests read the weighted loss and gradient, which LM minimizes (merit); the loss as
            # written is reported, and the equations are judged on the residuals as written
            g = 2.0 * jacobian.T @ residuals if jacobian is not None else None
            if weights is not None and jacobian is not None:
                residuals, jacobian = residuals / weights, jacobian / weights[:, None]
                loss_now = float(residuals @ residuals)
            grad_norm = float(np.max(np.abs(g))) if g is not None and g.size else 0.0
            if bounded and g is not None:
                grad_norm = projected_max_abs(g, x_new, lower, upper)
            rate, rate_name = float(opt.lam), "damping"
        elif method == "lbfgs":
            loss_before = float(opt.step(point.closure()).item())
            x_new = point.values()
            loss_now, g = point.loss_grad()
            grad_norm = float(np.max(np.abs(g))) if g.size else 0.0
            rate, rate_name = lr, "lr"
            if watch.prev_loss is None:
                watch.prev_loss = watch.prev_merit = loss_before
        step_norm = float(np.linalg.norm(x_new - x))
        lm_stop, equations = None, (None, None)
        if method == "lm":
            equations = (residuals, jacobian)
            if opt.stop_reason is not None:
                lm_stop = (opt.stop_reason, opt.converged)
        stop = watch.observe(step, loss_now, grad_norm, step_norm, float(np.linalg.norm(x_new)), x_new, rate,
                             rate_name, lm_stop, *equations, merit=merit)
        if stop is not None:
            if stop[0] == "diverged":
                point.set_values(watch.last_finite_x)
            return step, stop
        x = x_new
    return step, None


