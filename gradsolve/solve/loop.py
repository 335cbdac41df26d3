"""The solve loop: drive any optimizer over an objective, watch the stopping tests, keep the best point.

Every method is driven the same way: one call of `step()` is one iteration;
after it the loop measures the loss, the gradient and step norms, reports a
progress row, and checks the stopping tests:

* ``atol``: the loss is at most ``atol`` (a solved system).  Only for losses
  that cannot go below zero (sums of squares, or a minimize expression sympy
  proves non-negative): a loss of -5 is not "solved";
* ``gtol``: the largest gradient component is at most ``tol * max(1, g0)``, g0 the first one;
* ``xtol``: the step is at most ``tol * (tol + |x|)``;
* ``ftol``: the relative loss change stays at most ``tol`` for several
  iterations in a row (one flat step of a momentum method proves nothing).

A method that stops moving has not necessarily arrived: the plateau rule can
shrink a first-order method's rate to nothing on a slope, and L-BFGS's line
search can fail. So on a smooth loss (and always for L-BFGS) the xtol and
ftol tests count as convergence only when the gradient is small too
(``sqrt(tol) * max(1, g0)``); otherwise the status is "stalled".  On a loss
with kinks (abs, min, max) a shrinking rate is how a first-order method
settles on the kink, whose gradient never vanishes, so it stands.

The result is the best point seen, not the last. NaN or infinity stops the run
at once ("diverged") and reports the last finite point; Ctrl-C stops it
("interrupted") with the best point so far.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

import gradsolve as gs
from gradsolve import optim

FIRST_ORDER = ("sgd", "adadelta", "adam", "adamw", "nadam", "rmsprop", "adagrad")
METHODS = ("auto",) + FIRST_ORDER + ("lbfgs", "lm")

# Learning rates for problems (unknowns of order 1 to 10, losses that reach zero): PyTorch's
# defaults are tuned for training networks and crawl here (Adam's 1e-3 needs 10,000 steps to move
# an unknown by 10). SGD gets 1/L from the curvature at the start instead (see _sgd_rate).
DEFAULT_LR = {"adam": 0.1, "adamw": 0.1, "nadam": 0.1, "rmsprop": 0.01, "adagrad": 0.5, "adadelta": 1.0,
              "lbfgs": 1.0}
FTOL_PATIENCE = 5
LM_POLISH_STEPS = 5    # at most this many LM steps once the loss is below atol ...
LM_POLISH_GAIN = 10.0  # ... each while the loss still falls by this factor


class SolveError(ValueError):
    """A combination of options that cannot work (reported as bad usage)."""


@dataclass
class SolveOptions:
    optimizer: str = "auto"
    lr: float | None = None
    steps: int = 10000
    tol: float = 1e-12
    atol: float = 1e-20
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float64"
    every: int | None = None
    trace: bool = True  # evaluate a traced copy of the graph (gradsolve.solve.trace); False: the engine
    starts: int = 1  # >1: batched multistart (gradsolve.solve.multistart)


@dataclass
class ProgressRow:
    step: int
    loss: float
    loss_change: float | None
    gradient_norm: float | None
    step_norm: float | None
    rate: float | None  # learning rate, or the damping for Levenberg-Marquardt
    rate_name: str
    values: dict
    elapsed_s: float


@dataclass
class Outcome:
    status: str  # converged | stalled | max_steps | diverged | interrupted (inconsistent: decided by the caller)
    stop_reason: str
    optimizer: str
    steps: int
    loss: float
    gradient_norm: float | None
    values: np.ndarray
    elapsed_s: float
    loss_history: list = field(default_factory=list)
    at_bounds: list = field(default_factory=list)
    jacobian: np.ndarray | None = None


def choose_method(requested: str, *, has_residuals: bool, smooth: bool, bounded: bool) -> str:
    """The method `auto` stands for: LM for residual problems, L-BFGS for smooth losses, Adam otherwise."""
    if requested not in METHODS:
        raise SolveError(f"unknown optimizer {requested!r}: choose one of {', '.join(METHODS)}")
    if requested == "auto":
        if has_residuals:
            return "lm"
        return "lbfgs" if smooth and not bounded else "adam"
    if requested == "lm" and not has_residuals:
        raise SolveError("--optimizer lm needs equations or residuals; a 'minimize' loss has no residual vector "
                         "(use lbfgs or adam)")
    if requested == "lbfgs" and bounded:
        raise SolveError("--optimizer lbfgs does not support bounds (min/max on unknowns): use lm, adam or sgd")
    return requested


def _values(params) -> np.ndarray:
    return np.array([float(p.item()) for p in params], dtype=np.float64)


def _set_values(params, values):
    with gs.no_grad():
        for p, v in zip(params, values):
            p._assign_(p._xp.asarray(v, dtype=p._data.dtype))


def _project(params, lower, upper):
    """Clip each unknown into its bounds (first-order methods project after every step)."""
    with gs.no_grad():
        for p, lo, hi in zip(params, lower, upper):
            if lo is None and hi is None:
                continue
            v = float(p.item())
            clipped = min(max(v, lo if lo is not None else -math.inf), hi if hi is not None else math.inf)
            if clipped != v:
                p._assign_(p._xp.asarray(clipped, dtype=p._data.dtype))


def held_by_bounds(g, x, lower, upper) -> list[bool]:
    """Which components of the gradient g at x a bound holds: descent (-g) would leave the box there.

    Those components say nothing about whether x is a minimum (of the bounded
    problem), so the gradient tests ignore them (the projected gradient).
    """
    return [(lo is not None and xi <= lo and gi > 0) or (hi is not None and xi >= hi and gi < 0)
            for gi, xi, lo, hi in zip(g, x, lower, upper)]


def projected_max_abs(g, x, lower, upper) -> float:
    """max |g_i| over the components no bound holds (see held_by_bounds)."""
    held = held_by_bounds(g, x, lower, upper)
    return max((abs(float(gi)) for gi, h in zip(g, held) if not h), default=0.0)


def _gradient(objective, params):
    for p in params:
        p.grad = None
    loss = objective.loss()
    loss.backward()
    grad = np.array([0.0 if p.grad is None else float(p.grad.item()) for p in params])
    return float(loss.item()), grad


def _sgd_rate(objective, params) -> float:
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


def _make_optimizer(method, point, objective, options, lower, upper):
    """The optimizer for `method` over `point.params`, and its learning rate (None for lm)."""
    lr = options.lr
    params = point.params
    if method == "lm":
        # atol is judged by the loop (below), which lets LM polish a few more steps first.
        return point.make_lm(xtol=options.tol, ftol=options.tol, gtol=0.0, atol=0.0, lower=lower,
                             upper=upper), None
    if method == "lbfgs":
        return optim.LBFGS(params, lr=lr or DEFAULT_LR["lbfgs"], max_iter=1, max_eval=25, tolerance_grad=0.0,
                           tolerance_change=0.0, history_size=50, line_search_fn="strong_wolfe"), lr or 1.0
    if method == "sgd":
        lr = lr or _sgd_rate(objective, objective.params)
        return optim.SGD(params, lr=lr), lr
    lr = lr or DEFAULT_LR[method]
    return FIRST_ORDER_CLASSES[method](params, lr=lr), lr


FIRST_ORDER_CLASSES = {"sgd": optim.SGD, "adadelta": optim.Adadelta, "adam": optim.Adam, "adamw": optim.AdamW,
                       "nadam": optim.NAdam, "rmsprop": optim.RMSprop, "adagrad": optim.Adagrad}


class EagerPoint:
    """The unknowns as the engine's 0-d leaf tensors: what the loop moves when nothing is traced."""

    label = "eager"

    def __init__(self, objective):
        self.objective = objective
        self.params = objective.params  # what the optimizer updates

    def values(self) -> np.ndarray:
        return _values(self.params)

    def set_values(self, values) -> None:
        _set_values(self.params, values)

    def project(self, lower, upper) -> None:
        _project(self.params, lower, upper)

    def loss_grad(self):
        """(loss, gradient array) at the current point; leaves each parameter's .grad set."""
        return _gradient(self.objective, self.params)

    def loss(self) -> float:
        with gs.no_grad():
            return float(self.objective.loss().item())

    def closure(self):
        objective = self.objective

        def closure():
            for p in self.params:
                p.grad = None
            value = objective.loss()
            value.backward()
            return value

        return closure

    def make_lm(self, **settings):
        return optim.LevenbergMarquardt(self.params, residuals=self.objective.residuals, **settings)


