"""Verdicts: every decision that turns a stop into a status (converged, stalled, inconsistent), in one place.

A run stops when a test fires (gradsolve.solve.stopping); whether that stop is a
solution is decided here, at the point the run reports (the best one seen), from
one record, `Stop`:

* `judge` is the whole decision for one run: a stop that rests on the steps
  stopping (xtol, ftol) is judged by the gradient there (`judge_stopped_moving`),
  on a loss with kinks by probing the loss (`confirm_kink_stop`), for
  Levenberg-Marquardt by MINPACK's orthogonality test (`confirm_lm_stop`); every
  converged stop but atol is then confirmed a local minimum
  (`confirm_minimum_stop`); a run that stopped short says when the loss seems
  unbounded below (`short_stop_reason`).
* `judge_unsolved` decides, for equations left above atol, between
  "inconsistent" (a minimum with residuals left) and "stalled".

Batched multistart asks the same functions once per distinct point.  The limits:
`stationary_gradient_limit` (how small a gradient must be), `lm_cosine_limit`,
`rounding_floor` (what float32 can resolve).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

import gradsolve as gs
from gradsolve.solve.bounds import held_by_bounds, optional, projected_max_abs, unknown_scales
from gradsolve.solve.options import SolveOptions, flag, more_starts
from gradsolve.solve.points import (evaluators, loss_and_gradient, loss_hessian, loss_traits, set_values,
                                    unreached_unknowns)
from gradsolve.solve.probes import (CURVATURE_RTOL, HESSIAN_LIMIT, descent_slope, lm_cosines, minimum_refuted,
                                    unbounded_below)

__all__ = ["Stop", "judge", "judge_fit_values", "judge_stopped_moving", "confirm_kink_stop", "confirm_lm_stop", "confirm_minimum_stop",
           "short_stop_reason", "judge_unsolved", "stationary_gradient_limit", "rounding_floor", "lm_cosine_limit",
           "stalled_reason", "diverged_advice", "SOLVED_ROUNDINGS", "residual_roundings", "held_to_rounding",
           "solved_reason"]

# Levenberg-Marquardt counts a stop short of atol as convergence only where every cosine between the residual
# and a free Jacobian column is at most max(LM_COSINE_LIMIT, sqrt(tol)), or, for a column that fails, where the
# loss curves up along it: a step of the parameter's own size (bounds.unknown_scales) raises it by at least LM_CURVATURE_RTOL of
# itself, and a Newton step along it would lower it by at most limit**2 of itself (see confirm_lm_stop).
LM_COSINE_LIMIT = 1e-5
LM_CURVATURE_RTOL = 1e-6
#: A point is stationary when a first-order step of the unknowns' own size would change the loss by at
#: most this fraction of it: max_j |projected gradient_j| * s_j <= STATIONARY_RTOL * loss, s the unknowns' scales.
STATIONARY_RTOL = 1e-6
#: Equations hold when every residual is within this many roundings of the size of its own terms (the sum of
#: |J_ij x_j| and of its constant terms), evaluated in float64 at the point (a float32 run: float32 roundings).
SOLVED_ROUNDINGS = 16


@dataclass
class Stop:
    """A run's stop at the point it reports: everything a verdict reads.

    `check` says what the stop rests on and so what `judge` must confirm: "gradient"
    (the steps stopped on a smooth loss), "kink" (the steps stopped on a loss with
    kinks), "lm" (Levenberg-Marquardt stopped short of atol), or None.
    """

    objective: object
    values: np.ndarray  # the reported point
    gradient: np.ndarray  # the loss gradient there
    lower: list
    upper: list
    options: SolveOptions
    method: str
    status: str
    reason: str  # the test that fired, in words
    loss: float = math.nan  # at the reported point
    loss0: float = math.nan  # at the start
    check: str | None = None
    moving_why: str | None = None  # the test that fired when the steps stopped (xtol, ftol)
    first_grad_norm: float | None = None
    rate: float | None = None  # a first-order method's learning rate at the end
    jacobian: np.ndarray | None = None  # Levenberg-Marquardt's, at the reported point
    flat: list | None = None  # unreached_unknowns at the reported point (None: measure it)
    start: np.ndarray | None = None  # where the run started: with the bounds, the unknowns' own scales
    at_atol: bool = False  # the loss reached atol: a proven minimum, nothing to confirm

    @property
    def params(self):
        return self.objective.params

    @property
    def eps(self) -> float:
        return float(np.finfo(np.float32 if self.options.dtype == "float32" else np.float64).eps)

    def scales(self) -> np.ndarray:
        """Each unknown's own scale (bounds.unknown_scales of the point, the start and the bounds)."""
        return unknown_scales(self.values, self.start, self.lower, self.upper)

    def gradient_limit(self) -> float:
        return stationary_gradient_limit(self.options.tol, self.first_grad_norm, self.options.dtype)