class _Watch:
    """Bookkeeping shared by every loop: best point, history, the stopping tests, progress rows."""

    def __init__(self, options, method, names, on_progress, every, start, x0, *, atol_applies=True, smooth=True):
        self.options, self.method, self.names = options, method, names
        self.atol_applies, self.smooth = atol_applies, smooth
        self.on_progress, self.every, self.start = on_progress, every, start
        self.best_loss, self.best_x = math.inf, list(x0)
        self.last_finite_x = list(x0)
        self.history = []
        self.prev_loss = None
        self.flat_steps = 0
        self.first_grad_norm = None
        self.polish_steps = 0
        self.current_step = 0

    def offer(self, loss, x) -> None:
        """A loss measured at x (before a step): it may be the best point."""
        if loss < self.best_loss:
            self.best_loss, self.best_x = loss, list(x)

    def observe(self, step, loss_now, grad_norm, step_norm, x_norm, x_new, rate, rate_name, lm_stop=None):
        """After a step: None to go on, or (status, reason) to stop."""
        options = self.options
        if not (math.isfinite(loss_now) and all(map(math.isfinite, x_new))):
            return "diverged", f"the loss became {loss_now} at step {step}"
        self.last_finite_x = list(x_new)
        self.history.append(loss_now)
        prev_loss = self.prev_loss
        change = None if prev_loss is None else loss_now - prev_loss
        if loss_now < self.best_loss:
            self.best_loss, self.best_x = loss_now, list(x_new)
        if self.first_grad_norm is None:
            self.first_grad_norm = grad_norm
        stop = None
        if lm_stop is not None:
            code, converged = lm_stop
            if converged and self.atol_applies and loss_now <= options.atol:
                # polished past atol until its own test stopped it: the loss is the news, not the test
                stop = ("converged", f"loss {loss_now:.3g} <= atol {options.atol:g}")
            elif converged:
                stop = ("converged", _lm_reason(code, options))
            elif code == "nonfinite":
                stop = ("diverged", f"the Jacobian is not finite at step {step} (a function at the edge of its "
                                    f"domain, such as sqrt or log at 0): start inside the domain (--init) or bound "
                                    f"the unknowns")
            else:
                stop = ("converged", "no damping gives a further decrease (stalled at a minimum)")
        elif self.atol_applies and loss_now <= options.atol:
            if (self.method == "lm" and self.polish_steps < LM_POLISH_STEPS and prev_loss is not None
                    and prev_loss > LM_POLISH_GAIN * loss_now):
                # Still converging quadratically: each Gauss-Newton step is cheap and doubles the
                # correct digits, so a loss of 1e-21 (residuals ~3e-11) becomes one at rounding level.
                self.polish_steps += 1
            else:
                stop = ("converged", f"loss {loss_now:.3g} <= atol {options.atol:g}")
        elif grad_norm is not None and grad_norm <= options.tol * max(1.0, self.first_grad_norm or 0.0):
            stop = ("converged", f"gradient norm {grad_norm:.3g} <= tol * max(1, initial gradient norm) (gtol)")
        elif self.method != "lm" and step_norm <= options.tol * (options.tol + x_norm):
            stop = self._stopped_moving(f"step {step_norm:.3g} <= tol * |x| (xtol)", grad_norm)
        elif change is not None and abs(change) <= options.tol * max(abs(prev_loss), 1e-300):
            self.flat_steps += 1
            if self.flat_steps >= FTOL_PATIENCE or self.method == "lbfgs":
                stop = self._stopped_moving("relative loss change <= tol (ftol)", grad_norm)
        else:
            self.flat_steps = 0
        if self.on_progress is not None and (stop is not None or step % self.every == 0 or step == 1
                                             or step == options.steps):
            self.on_progress(ProgressRow(step, loss_now, change, grad_norm, step_norm, rate, rate_name,
                                         dict(zip(self.names, map(float, x_new))), time.perf_counter() - self.start))
        self.prev_loss = loss_now
        return stop

    def _stopped_moving(self, why, grad_norm):
        """xtol or ftol fired: converged, or stalled when the gradient says this is no minimum."""
        limit = stationary_gradient_limit(self.options.tol, self.first_grad_norm)
        needs_gradient = self.smooth or self.method == "lbfgs"
        if needs_gradient and grad_norm is not None and grad_norm > limit:
            return "stalled", stalled_reason(self.method, why, grad_norm, limit)
        return "converged", why