def stationary_gradient_limit(tol, first_grad_norm, dtype="float64"):
    """The largest gradient a point may have and still count as a minimum once the steps stop: sqrt(tol) of the
    first one (no floor: a problem in small units has small gradients)."""
    return max(math.sqrt(tol), rounding_floor(dtype)) * (first_grad_norm or 0.0)


def rounding_floor(dtype) -> float:
    """The least relative limit a verdict may use in `dtype`: sqrt(eps) in float32 (3.5e-4), 0 in float64.

    A float32 loss resolves its minimizer only to about sqrt(eps) of the unknowns'
    scale (the loss changes by eps * F there), and gradients and cosines carry
    rounding of the same order; float64's limits, sqrt(tol) = 1e-6 by default,
    are far above its own rounding and stay as they are.
    """
    return math.sqrt(float(np.finfo(np.float32).eps)) if dtype == "float32" else 0.0


def lm_cosine_limit(tol, dtype="float64") -> float:
    """The largest cosine (lm_cosines) at which a Levenberg-Marquardt stop counts as converged."""
    return max(LM_COSINE_LIMIT, math.sqrt(tol) if tol == tol else 0.0, rounding_floor(dtype))


def diverged_advice(lr) -> str:
    """What to try when a first-order method's steps ran off to infinity."""
    return (f": the steps grew instead of settling; try a smaller {flag('lr')} (this run's was {lr:.3g}) or "
            f"{flag('optimizer')} lm")


def stalled_reason(method, why, grad_norm, limit):
    advice = "use lbfgs, or lm for equations" if method != "lbfgs" else "try lm for equations, or adam"
    return (f"{method} stopped moving ({why}) where the gradient norm {grad_norm:.3g} is not small "
            f"(> {limit:.3g}): not a minimum; {advice}")


def judge_stopped_moving(grad_norm, limit, method, why):
    """xtol or ftol fired on a smooth loss: converged where the gradient is at most `limit`, else stalled."""
    if grad_norm is not None and grad_norm > limit:
        return "stalled", stalled_reason(method, why, grad_norm, limit)
    return "converged", why


def judge(stop: Stop, *, confirm_minimum: bool = True) -> tuple[str, str, bool]:
    """(status, reason, not_minimum) for a single run's stop; see the module doc.

    `confirm_minimum=False` leaves the curvature check of a converged stop to the
    caller (multistart checks once per distinct point).  The parameters hold the
    reported point again afterwards.
    """
    if stop.check == "gradient" and stop.status in ("converged", "stalled"):
        # the steps stopped: judge stationarity where the run reports, not at the last step
        at_best = projected_max_abs(stop.gradient, stop.values, stop.lower, stop.upper)
        stop.status, stop.reason = judge_stopped_moving(at_best, stop.gradient_limit(), stop.method, stop.moving_why)
    if stop.status == "converged" and stop.check == "kink":
        stop.status, stop.reason = confirm_kink_stop(stop, stop.gradient_limit(), stop.rate)
    if stop.status == "converged" and stop.check == "lm":
        stop.status, stop.reason = confirm_lm_stop(stop)
    if stop.status == "converged" and not stop.at_atol and confirm_minimum:
        status, reason = confirm_minimum_stop(stop)
        return status, reason, status != "converged"
    return stop.status, short_stop_reason(stop), False