def stationary_gradient_limit(tol, first_grad_norm):
    """The largest gradient a point may have and still count as a minimum once the steps stop."""
    return math.sqrt(tol) * max(1.0, first_grad_norm or 0.0)


def stalled_reason(method, why, grad_norm, limit):
    advice = "use lbfgs, or lm for equations" if method != "lbfgs" else "try lm for equations, or adam"
    return (f"{method} stopped moving ({why}) where the gradient norm {grad_norm:.3g} is not small "
            f"(> {limit:.3g}): not a minimum; {advice}")


def loss_traits(objective) -> tuple[bool, bool]:
    """(atol applies, smooth) for an objective: see `run`."""
    return (bool(getattr(objective, "atol_applies", objective.residuals is not None)),
            bool(getattr(objective, "smooth", True)))


def run(objective, options: SolveOptions, *, method: str, lower=None, upper=None,
        on_progress: Callable[[ProgressRow], None] | None = None, every: int = 1, point=None) -> Outcome:
    """Minimize `objective` with `method`, reporting a progress row every `every` steps.

    `objective` has `params` (0-d leaf tensors), `names`, `loss()` (0-d tensor) and
    `residuals` (a closure returning the 1-D residual tensor, or None).  `point` is
    what the optimizer moves: the objective's own tensors (`EagerPoint`, the
    default) or a traced stand-in (`gradsolve.solve.trace.TracedPoint`) with the
    same methods; the reported point is always evaluated afresh on `objective`.
    An objective may say `atol_applies` (default: it has residuals): its loss
    cannot go below zero; and `smooth` (default True): False for a loss with
    kinks (see the module doc).
    """
    atol_applies, smooth = loss_traits(objective)
    params = objective.params
    point = point if point is not None else EagerPoint(objective)
    n = len(params)
    lower = list(lower) if lower is not None else [None] * n
    upper = list(upper) if upper is not None else [None] * n
    bounded = any(v is not None for v in lower + upper)
    point.project(lower, upper)
    _set_values(params, point.values())
    opt, lr = _make_optimizer(method, point, objective, options, lower, upper)
    plateau = None
    if method in FIRST_ORDER and method != "sgd":
        # Halve the rate when the best loss stalls, so that adaptive methods settle on a point
        # (a fixed rate makes Adam circle a minimum forever, most visibly on non-smooth losses).
        plateau = optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=50, threshold=1e-3,
                                                       min_lr=0.0, eps=0.0)

    start = time.perf_counter()
    x = point.values()
    watch = _Watch(options, method, objective.names, on_progress, every, start, x, atol_applies=atol_applies,
                   smooth=smooth)
    status, reason = "max_steps", f"reached the step limit ({options.steps})"
    step = 0
    fast = getattr(point, "fast_first_order", None)
    try:
        with np.errstate(all="ignore"):
            loss0 = point.loss()
        if not math.isfinite(loss0):
            # nothing to descend from: say where, rather than "became nan" after a step that never ran
            status = "diverged"
            reason = (f"the loss is {loss0} at the starting point (a function outside its domain, such as sqrt or "
                      f"log of a negative number): start elsewhere (--init) or bound the unknowns")
            step = 0
        elif method in FIRST_ORDER and fast is not None:
            step, stop = fast(opt, plateau, watch, lower, upper, options.steps)
            if stop is not None:
                status, reason = stop
        else:
            step, stop = _iterate(point, opt, method, lr, plateau, watch, lower, upper, bounded, options.steps)
            if stop is not None:
                status, reason = stop
    except KeyboardInterrupt:
        status, reason = "interrupted", f"interrupted at step {watch.current_step}"
        step = watch.current_step
    elapsed = time.perf_counter() - start

    # Report the best point seen, evaluated afresh on the engine.
    _set_values(params, watch.best_x if math.isfinite(watch.best_loss) else watch.last_finite_x)
    final_loss, g = _gradient(objective, params)
    jacobian = None
    if method == "lm":
        try:
            jac = gs.autograd.functional.jacobian(objective.residuals, params)
            jacobian = np.stack([j.numpy().reshape(-1) for j in jac], axis=1) if jac else None
        except Exception:  # noqa: BLE001 - the Jacobian is a courtesy for statistics
            jacobian = None
    values = _values(params)
    at_bounds = [name for name, v, lo, hi in zip(objective.names, values, lower, upper)
                 if (lo is not None and v <= lo) or (hi is not None and v >= hi)]
    return Outcome(status=status, stop_reason=reason, optimizer=method, steps=step, loss=final_loss,
                   gradient_norm=float(np.max(np.abs(g))) if g.size else 0.0, values=values,
                   elapsed_s=elapsed, loss_history=watch.history, at_bounds=at_bounds, jacobian=jacobian)