def confirm_lm_stop(stop: Stop):
    """LM stopped short of atol: converged where r is orthogonal to J, or the loss curves up along each column
    that is not (a derivative that vanishes at the minimum, as d(b**2)/db at b = 0); stalled otherwise.

    The cosine alone would call x**2 + 1 at x = 1e-17 a slope (its one column is
    all there is, and not orthogonal to r); curvature alone would call a model's
    saturated plateau (BoxBOD's exp(-b2*x) at b2 = 30: every derivative
    exponentially small) a minimum.  Together: a column whose cosine exceeds the
    limit is acceptable only where the loss's second derivative along it, H_jj,
    is positive and real at the parameter's own size s_j (``H_jj * s_j**2 / 2 >=
    LM_CURVATURE_RTOL * F``) and a Newton step along it, ``g_j**2 / (2 H_jj)``,
    would remove at most ``limit**2`` of the loss.
    """
    objective, params, values, J, reason = stop.objective, stop.params, stop.values, stop.jacobian, stop.reason
    limit = lm_cosine_limit(stop.options.tol, stop.options.dtype)
    scales = stop.scales()
    r, cosines = None, np.array([math.inf])
    try:
        with gs.no_grad():
            r = np.asarray(objective.residuals().numpy(), dtype=np.float64).reshape(-1)
        if J is not None:
            cosines = lm_cosines(J, r, values, stop.lower, stop.upper, stop.eps)
    except Exception:  # noqa: BLE001 - no residuals or Jacobian, no proof
        pass
    failing = [j for j, c in enumerate(cosines) if not c <= limit]
    if not failing:
        return "converged", reason
    loss = float(r @ r) if r is not None else math.inf
    curved = J is not None and math.isfinite(loss)
    for j in failing if curved else ():
        try:
            unit = [gs.tensor(1.0 if i == j else 0.0, dtype=p.dtype, device=p.device) for i, p in enumerate(params)]
            h_jj = float(gs.autograd.functional.hvp(objective.loss, params, unit)[j].item())
        except Exception:  # noqa: BLE001 - no curvature, no proof
            h_jj = math.nan
        g_j = 2.0 * float(J[:, j] @ r)
        size = float(scales[j])
        if not (h_jj > 0 and h_jj * size * size / 2.0 >= LM_CURVATURE_RTOL * loss
                and g_j * g_j / (2.0 * h_jj) <= limit * limit * loss):
            curved = False
    set_values(params, values)
    if curved:
        return "converged", f"{reason}; a minimum where the loss curves up along every parameter"
    worst = float(np.max(cosines))
    return "stalled", (f"lm stopped ({reason}) where the residuals are not orthogonal to the Jacobian (cosine "
                       f"{worst:.2g} > {limit:g}): not a least-squares minimum but a plateau or slope the damping "
                       f"could not follow; try a smaller {flag('tol')} or other starting values ({flag('init')})")


def confirm_kink_stop(stop: Stop, limit, rate):
    """A first-order method stopped moving on a loss with kinks: converged only where no nearby step goes down."""
    objective, params, values = stop.objective, stop.params, stop.values
    loss_at, _ = evaluators(objective, params)

    def grad_at(v):
        set_values(params, v)
        return loss_and_gradient(objective, params)[1]

    try:
        slope, where = descent_slope(loss_at, values, stop.gradient, stop.lower, stop.upper, stop.options.tol,
                                     objective.names, grad_at, scales=stop.scales())
    finally:
        set_values(params, values)
    if slope <= limit:
        return "converged", stop.reason
    return "stalled", (f"{stop.method} stopped moving ({stop.reason}) where the loss still falls: along {where} it "
                       f"drops at a slope of {slope:.3g} (> {limit:.3g}), with the rate down to {rate:.3g}: not a "
                       f"minimum; raise {flag('steps')} or {flag('lr')}, or start nearer ({flag('init')})")


def confirm_minimum_stop(stop: Stop):
    """A converged stop other than atol: still converged where `minimum_refuted` finds nothing, else stalled.

    `stop.flat` is the unknowns the loss has no path to (`unreached_unknowns`,
    measured right after `loss_and_gradient` at the point), or None to measure
    it.  The parameters hold the point again afterwards.
    """
    objective, params, values, method, reason = stop.objective, stop.params, stop.values, stop.method, stop.reason
    flat = stop.flat
    if flat is None:
        loss_and_gradient(objective, params)
        flat = unreached_unknowns(objective, params)
    if flat:
        set_values(params, values)
        names = ", ".join(flat)
        return "stalled", (f"{method} stopped ({reason}) where the loss is flat in {names}: it is piecewise "
                           f"constant there (as sign(x) is), so its gradient is zero everywhere, proves nothing "
                           f"about a minimum, and gradient methods cannot move; start elsewhere ({flag('init')}) or "
                           f"use {more_starts(stop.options.starts)}")
    loss_at, hessian_at = evaluators(objective, params)
    atol_applies, smooth = loss_traits(objective)
    try:
        refuted = minimum_refuted(loss_at, hessian_at, values, stop.gradient, stop.lower, stop.upper, smooth=smooth,
                                  eps=stop.eps, names=objective.names, scales=stop.scales())
    finally:
        set_values(params, values)
    if refuted is None:
        if not atol_applies and _slope_at_scale(stop, loss_at(values)):
            # gtol is absolute: -log(x) "converged" at x = 1.5e12, where its gradient 1/x is 6e-13
            unbounded = _unbounded_reason(stop, None)
            if unbounded != reason:
                return "stalled", unbounded
        return "converged", reason
    return "stalled", (f"{method} stopped ({reason}) where the loss is stationary but not at a minimum: "
                       f"{refuted}; start elsewhere ({flag('init')}) or use {more_starts(stop.options.starts)}")


def _slope_at_scale(stop: Stop, loss) -> bool:
    """A step of the unknowns' own size (bounds.unknown_scales) would change the loss by more than sqrt(tol) of
    |loss| at first order: a gradient small in itself but not against the point's scale."""
    slope = projected_max_abs(stop.gradient, stop.values, stop.lower, stop.upper)
    scale = float(np.max(stop.scales())) if len(stop.values) else 0.0
    return slope * scale > stationary_gradient_limit(stop.options.tol, abs(loss), stop.options.dtype)


def short_stop_reason(stop: Stop) -> str:
    """The reason of a run that stopped short (stalled, max_steps): where the loss can go below zero and fell
    from its start, one that says when it seems unbounded below; otherwise the reason as it is."""
    if stop.status in ("stalled", "max_steps") and not loss_traits(stop.objective)[0] and stop.loss < stop.loss0:
        return _unbounded_reason(stop, stop.moving_why)
    return stop.reason


def _unbounded_reason(stop: Stop, moving_why):
    """The stop's reason, or one that says the loss seems unbounded below where `unbounded_below` sees it fall."""
    loss_at, _ = evaluators(stop.objective, stop.params)
    try:
        seen = unbounded_below(loss_at, stop.values, stop.gradient, stop.lower, stop.upper, stop.scales())
    except Exception:  # noqa: BLE001 - a courtesy to the reader; the verdict stands either way
        seen = None
    finally:
        set_values(stop.params, stop.values)
    if seen is None:
        return stop.reason
    loss, distance = seen
    how = f"{stop.method} stopped moving ({moving_why})" if moving_why else stop.reason
    return (f"{how} where the loss seems unbounded below: along the negative gradient it keeps falling, by at least "
            f"half as much at every tenfold step, to {loss:.3g} at a distance {distance:.3g}; there may be no minimum "
            f"to find (bound the unknowns, or check the expression)")