def _iterate(point, opt, method, lr, plateau, watch, lower, upper, bounded, steps):
    """The loop for every method and point: returns (steps run, (status, reason) or None)."""
    x = point.values()
    step = 0
    for step in range(1, steps + 1):
        watch.current_step = step
        if method == "lm":
            loss_now = float(opt.step())
            x_new = point.values()
            jacobian = opt.jacobian
            g = 2.0 * jacobian.T @ opt.residuals if jacobian is not None else None
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
                watch.prev_loss = loss_before
        else:
            opt.zero_grad()
            loss_before, g = point.loss_grad()
            if not math.isfinite(loss_before):
                return step, ("diverged", f"the loss became {loss_before} at step {step}")
            watch.offer(loss_before, x)
            opt.step()
            if bounded:
                point.project(lower, upper)
            x_new = point.values()
            rate, rate_name = float(opt.param_groups[0]["lr"]), "lr"
            grad_norm = float(np.max(np.abs(g))) if g.size else 0.0
            if bounded:
                grad_norm = projected_max_abs(g, x, lower, upper)
            loss_now = point.loss()
            if plateau is not None:
                plateau.step(loss_now)
        step_norm = float(np.linalg.norm(x_new - x))
        lm_stop = None
        if method == "lm" and opt.stop_reason is not None:
            lm_stop = (opt.stop_reason, opt.converged)
        stop = watch.observe(step, loss_now, grad_norm, step_norm, float(np.linalg.norm(x_new)), x_new, rate,
                             rate_name, lm_stop)
        if stop is not None:
            if stop[0] == "diverged":
                point.set_values(watch.last_finite_x)
            return step, stop
        x = x_new
    return step, None


def _lm_reason(code: str, options: SolveOptions) -> str:
    return {
        "atol": f"loss <= atol {options.atol:g}",
        "gtol": "gradient below tol (gtol)",
        "xtol": "step below tol * |x| (xtol)",
        "ftol": "relative loss reduction below tol (ftol)",
    }.get(code, code)