def solved_reason(roundings, dtype="float64") -> str:
    """The reason of a stop where the equations hold to rounding."""
    if roundings == 0:
        return "every residual is exactly 0: the equations hold exactly"
    if dtype == "float32":
        return (f"residuals within {roundings:.2g} float32 roundings of their terms: the equations hold to float32 "
                f"precision ({flag('dtype')} float64 resolves further)")
    return f"residuals within {roundings:.2g} roundings of their terms: the equations hold to float64 precision"


def judge_fit_values(status, reason, values, loss):
    """A fit's status once its coefficients and residual sum of squares are known: diverged where either is
    not finite (a "converged" fit must have a finite answer and loss to show: squares of residuals near 1e154
    and beyond overflow float64), else as it was."""
    if all(math.isfinite(v) for v in values) and math.isfinite(loss):
        return status, reason
    return "diverged", ("the coefficients or the residual sum of squares overflow float64 (values near 1e154 or "
                        "beyond square to infinity): rescale the data, e.g. -y 'y/1e100'")


def judge_unsolved(spec, lowered, outcome, options, reason):
    """Equations left unsatisfied: inconsistent, or did the optimizer stall short of a solution?

    The verdict rests on the loss (sum of squared residuals) at the reported point:
    where it is stationary (projected gradient small against the loss itself,
    components held by a bound ignored) and curves upward in every free direction
    (Hessian positive semidefinite), the point is a local minimum with residuals
    left over: "inconsistent" (for a linear system a proof; for a nonlinear one a
    fact about this neighbourhood, which the message says). Anywhere else, a
    saddle or a slope, the optimizer stalled and the equations may well hold.
    """
    from gradsolve.problem import analysis  # sympy: only for equations left unsolved (fits never load it)

    x = np.asarray(outcome.values, dtype=np.float64)
    held = held_to_rounding(spec, lowered, x, options.dtype)
    if held is not None:
        return "converged", solved_reason(held, options.dtype)
    if outcome.status != "converged":  # a stop that proves nothing more: as it was
        return outcome.status, reason
    lower, upper = optional(*spec.bounds())
    try:
        jac = analysis.jacobian_matrix(lowered, x)
        with gs.no_grad():
            r = lowered.residuals().numpy().astype(np.float64)
        loss = float(r @ r)
        g = 2.0 * jac.T @ r
        free = ~np.array(held_by_bounds(g, x, lower, upper), dtype=bool)
        scales = unknown_scales(x, spec.initial_values(), lower, upper)
        slope = float(np.max(np.abs(g[free]) * scales[free])) if free.any() else 0.0
        stationary = slope <= max(STATIONARY_RTOL, rounding_floor(options.dtype)) * loss
        minimum = stationary
        if stationary and 0 < int(free.sum()) <= HESSIAN_LIMIT:
            s = scales[free]
            H = loss_hessian(lowered, lowered.params, x)[np.ix_(free, free)] * s[:, None] * s[None, :]
            eig = np.linalg.eigvalsh((H + H.T) / 2.0)
            minimum = bool(eig[0] >= -CURVATURE_RTOL * float(np.max(np.abs(eig))))
    except Exception:  # noqa: BLE001 - no verdict possible: say the optimizer stopped
        stationary = minimum = False
    bounded = not bool(free.all()) if stationary else False
    if minimum:
        if analysis.is_linear(spec) and not bounded:
            return "inconsistent", (f"the equations cannot all hold: the least-squares point leaves loss "
                                    f"{_left(outcome.loss, options)} ({reason})")
        near = "within the bounds" if bounded else "near this point"
        return "inconsistent", (f"the equations cannot all hold {near}: the loss has a local minimum "
                                f"{_left(outcome.loss, options)} here ({reason}); other starting "
                                f"points may find a solution ({more_starts(options.starts)})")
    if stationary:
        return "stalled", (f"{outcome.optimizer} stopped ({reason}) where the loss {outcome.loss:.3g} is flat but "
                           f"not at a minimum (a saddle or a maximum): start elsewhere "
                           f"({flag('init')}, {more_starts(options.starts)})")
    advice = (f"a smaller {flag('tol')}, or other starting values ({flag('init')}, {more_starts(options.starts)})"
              if outcome.optimizer == "lm" else
              f"try {flag('optimizer')} lm, which solves to rounding, or accept a bound on the loss ({flag('atol')})")
    return "stalled", (f"{outcome.optimizer} stopped ({reason}) before the equations were satisfied: loss "
                       f"{_left(outcome.loss, options)} and still falling from here; {advice}")


def _left(loss, options) -> str:
    """The loss equations left, in words: against --atol where one was given, else against rounding."""
    if options.atol > 0:
        return f"{loss:.3g} > atol {options.atol:g}"
    return f"{loss:.3g}, residuals above rounding of their terms"


def residual_roundings(r, J, x, constants, eps) -> float:
    """How many roundings of its own terms the worst residual is: max_i |r_i| / (eps * T_i).

    ``T_i = sum_j |J_ij x_j| + constants_i`` is the size of equation i's terms
    (`constants` from analysis.constant_term_sizes, or None for none), which
    scales with the equation and not with an unknown's units: nothing here has a
    floor.  0 where every residual is 0; inf where a residual is not but its terms are.

    >>> residual_roundings([1e-27], [[1.0, 1e-10]], [2.4e-11, 0.26], [5e-11], 2.2e-16)  # doctest: +ELLIPSIS
    0.045...
    """
    r = np.abs(np.asarray(r, dtype=np.float64).reshape(-1))
    if not r.size or not np.any(r):
        return 0.0
    terms = np.abs(np.asarray(J, dtype=np.float64)) @ np.abs(np.asarray(x, dtype=np.float64))
    if constants is not None:
        terms = terms + constants
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(r > 0, r / (eps * terms), 0.0)
    worst = float(np.max(ratio))
    return worst if worst == worst else math.inf


def held_to_rounding(spec, lowered, x, dtype):
    """The residual roundings (`residual_roundings`) at x when at most SOLVED_ROUNDINGS, else None.

    A float32 run is judged in float64 at the same point, against float32's
    epsilon: its loss cannot fall further, but a residual that is wrong (an
    inconsistent system's least-squares point, a small unknown far from its
    value next to a large one) is more than rounding in any precision.
    """
    from gradsolve.problem import analysis  # sympy: see judge_unsolved
    from gradsolve.problem.lowering import lower

    try:
        exact = lowered
        if dtype == "float32":
            exact = lower(spec, dtype=gs.float64, device="cpu")
        saved = exact.values()
        exact.set_values(list(map(float, x)))
        try:
            with gs.no_grad():
                r = np.asarray(exact.residuals().numpy(), dtype=np.float64).reshape(-1)
            jac = analysis.jacobian_matrix(exact, list(map(float, x)))
        finally:
            exact.set_values(saved)
        if not (r.size and np.all(np.isfinite(r)) and np.all(np.isfinite(jac))):
            return None
    except Exception:  # noqa: BLE001 - no verdict possible: the caller judges as before
        return None
    eps = float(np.finfo(np.float32 if dtype == "float32" else np.float64).eps)
    roundings = residual_roundings(r, jac, x, analysis.constant_term_sizes(spec), eps)
    return roundings if roundings <= SOLVED_ROUNDINGS else None
