"""The solve loop: drive any optimizer over an objective, watch the stopping tests, keep the best point.

Every method is driven the same way: one call of `step()` is one iteration;
after it the loop measures the loss, the gradient and step norms, reports a
progress row, and checks the stopping tests:

* ``atol``: the loss is at most ``atol`` (a solved system).  Only for losses
  that cannot go below zero (sums of squares, or a minimize expression sympy
  proves non-negative): a loss of -5 is not "solved";
* ``gtol``: the largest gradient component is at most ``tol * max(1, g0)``, g0 the first one;
* ``xtol``: the step is at most ``tol * (tol + |x|)`` (first-order methods: for
  several iterations in a row, as ftol);
* ``ftol``: the relative loss change stays at most ``tol`` for several
  iterations in a row (one flat step of a momentum method proves nothing).

A method that stops moving has not necessarily arrived: a rate shrunk on a
slope, a failed line search, or Levenberg-Marquardt's damping on a plateau all
stop the steps short of a minimum. So xtol and ftol (and LM's "no damping
helps") count as convergence only where the point is stationary, and the
status is "stalled" otherwise:

* smooth losses (and always L-BFGS): the gradient is small,
  ``max |g| <= sqrt(tol) * max(1, g0)`` (in float32 at least sqrt(eps32) * max(1, g0):
  see `rounding_floor`);
* losses with kinks (abs, min, max), first-order methods: the gradient of a kink
  never vanishes, so the loss itself is probed at the reported point, a small
  step (``sqrt(tol)`` of the unknowns' scale) along the shortest combination of
  gradients sampled nearby, the negative gradient and both ways along each
  unknown's axis: a fall faster than the same limit in any of those directions
  means the run stopped on a slope (see `descent_slope`);
* Levenberg-Marquardt (its own xtol and ftol, no damping that helps, and the
  loop's gtol and ftol alike): the residual is orthogonal to the Jacobian,
  MINPACK's scale-invariant gtol test: the cosine between r and every free
  column of J is at most ``max(LM_COSINE_LIMIT, sqrt(tol))``, rounding in r
  allowed for (`lm_cosines`), so fits whose minimum has residuals left converge
  as usual; a column that fails counts only where the loss does not curve up
  along it (`_confirm_lm_stop`: a derivative that vanishes at a minimum, as
  d(b**2)/db at b = 0, is no slope; a model's saturated plateau is).

The gradient tests of xtol and ftol are judged again at the reported point
(the best one seen, not the last step).  A small gradient is not a minimum
either: a maximum or a saddle has a zero gradient too (cos(x) at 0, x**2 - y**2
at the origin).  So every converged stop but atol (a loss proven >= 0 that
reached atol is at a minimum) is confirmed at the reported point by
`confirm_minimum_stop`: a loss with no path to some unknowns (sign(x): piecewise
constant, its zero gradient proves nothing) is "stalled"; otherwise the loss
Hessian (`minimum_refuted`, up to HESSIAN_LIMIT free unknowns) may not curve
down in any direction, and along the directions where it is numerically zero
the loss may not fall beyond rounding (x**3 at 0).  Where Levenberg-Marquardt
stops at such a point, or at a degenerate minimum whose flat valley leads to
negative curvature, it continues from a clearly lower point along that
curvature (`escape_point`), at most ESCAPE_LIMIT times: Gauss-Newton steps
cannot see negative curvature.  A run that did not converge on a loss that
keeps falling ever further along the negative gradient says that the loss seems
unbounded below (`unbounded_below`).

Adaptive first-order methods run under `RateRule`: the rate halves when the
best loss stalls and doubles while the loss falls at every step, so a long
slope is crossed instead of crawled.

The result is the best point seen, not the last, for every status: NaN or
infinity stops the run at once ("diverged") and the best finite point seen is
reported; Ctrl-C stops it ("interrupted") with the best point so far.
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
MAX_STARTS = 1_000_000  # the most starts one batch takes (--starts)
# RateRule (adaptive first-order methods): halve the rate when the best loss has not improved by
# PLATEAU_THRESHOLD (relative) for more than PLATEAU_PATIENCE steps, unless the loss fell steadily at every one
# of them; double it once the loss has fallen at every step for GROW_AFTER steps, up to GROW_LIMIT times the start.
PLATEAU_FACTOR = 0.5
PLATEAU_PATIENCE = 50
PLATEAU_THRESHOLD = 1e-3
GROW_AFTER = 100
GROW_SPREAD = 1.5  # ... by amounts within this factor of each other (a straight slope, not a curved valley)
GROW_LIMIT = 2.0 ** 20
# Levenberg-Marquardt counts a stop short of atol as convergence only where every cosine between the residual
# and a free Jacobian column is at most max(LM_COSINE_LIMIT, sqrt(tol)) (rounding in the residual, at most about
# eps * |J diag(x)|, discounted LM_ROUNDING_SLACK times), or, for a column that fails, where the loss curves up
# along it: a step of the parameter's size max(1, |x_j|) raises it by at least LM_CURVATURE_RTOL of itself,
# and a Newton step along it would lower it by at most limit**2 of itself (see _confirm_lm_stop).
LM_COSINE_LIMIT = 1e-5
LM_ROUNDING_SLACK = 100.0
LM_CURVATURE_RTOL = 1e-6
# A stop on a loss with kinks is probed (descent_slope) with SAMPLED_GRADIENTS * (n + 1) gradients near the
# point and along each unknown's axis, up to AXIS_PROBE_LIMIT unknowns.
AXIS_PROBE_LIMIT = 100
SAMPLED_GRADIENTS = 4
LM_POLISH_STEPS = 5    # at most this many LM steps once the loss is below atol ...
LM_POLISH_GAIN = 10.0  # ... each while the loss still falls by this factor
# A converged stop other than atol is confirmed a local minimum (minimum_refuted) up to HESSIAN_LIMIT free unknowns:
# the loss Hessian, in the unknowns' scale max(1, |x_j|), may have no eigenvalue below -CURVATURE_RTOL times
# max(1, its largest |eigenvalue|).  1e-8 is about sqrt(eps): the Hessian comes from exact double-backward passes,
# so rounding moves its eigenvalues by far less than that at the scale of the largest (1e-15 to 1e-12 on the NIST
# fits' degenerate points), while any curvature a user could see is far larger (the saddles here have -1 to -16).
# In float32 the Hessian carries float32 rounding: sqrt(eps) there (3.5e-4) instead (curvature_rtol).
# Eigenvalues within the same bound are numerically zero: along those directions the loss is probed a step of
# PROBE_STEP of the unknowns' scale away (and twice that), both ways; a fall at both beyond what the gradient
# explains plus rounding (PROBE_ROUNDING * eps * |F|, or 8 times the loss's change under perturbations of the
# unknowns at rounding level, whichever is larger) means a degenerate saddle such as x**3 at 0.
HESSIAN_LIMIT = 200
CURVATURE_RTOL = 1e-8
PROBE_STEP = 1e-4
PROBE_ROUNDING = 16.0
# After a run that did not converge, a loss that keeps falling along the negative gradient by more at every tenfold
# step, out to UNBOUNDED_REACH times the unknowns' scale, is said to seem unbounded below.
UNBOUNDED_REACH = 6  # powers of ten
# Levenberg-Marquardt at a saddle, or at a degenerate minimum whose flat valley leads to negative curvature
# (escape_point): continue from a clearly lower point found along that curvature, at most ESCAPE_LIMIT times.
ESCAPE_LIMIT = 5
ESCAPE_DIRECTIONS = 3  # flat directions walked along
ESCAPE_WALK = (0.1, 0.5, 1.0)  # how far, in the unknowns' scale
ESCAPE_RISE = 1e-6  # the relative rise of the loss along a flat direction still counted as the valley's floor
ESCAPE_LEVEL = 1e-9  # the least relative fall of the loss that counts
ESCAPE_STEPS = (0.01, 0.1, 1.0)  # steps along the negative curvature, in the unknowns' scale


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
    atol_stop: bool = False  # converged because the loss reached atol (a proven minimum: nothing to confirm)
    not_minimum: bool = False  # stalled at a point confirm_minimum_stop refuted (a saddle, a maximum, a flat step)


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
    """(loss, gradient) at the parameters' values; leaves each parameter's .grad set (None: no path to it)."""
    for p in params:
        p.grad = None
    loss = objective.loss()
    if loss.requires_grad:  # a loss with no path to the unknowns (sign(x): piecewise constant) has gradient 0
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
    # the loss as written is what is minimized: no weight decay (AdamW's default of 1e-2 would pull every
    # unknown toward 0 and no equation would hold); a fit's parameter groups may still set one
    return FIRST_ORDER_CLASSES[method](params, lr=lr, weight_decay=0.0), lr


class RateRule:
    """The learning-rate rule of the adaptive first-order methods; ``step(loss)`` after every step.

    * halve: the best loss has not improved by PLATEAU_THRESHOLD (relative) for
      more than PLATEAU_PATIENCE steps (a fixed rate makes Adam circle a minimum
      forever, most visibly on a kink), but not while the loss fell steadily at
      every one of those steps: that is a long slope, where a smaller rate only crawls;
    * double: the loss has fallen at every step for GROW_AFTER steps in a row, by
      amounts within GROW_SPREAD of each other (a straight slope and a rate too
      small for the distance to go), up to GROW_LIMIT times the starting rate.
      Falls that shrink or vary (a curved valley, a minimum ahead) do not count.

    Without the second rule a loss that falls linearly but slowly against its
    size (abs(x - 100000) from 0, 0.1 a step) looks stalled to the first one,
    and the rate is halved to nothing far from the minimum.
    """

    def __init__(self, optimizer):
        self.group = optimizer.param_groups[0]
        self.ceiling = float(self.group["lr"]) * GROW_LIMIT
        self.best = math.inf
        self.bad_steps = 0  # steps since the best loss last improved by the threshold
        self.falling = 0  # steps in a row at which the loss fell by about the same amount
        self.drop_lo = self.drop_hi = None  # the smallest and largest of those falls
        self.last = None

    def step(self, loss) -> None:
        loss = float(loss)
        drop = self.last - loss if self.last is not None else 0.0
        self.last = loss
        if drop > 0 and self.falling and max(self.drop_hi, drop) <= GROW_SPREAD * min(self.drop_lo, drop):
            self.falling += 1
            self.drop_lo, self.drop_hi = min(self.drop_lo, drop), max(self.drop_hi, drop)
        elif drop > 0:
            self.falling, self.drop_lo, self.drop_hi = 1, drop, drop
        else:
            self.falling = 0
        if loss < self.best * (1.0 - PLATEAU_THRESHOLD):
            self.best, self.bad_steps = loss, 0
        else:
            self.bad_steps += 1
        if self.falling >= GROW_AFTER:
            self.group["lr"] = min(float(self.group["lr"]) * 2.0, self.ceiling)
            self.falling = self.bad_steps = 0
        elif self.bad_steps > PLATEAU_PATIENCE and self.falling <= PLATEAU_PATIENCE:
            self.group["lr"] = float(self.group["lr"]) * PLATEAU_FACTOR
            self.bad_steps = 0


def descent_slope(loss_at, x, g, lower, upper, tol, names=None, grad_at=None):
    """The steepest fall of the loss from x over a small step: (slope, direction), slope <= 0 at a minimum.

    For losses with kinks, whose gradient says nothing at a kink.  The loss
    (``loss_at(values)``) is evaluated a step h = ``sqrt(tol)`` (at least 1e-8) of
    the unknowns' scale away from x, each step clipped into the bounds, along

    * the shortest vector in the convex hull of the gradients (``grad_at``) at x
      and at SAMPLED_GRADIENTS * (n + 1) random points within h of it, negated:
      gradient sampling (Burke, Lewis and Overton, 2005).  Where x sits in a
      kinked valley (100*abs(y - x^2) + abs(1 - x)) the gradients of both sides
      nearly cancel, and what is left points along the valley;
    * the negative gradient, and both ways along each unknown's axis;

    (components a bound holds left out; sampling and axes up to AXIS_PROBE_LIMIT
    unknowns).  The slope is the loss's fall divided by the step's length.  At a
    kink minimum reached to within h every such step goes uphill; where the run
    stopped on a slope (a rate shrunk to nothing) one of them goes down at about
    the slope's rate.  A fall is only ever measured, never inferred, so a point
    is called a slope only where the loss was seen to fall.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    lo = np.array([-math.inf if v is None else v for v in lower], dtype=np.float64)
    hi = np.array([math.inf if v is None else v for v in upper], dtype=np.float64)
    rel = math.sqrt(tol) if tol > 1e-16 else 1e-8
    f0 = loss_at(x)
    if not math.isfinite(f0) or n == 0:
        return 0.0, None
    held = np.array(held_by_bounds(g, x, lower, upper), dtype=bool)
    length = rel * max(1.0, float(np.max(np.abs(x))))
    directions = []

    def along(d, label):
        norm = float(np.linalg.norm(d))
        if norm > 0 and math.isfinite(norm):
            directions.append((d / norm * length, label))

    if grad_at is not None and n <= AXIS_PROBE_LIMIT:
        rng = np.random.default_rng(0)
        radius = rel * np.maximum(1.0, np.abs(x))
        gradients = [np.asarray(g, dtype=np.float64)]
        for _ in range(SAMPLED_GRADIENTS * (n + 1)):
            gi = np.asarray(grad_at(np.clip(x + radius * rng.uniform(-1.0, 1.0, n), lo, hi)), dtype=np.float64)
            if np.all(np.isfinite(gi)):
                gradients.append(gi)
        along(-_min_norm_point(np.where(held, 0.0, np.array(gradients))), "the nearby gradients' shortest combination")
    along(-np.where(held, 0.0, np.asarray(g, dtype=np.float64)), "the negative gradient")
    if n <= AXIS_PROBE_LIMIT:
        for i in range(n):
            for sign in (1.0, -1.0):
                step = np.zeros(n)
                step[i] = sign * rel * max(1.0, abs(float(x[i])))
                name = names[i] if names is not None else f"unknown {i + 1}"
                directions.append((step, f"{'+' if sign > 0 else '-'}{name}"))
    best, where = -math.inf, None
    for step, label in directions:
        trial = np.clip(x + step, lo, hi)
        moved = float(np.linalg.norm(trial - x))
        if moved == 0.0:
            continue
        f1 = loss_at(trial)
        if math.isfinite(f1) and (f0 - f1) / moved > best:
            best, where = (f0 - f1) / moved, label
    return (best if where is not None else 0.0), where


def _min_norm_point(G, iterations=1000):
    """The shortest vector in the convex hull of the rows of G (Frank-Wolfe with exact line search)."""
    v = G[int(np.argmin(np.einsum("ij,ij->i", G, G)))].copy()
    for _ in range(iterations):
        s = G[int(np.argmin(G @ v))]
        d = v - s
        gap = float(v @ d)
        if gap <= 1e-15 * float(v @ v) or not float(d @ d) > 0:
            break
        v = v - min(1.0, gap / float(d @ d)) * d
    return v


def lm_cosines(J, r, x, lower, upper, eps) -> np.ndarray:
    """MINPACK's gtol measure per column: |cos| between the residual r and each column of J (0 where none).

    ``cos_j = |J_j . r| / (|J_j| |r|)`` is scale-invariant (rescaling a parameter
    or the residuals changes nothing) and zero at every least-squares minimum, also
    one with residuals left over: cos_j**2 is the fraction of the loss that moving
    parameter j alone would remove if r were linear in it.  A column a bound holds
    (descent would leave the box) and a zero column count 0.  Rounding: r carries
    an error of at most about eps times the size of the terms it is computed from,
    ``|J diag(x)|`` (the parameters' contributions), so r's component along J_j
    is discounted by LM_ROUNDING_SLACK times that: residuals at rounding level
    (data the model follows exactly) are no evidence of a slope.
    """
    J = np.asarray(J, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros(J.shape[1] if J.ndim == 2 else 0)
    if J.size == 0 or r.size == 0:
        return out
    column_norms = np.linalg.norm(J, axis=0)
    g = J.T @ r  # half the gradient of the loss
    free = ~np.array(held_by_bounds(g, x, lower, upper), dtype=bool) & (column_norms > 0)
    rnorm = float(np.linalg.norm(r))
    if not (free.any() and rnorm > 0):
        return out
    floor = LM_ROUNDING_SLACK * eps * float(np.linalg.norm(J * x[None, :]))
    with np.errstate(all="ignore"):
        out[free] = np.maximum(np.abs(g[free]) / column_norms[free] - floor, 0.0) / rnorm
    return np.where(np.isnan(out), math.inf, out)


def lm_cosine_limit(tol, dtype="float64") -> float:
    """The largest cosine (lm_cosines) at which a Levenberg-Marquardt stop counts as converged."""
    return max(LM_COSINE_LIMIT, math.sqrt(tol) if tol == tol else 0.0, rounding_floor(dtype))


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
            if value.requires_grad:  # no path to the unknowns: gradient 0 (see _gradient)
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
        self.still_steps = 0  # consecutive steps below xtol
        self.first_grad_norm = None
        self.polish_steps = 0
        self.current_step = 0
        self.confirm = None  # "lm", "kink" or "gradient": a stop that run() must confirm at the reported point
        self.moving_why = None  # the test that fired when the steps stopped (xtol, ftol): see _stopped_moving
        self.at_atol = False  # stopped because the loss reached atol: a proven minimum, no curvature check

    def offer(self, loss, x) -> None:
        """A loss measured at x (before a step): it may be the best point."""
        if loss < self.best_loss:
            self.best_loss, self.best_x = loss, list(x)

    def observe(self, step, loss_now, grad_norm, step_norm, x_norm, x_new, rate, rate_name, lm_stop=None):
        """After a step: None to go on, or (status, reason) to stop.

        For Levenberg-Marquardt `lm_stop` is its (stop_reason, converged) once it
        stopped.  A converged verdict that rests on the steps stopping is
        provisional (``confirm``): `run` confirms it at the reported point.
        """
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
        small_step = self.method != "lm" and step_norm <= options.tol * (options.tol + x_norm)
        self.still_steps = self.still_steps + 1 if small_step else 0
        if lm_stop is not None:
            code, _ = lm_stop
            if code == "nonfinite":
                stop = ("diverged", f"the Jacobian is not finite at step {step} (a function at the edge of its "
                                    f"domain, such as sqrt or log at 0): start inside the domain (--init) or bound "
                                    f"the unknowns")
            elif self.atol_applies and loss_now <= options.atol:
                # polished past atol until its own test stopped it: the loss is the news, not the test
                stop = ("converged", f"loss {loss_now:.3g} <= atol {options.atol:g}")
                self.at_atol = True
            elif code in ("atol", "gtol"):  # F <= atol, or a gradient that is zero (to machine precision)
                stop = ("converged", _lm_reason(code, options))
            else:  # a small step, a small reduction, or no damping that helps
                stop = self._lm_stopped(_lm_reason(code, options))
        elif self.atol_applies and loss_now <= options.atol:
            if (self.method == "lm" and self.polish_steps < LM_POLISH_STEPS and prev_loss is not None
                    and prev_loss > LM_POLISH_GAIN * loss_now):
                # Still converging quadratically: each Gauss-Newton step is cheap and doubles the
                # correct digits, so a loss of 1e-21 (residuals ~3e-11) becomes one at rounding level.
                self.polish_steps += 1
            else:
                stop = ("converged", f"loss {loss_now:.3g} <= atol {options.atol:g}")
                self.at_atol = True
        elif grad_norm is not None and grad_norm <= options.tol * max(1.0, self.first_grad_norm or 0.0):
            why = f"gradient norm {grad_norm:.3g} <= tol * max(1, initial gradient norm) (gtol)"
            # small against the start is not small against the problem: a saturated model's plateau
            stop = self._lm_stopped(why) if self.method == "lm" else ("converged", why)
        elif small_step and (self.still_steps >= FTOL_PATIENCE or self.method == "lbfgs"):
            # one short step of a momentum method (its velocity turning round) proves nothing either
            stop = self._stopped_moving(f"step {step_norm:.3g} <= tol * |x| (xtol)", grad_norm)
        elif change is not None and abs(change) <= options.tol * max(abs(prev_loss), 1e-300):
            self.flat_steps += 1
            if self.method == "lm" and self.flat_steps >= FTOL_PATIENCE:
                stop = self._lm_stopped("relative loss change <= tol (ftol)")
            elif self.flat_steps >= FTOL_PATIENCE or self.method == "lbfgs":
                stop = self._stopped_moving("relative loss change <= tol (ftol)", grad_norm)
        else:
            self.flat_steps = 0
        if self.on_progress is not None and (stop is not None or step % self.every == 0 or step == 1
                                             or step == options.steps):
            self.on_progress(ProgressRow(step, loss_now, change, grad_norm, step_norm, rate, rate_name,
                                         dict(zip(self.names, map(float, x_new))), time.perf_counter() - self.start))
        self.prev_loss = loss_now
        return stop

    def _lm_stopped(self, why):
        """Levenberg-Marquardt stopped short of atol: converged if `run` finds r orthogonal to J there."""
        self.confirm = "lm"
        return "converged", why

    def _stopped_moving(self, why, grad_norm):
        """xtol or ftol fired: converged, or stalled when the gradient says this is no minimum.

        On a loss with kinks a first-order method's gradient proves nothing either
        way: the verdict is left to `run`, which probes the loss (descent_slope).
        """
        limit = stationary_gradient_limit(self.options.tol, self.first_grad_norm, self.options.dtype)
        needs_gradient = self.smooth or self.method == "lbfgs"
        self.moving_why = why
        if not needs_gradient:
            self.confirm = "kink"
            return "converged", why
        # judged again at the reported point (the best one seen), whose gradient run() measures
        self.confirm = "gradient"
        if grad_norm is not None and grad_norm > limit:
            return "stalled", stalled_reason(self.method, why, grad_norm, limit)
        return "converged", why


def stationary_gradient_limit(tol, first_grad_norm, dtype="float64"):
    """The largest gradient a point may have and still count as a minimum once the steps stop."""
    return max(math.sqrt(tol), rounding_floor(dtype)) * max(1.0, first_grad_norm or 0.0)


def rounding_floor(dtype) -> float:
    """The least relative limit a verdict may use in `dtype`: sqrt(eps) in float32 (3.5e-4), 0 in float64.

    A float32 loss resolves its minimizer only to about sqrt(eps) of the unknowns'
    scale (the loss changes by eps * F there), and gradients and cosines carry
    rounding of the same order; float64's limits, sqrt(tol) = 1e-6 by default,
    are far above its own rounding and stay as they are.
    """
    return math.sqrt(float(np.finfo(np.float32).eps)) if dtype == "float32" else 0.0


def diverged_advice(lr) -> str:
    """What to try when a first-order method's steps ran off to infinity."""
    return f": the steps grew instead of settling; try a smaller --lr (this run's was {lr:.3g}) or --optimizer lm"


def stalled_reason(method, why, grad_norm, limit):
    advice = "use lbfgs, or lm for equations" if method != "lbfgs" else "try lm for equations, or adam"
    return (f"{method} stopped moving ({why}) where the gradient norm {grad_norm:.3g} is not small "
            f"(> {limit:.3g}): not a minimum; {advice}")


def loss_traits(objective) -> tuple[bool, bool]:
    """(atol applies, smooth) for an objective: see `run`."""
    return (bool(getattr(objective, "atol_applies", objective.residuals is not None)),
            bool(getattr(objective, "smooth", True)))


def run(objective, options: SolveOptions, *, method: str, lower=None, upper=None,
        on_progress: Callable[[ProgressRow], None] | None = None, every: int = 1, point=None,
        confirm_minimum: bool = True) -> Outcome:
    """Minimize `objective` with `method`, reporting a progress row every `every` steps (see `_run`).

    NaN and infinity are verdicts ("diverged"), not warnings: NumPy's
    RuntimeWarnings (log of a negative number, overflow in exp) stay quiet.
    `confirm_minimum=False` leaves the curvature check of a converged stop
    (`confirm_minimum_stop`) to the caller (multistart checks once per distinct point).
    """
    with np.errstate(all="ignore"):
        outcome = _run(objective, options, method=method, lower=lower, upper=upper, on_progress=on_progress,
                       every=every, point=point, confirm=confirm_minimum)
        if method == "lm" and confirm_minimum:
            outcome = _escape(objective, options, outcome, lower, upper, on_progress, every, point)
        return outcome


def _escape(objective, options, outcome, lower, upper, on_progress, every, point):
    """Levenberg-Marquardt stopped at a saddle, or at a minimum whose flat valley leads to negative curvature:
    continue from a clearly lower point along that curvature (`escape_point`), at most ESCAPE_LIMIT times.

    Gauss-Newton steps cannot see negative curvature (J^T J has none), so LM
    settles on such points; the full Hessian of the loss can.  A run from the
    lower point replaces the outcome where it ends lower and, when the outcome
    was converged, converged too: the verdict always belongs to the point reported.
    """
    params = objective.params
    n = len(params)
    lower = list(lower) if lower is not None else [None] * n
    upper = list(upper) if upper is not None else [None] * n
    eps = float(np.finfo(np.float32 if options.dtype == "float32" else np.float64).eps)

    loss_at, hessian_at = _evaluators(objective, params)

    for _ in range(ESCAPE_LIMIT):
        if outcome.atol_stop or not (outcome.status == "converged" or outcome.not_minimum):
            break
        if outcome.status == "converged" and outcome.loss <= options.atol:
            break
        _set_values(params, outcome.values)
        _, g = _gradient(objective, params)
        try:
            z = escape_point(loss_at, hessian_at, outcome.values, g, lower, upper, eps=eps)
        finally:
            _set_values(params, outcome.values)
        if z is None:
            break
        _set_values(params, z)
        if point is not None:
            point.set_values(z)
        after = _run(objective, options, method="lm", lower=lower, upper=upper, on_progress=on_progress,
                     every=every, point=point, confirm=True)
        if not (after.loss < outcome.loss and (after.status == "converged" or outcome.status != "converged")):
            break
        left = "a saddle point or maximum" if outcome.not_minimum else "a degenerate minimum"
        after.stop_reason = (f"{after.stop_reason} (after stepping off {left} at loss {outcome.loss:.3g} along "
                             f"its negative curvature)")
        after.steps += outcome.steps
        after.elapsed_s += outcome.elapsed_s
        after.loss_history = outcome.loss_history + after.loss_history
        outcome = after
    _set_values(params, outcome.values)
    if point is not None:
        point.set_values(outcome.values)
    return outcome


def _run(objective, options, *, method, lower, upper, on_progress, every, point, confirm=True) -> Outcome:
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
    # adaptive methods settle on a point by halving their rate, and cross long slopes by doubling it
    rates = RateRule(opt) if method in FIRST_ORDER and method != "sgd" else None

    start = time.perf_counter()
    x = point.values()
    watch = _Watch(options, method, objective.names, on_progress, every, start, x, atol_applies=atol_applies,
                   smooth=smooth)
    status, reason = "max_steps", f"reached the step limit ({options.steps})"
    step = 0
    fast = getattr(point, "fast_first_order", None)
    eps = float(np.finfo(np.float32 if options.dtype == "float32" else np.float64).eps)
    loss0 = math.nan
    try:
        loss0 = point.loss()
        if not math.isfinite(loss0):
            # nothing to descend from: say where, rather than "became nan" after a step that never ran
            status = "diverged"
            reason = (f"the loss is {loss0} at the starting point (a function outside its domain, such as sqrt or "
                      f"log of a negative number): start elsewhere (--init) or bound the unknowns")
            step = 0
        elif method in FIRST_ORDER and fast is not None:
            step, stop = fast(opt, rates, watch, lower, upper, options.steps)
            if stop is not None:
                status, reason = stop
        else:
            step, stop = _iterate(point, opt, method, lr, rates, watch, lower, upper, bounded, options.steps)
            if stop is not None:
                status, reason = stop
    except KeyboardInterrupt:
        status, reason = "interrupted", f"interrupted at step {watch.current_step}"
        step = watch.current_step
    if status == "diverged" and method in FIRST_ORDER and step > 1:
        reason = f"{reason}{diverged_advice(float(opt.param_groups[0]['lr']))}"
    elapsed = time.perf_counter() - start
    # Report the best point seen (whatever the status), evaluated afresh on the engine.
    _set_values(params, watch.best_x if math.isfinite(watch.best_loss) else watch.last_finite_x)
    final_loss, g = _gradient(objective, params)
    flat = unreached_unknowns(objective, params)
    values = _values(params)
    if watch.confirm == "gradient" and status in ("converged", "stalled"):
        # the steps stopped: judge stationarity where the run reports, not at the last step
        limit = stationary_gradient_limit(options.tol, watch.first_grad_norm, options.dtype)
        at_best = projected_max_abs(g, values, lower, upper)
        status, reason = (("converged", watch.moving_why) if at_best <= limit
                          else ("stalled", stalled_reason(method, watch.moving_why, at_best, limit)))
    if status == "converged" and watch.confirm == "kink":
        status, reason = _confirm_kink_stop(objective, params, values, g, lower, upper, options, method, reason,
                                            stationary_gradient_limit(options.tol, watch.first_grad_norm,
                                                                      options.dtype),
                                            float(opt.param_groups[0]["lr"]))
    jacobian = None
    if method == "lm":
        try:
            jac = gs.autograd.functional.jacobian(objective.residuals, params)
            jacobian = np.stack([j.numpy().reshape(-1) for j in jac], axis=1) if jac else None
        except Exception:  # noqa: BLE001 - the Jacobian is a courtesy for statistics
            jacobian = None
        if status == "converged" and watch.confirm == "lm":
            status, reason = _confirm_lm_stop(objective, params, values, jacobian, lower, upper, options, reason, eps)
    not_minimum = False
    if status == "converged" and not watch.at_atol and confirm:
        status, reason = confirm_minimum_stop(objective, params, values, g, lower, upper, options, method, reason,
                                              flat=flat)
        not_minimum = status != "converged"
    else:
        reason = short_stop_reason(objective, params, values, g, lower, upper, method, status, reason, final_loss,
                                   loss0, watch.moving_why)
    at_bounds = [name for name, v, lo, hi in zip(objective.names, values, lower, upper)
                 if (lo is not None and v <= lo) or (hi is not None and v >= hi)]
    return Outcome(status=status, stop_reason=reason, optimizer=method, steps=step, loss=final_loss,
                   gradient_norm=float(np.max(np.abs(g))) if g.size else 0.0, values=values,
                   elapsed_s=elapsed, loss_history=watch.history, at_bounds=at_bounds, jacobian=jacobian,
                   atol_stop=watch.at_atol, not_minimum=not_minimum)


def _confirm_lm_stop(objective, params, values, J, lower, upper, options, reason, eps):
    """LM stopped short of atol: converged where r is orthogonal to J, or the loss curves up along each column
    that is not (a derivative that vanishes at the minimum, as d(b**2)/db at b = 0); stalled otherwise.

    The cosine alone would call x**2 + 1 at x = 1e-17 a slope (its one column is
    all there is, and not orthogonal to r); curvature alone would call a model's
    saturated plateau (BoxBOD's exp(-b2*x) at b2 = 30: every derivative
    exponentially small) a minimum.  Together: a column whose cosine exceeds the
    limit is acceptable only where the loss's second derivative along it, H_jj,
    is positive and real at the parameter's size (``H_jj * max(1, x_j)**2 / 2 >=
    LM_CURVATURE_RTOL * F``) and a Newton step along it, ``g_j**2 / (2 H_jj)``,
    would remove at most ``limit**2`` of the loss.
    """
    limit = lm_cosine_limit(options.tol, options.dtype)
    r, cosines = None, np.array([math.inf])
    try:
        with gs.no_grad():
            r = np.asarray(objective.residuals().numpy(), dtype=np.float64).reshape(-1)
        if J is not None:
            cosines = lm_cosines(J, r, values, lower, upper, eps)
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
        size = max(1.0, abs(float(values[j])))
        if not (h_jj > 0 and h_jj * size * size / 2.0 >= LM_CURVATURE_RTOL * loss
                and g_j * g_j / (2.0 * h_jj) <= limit * limit * loss):
            curved = False
    _set_values(params, values)
    if curved:
        return "converged", f"{reason}; a minimum where the loss curves up along every parameter"
    worst = float(np.max(cosines))
    return "stalled", (f"lm stopped ({reason}) where the residuals are not orthogonal to the Jacobian (cosine "
                       f"{worst:.2g} > {limit:g}): not a least-squares minimum but a plateau or slope the damping "
                       f"could not follow; try a smaller --tol or other starting values (--init)")


def _evaluators(objective, params):
    """(loss_at(values), hessian_at(values)) of `objective`, for the checks made at a reported point:
    each sets the parameters to `values` (the caller puts them back)."""
    def loss_at(v):
        _set_values(params, v)
        with gs.no_grad():
            return float(objective.loss().item())

    def hessian_at(v):
        return loss_hessian(objective, params, v)

    return loss_at, hessian_at


def _confirm_kink_stop(objective, params, values, g, lower, upper, options, method, reason, limit, rate):
    """A first-order method stopped moving on a loss with kinks: converged only where no nearby step goes down."""

    loss_at, _ = _evaluators(objective, params)

    def grad_at(v):
        _set_values(params, v)
        return _gradient(objective, params)[1]

    try:
        slope, where = descent_slope(loss_at, values, g, lower, upper, options.tol, objective.names, grad_at)
    finally:
        _set_values(params, values)
    if slope <= limit:
        return "converged", reason
    return "stalled", (f"{method} stopped moving ({reason}) where the loss still falls: along {where} it drops at "
                       f"a slope of {slope:.3g} (> {limit:.3g}), with the rate down to {rate:.3g}: not a minimum; "
                       f"raise --steps or --lr, or start nearer (--init)")


def unreached_unknowns(objective, params) -> list[str]:
    """The unknowns the loss uses that its graph has no path to, after `_gradient` (their .grad is None).

    Such a loss is piecewise constant in them (sign(x)): its gradient there is 0
    everywhere and says nothing about a minimum.  Unknowns no expression uses
    (``objective.unused``, names) are not counted: nothing depends on them.
    """
    unused = set(getattr(objective, "unused", ()))
    return [name for name, p in zip(objective.names, params) if p.grad is None and name not in unused]


def loss_hessian(objective, params, values) -> np.ndarray:
    """The n x n Hessian of the objective's loss at `values`, float64, symmetrized; the parameters keep `values`.

    The gradient graph is built once (``create_graph``) and each row is one
    backward pass through it: n passes, not n Hessian-vector products that
    each rebuild the loss and its gradient first, as `analysis.loss_hessian`
    does (25 times slower at 150 unknowns).  Rows of unknowns the gradient has
    no path to are zero.
    """
    _set_values(params, values)
    n = len(params)
    with gs.enable_grad():
        loss = objective.loss()
        if not loss.requires_grad:
            return np.zeros((n, n))
        grads = gs.autograd.grad([loss], params, create_graph=True, allow_unused=True, materialize_grads=True)
    rows = []
    for g_k in grads:
        if not g_k.requires_grad:
            rows.append(np.zeros(n))
            continue
        row = gs.autograd.grad([g_k], params, retain_graph=True, allow_unused=True, materialize_grads=True)
        rows.append([float(r.item()) for r in row])
    H = np.array(rows, dtype=np.float64).reshape(n, n)
    return (H + H.T) / 2.0


def more_starts(options) -> str:
    """The multistart a message suggests: 100 starts, or ten times as many as this run had."""
    return f"--starts {min(max(100, 10 * options.starts), MAX_STARTS)}"


def confirm_minimum_stop(objective, params, values, g, lower, upper, options, method, reason, *, flat=None):
    """A converged stop other than atol: still converged where `minimum_refuted` finds nothing, else stalled.

    `g` is the gradient at `values`; `flat` the unknowns the loss has no path to
    (`unreached_unknowns`, measured right after `_gradient` at `values`).  The
    parameters hold `values` again afterwards.
    """
    if flat is None:
        _gradient(objective, params)
        flat = unreached_unknowns(objective, params)
    if flat:
        _set_values(params, values)
        names = ", ".join(flat)
        return "stalled", (f"{method} stopped ({reason}) where the loss is flat in {names}: it is piecewise "
                           f"constant there (as sign(x) is), so its gradient is zero everywhere, proves nothing "
                           f"about a minimum, and gradient methods cannot move; start elsewhere (--init) or "
                           f"use {more_starts(options)}")

    loss_at, hessian_at = _evaluators(objective, params)

    eps = float(np.finfo(np.float32 if options.dtype == "float32" else np.float64).eps)
    try:
        refuted = minimum_refuted(loss_at, hessian_at, values, g, lower, upper, smooth=loss_traits(objective)[1],
                                  eps=eps, names=objective.names)
    finally:
        _set_values(params, values)
    if refuted is None:
        if not loss_traits(objective)[0] and _slope_at_scale(g, values, lower, upper, loss_at(values), options):
            # gtol is absolute: -log(x) "converged" at x = 1.5e12, where its gradient 1/x is 6e-13
            unbounded = _unbounded_reason(objective, params, values, g, lower, upper, method, reason, None)
            if unbounded != reason:
                return "stalled", unbounded
        return "converged", reason
    return "stalled", (f"{method} stopped ({reason}) where the loss is stationary but not at a minimum: "
                       f"{refuted}; start elsewhere (--init) or use {more_starts(options)}")


def curvature_rtol(eps) -> float:
    """The relative size below which an eigenvalue of the scaled loss Hessian counts as zero (see CURVATURE_RTOL)."""
    return CURVATURE_RTOL if eps <= float(np.finfo(np.float64).eps) else max(CURVATURE_RTOL, math.sqrt(eps))


class _Curvature:
    """The loss Hessian at points near x over the unknowns that are free there, in their scale s_j = max(1, |x_j|).

    Free: strictly inside the bounds and not held by one (`held_by_bounds`, with
    the gradient g at x).  ``usable`` is False where there are none or more than
    HESSIAN_LIMIT (no claim then).  ``spectrum(y)`` is (eigenvalues ascending,
    eigenvectors, the numerical zero b = curvature_rtol(eps) * max(1, max |lambda|)) of
    diag(s) H(y) diag(s), or None where the Hessian fails or is not finite;
    ``step(u)`` turns a unit vector of that scale into a step in the unknowns.
    """

    def __init__(self, hessian_at, x, g, lower, upper, eps):
        self.hessian_at = hessian_at
        self.rtol = curvature_rtol(eps)
        self.x = np.asarray(x, dtype=np.float64)
        self.lo = np.array([-math.inf if v is None else v for v in lower], dtype=np.float64)
        self.hi = np.array([math.inf if v is None else v for v in upper], dtype=np.float64)
        held = np.array(held_by_bounds(g, self.x, lower, upper), dtype=bool)
        self.idx = np.flatnonzero(~held & (self.x > self.lo) & (self.x < self.hi))
        self.scale = np.maximum(1.0, np.abs(self.x[self.idx]))
        self.usable = 0 < self.idx.size <= HESSIAN_LIMIT

    def spectrum(self, y):
        try:
            H = np.asarray(self.hessian_at(y), dtype=np.float64)[np.ix_(self.idx, self.idx)]
        except Exception:  # noqa: BLE001 - no Hessian, no claim
            return None
        if not np.all(np.isfinite(H)):
            return None
        scaled = H * self.scale[:, None] * self.scale[None, :]
        lam, V = np.linalg.eigh((scaled + scaled.T) / 2.0)
        return lam, V, self.rtol * max(1.0, float(np.max(np.abs(lam))))

    def step(self, u):
        d = np.zeros(self.x.size)
        d[self.idx] = u * self.scale
        return d

    def clip(self, v):
        return np.clip(v, self.lo, self.hi)


def minimum_refuted(loss_at, hessian_at, x, g, lower, upper, *, smooth, eps, names=None):
    """None where x may be a local minimum of the loss (or nothing can be said), else why it is not one, in words.

    `loss_at(values)` evaluates the loss, `hessian_at(values)` its Hessian, `g`
    is the gradient at x.  With the eigenvalues lambda of the Hessian over the
    free unknowns in their scale and its numerical zero b (`_Curvature`):

    * lambda < -b: the loss curves down along that direction (a saddle or a
      maximum).  On a loss with kinks the Hessian is only that of one piece,
      so the fall is measured first: the mean of the loss a step of PROBE_STEP
      away both ways must lie below the loss itself by more than rounding;
    * |lambda| <= b: the Hessian says nothing there (x**3 at 0, (x - 1)**4 at 1):
      the loss is probed a step of PROBE_STEP and of twice that along the
      direction, each way; a fall at both, larger at the longer step, and beyond
      the gradient's share (``|g . step|``) and rounding (`_loss_rounding`) each
      time, refutes a minimum.  A flat true minimum rises, or falls only by what
      its small gradient explains.

    A fall is only ever measured or read off the Hessian, never assumed: no claim
    where the Hessian cannot be computed or is not finite.
    """
    x = np.asarray(x, dtype=np.float64)
    g = np.asarray(g, dtype=np.float64)
    at = _curvature_at(loss_at, hessian_at, x, g, lower, upper, eps)
    if at is None:
        return None
    curvature, (lam, V, bound), f0 = at
    noise = _loss_rounding(loss_at, x, f0, eps)
    for k in np.flatnonzero(lam < -bound)[:3]:
        d = curvature.step(V[:, k])
        if smooth:
            return f"a saddle point or maximum, the loss curves down along {_direction(d, names)}"
        mean = (loss_at(curvature.clip(x + PROBE_STEP * d)) + loss_at(curvature.clip(x - PROBE_STEP * d))) / 2.0
        if mean < f0 - noise:
            return (f"a saddle point or maximum, the loss curves down along {_direction(d, names)} (by "
                    f"{f0 - mean:.3g} on average a step of {PROBE_STEP:g} of the unknowns' scale either way)")
    for k in np.flatnonzero(np.abs(lam) <= bound):
        d = curvature.step(V[:, k])
        for sign in (1.0, -1.0):
            falls = []
            for t in (PROBE_STEP, 2.0 * PROBE_STEP):
                trial = curvature.clip(x + sign * t * d)
                fall = f0 - loss_at(trial)
                if not (math.isfinite(fall) and fall > abs(float(g @ (trial - x))) + noise):
                    break
                falls.append(fall)
            if len(falls) == 2 and falls[1] > falls[0]:
                return (f"the loss falls along {_direction(sign * d, names, oriented=True)}, where it has no "
                        f"curvature (by "
                        f"{falls[0]:.3g} a step of {PROBE_STEP:g} of the unknowns' scale away): a degenerate "
                        f"saddle such as x^3 at 0")
    return None


def _curvature_at(loss_at, hessian_at, x, g, lower, upper, eps):
    """(curvature, its spectrum (lam, V, bound), loss) at x, or None where the Hessian or the loss is unusable."""
    curvature = _Curvature(hessian_at, x, g, lower, upper, eps)
    spectrum = curvature.spectrum(x) if curvature.usable else None
    f0 = loss_at(x)
    if spectrum is None or not math.isfinite(f0):
        return None
    return curvature, spectrum, f0


def escape_point(loss_at, hessian_at, x, g, lower, upper, *, eps):
    """A point clearly below the loss at x, reached along a direction of negative curvature; None when none is found.

    Where the Hessian at x (over the free unknowns in their scale, `_Curvature`)
    has an eigenvalue below -b, its direction is taken from x itself (a saddle).
    Otherwise each numerically flat direction v (|lambda| <= b; the first
    ESCAPE_DIRECTIONS) is walked along, y = x +- t v for t in ESCAPE_WALK, as long as
    the loss stays within ESCAPE_RISE of itself (the floor of a degenerate valley:
    two exponentials of a sum that have merged, whose difference can go either
    way), until the Hessian at y has negative curvature.  From that point, steps
    of ESCAPE_STEPS along it, both ways; the lowest counts where it lies below the
    loss at x by more than ESCAPE_LEVEL of it and rounding.  A search, not a
    proof: what it finds is a better start, nothing more.
    """
    x = np.asarray(x, dtype=np.float64)
    at = _curvature_at(loss_at, hessian_at, x, g, lower, upper, eps)
    if at is None:
        return None
    curvature, (lam, V, bound), f0 = at
    level = max(ESCAPE_LEVEL * abs(f0), _loss_rounding(loss_at, x, f0, eps))
    curved = None  # (point, direction) with negative curvature
    if lam[0] < -bound:
        curved = (x, curvature.step(V[:, 0]))
    flat = np.flatnonzero(np.abs(lam) <= bound)[:ESCAPE_DIRECTIONS] if curved is None else ()
    walks = ((curvature.step(V[:, k]), sign * t) for k in flat for t in ESCAPE_WALK for sign in (1.0, -1.0))
    for v, t in walks:
        y = curvature.clip(x + t * v)
        fy = loss_at(y)
        if not (math.isfinite(fy) and fy <= f0 + max(level, ESCAPE_RISE * abs(f0))):
            continue
        there = curvature.spectrum(y)
        if there is not None and there[0][0] < -there[2]:
            curved = (y, curvature.step(there[1][:, 0]))
            break
    if curved is None:
        return None
    y, w = curved
    best, best_f = None, f0 - level
    for size in ESCAPE_STEPS:
        for sign in (1.0, -1.0):
            z = curvature.clip(y + sign * size * w)
            fz = loss_at(z)
            if math.isfinite(fz) and fz < best_f:
                best, best_f = z, fz
    return best


def _loss_rounding(loss_at, x, f0, eps) -> float:
    """How much the loss at x moves by rounding: PROBE_ROUNDING * eps * |f0|, or 8 times the largest change
    under three perturbations of the unknowns by 4 eps of themselves (signs from a fixed seed), if larger."""
    rng = np.random.default_rng(0)
    spread = 0.0
    for _ in range(3):
        f = loss_at(x * (1.0 + 4.0 * eps * rng.choice((-1.0, 1.0), size=x.size)))
        if math.isfinite(f):
            spread = max(spread, abs(f - f0))
    return max(PROBE_ROUNDING * eps * max(abs(f0), float(np.finfo(np.float64).tiny)), 8.0 * spread)


def _direction(d, names=None, *, oriented=False) -> str:
    """A direction in words: unit length, as '(x: 0.707, y: -0.707)', its first clear component positive unless
    `oriented` (a way to go, not a line); past six unknowns only the six largest components, and how many are
    left out."""
    d = np.asarray(d, dtype=np.float64)
    norm = float(np.linalg.norm(d))
    if norm > 0:
        d = d / norm
    clear = np.flatnonzero(np.abs(d) > 1e-6)
    if not oriented and clear.size and d[clear[0]] < 0:
        d = -d
    names = list(names) if names is not None else [f"unknown {i + 1}" for i in range(d.size)]
    shown = range(d.size) if d.size <= 6 else sorted(np.argsort(-np.abs(d))[:6])
    parts = [f"{names[i]}: {(d[i] if abs(d[i]) > 1e-6 else 0.0):.3g}" for i in shown]
    if d.size > 6:
        parts.append(f"+{d.size - 6} more")
    return "(" + ", ".join(parts) + ")"


def _slope_at_scale(g, values, lower, upper, loss, options) -> bool:
    """A step of the unknowns' own size, max(1, max |x|), would change the loss by more than sqrt(tol) of
    max(1, |loss|) at first order: a gradient small in itself but not against the point's scale."""
    slope = projected_max_abs(g, values, lower, upper)
    scale = max([1.0] + [abs(float(v)) for v in values])
    return slope * scale > stationary_gradient_limit(options.tol, max(1.0, abs(loss)), options.dtype)


def short_stop_reason(objective, params, values, g, lower, upper, method, status, reason, loss, loss0,
                      moving_why=None):
    """The reason of a run that stopped short (stalled, max_steps) at `values`: where the loss can go below zero
    and fell from its start `loss0`, one that says when it seems unbounded below; otherwise `reason`."""
    if status in ("stalled", "max_steps") and not loss_traits(objective)[0] and loss < loss0:
        return _unbounded_reason(objective, params, values, g, lower, upper, method, reason, moving_why)
    return reason


def _unbounded_reason(objective, params, values, g, lower, upper, method, reason, moving_why):
    """`reason`, or a reason that says the loss seems unbounded below where `unbounded_below` sees it fall."""

    loss_at, _ = _evaluators(objective, params)

    try:
        seen = unbounded_below(loss_at, values, g, lower, upper)
    except Exception:  # noqa: BLE001 - a courtesy to the reader; the verdict stands either way
        seen = None
    finally:
        _set_values(params, values)
    if seen is None:
        return reason
    loss, distance = seen
    how = f"{method} stopped moving ({moving_why})" if moving_why else reason
    return (f"{how} where the loss seems unbounded below: along the negative gradient it keeps falling, by at least "
            f"half as much at every tenfold step, to {loss:.3g} at a distance {distance:.3g}; there may be no minimum "
            f"to find (bound the unknowns, or check the expression)")


def unbounded_below(loss_at, x, g, lower, upper):
    """(loss, distance) where the loss, stepped along -g by 1, 10, ... 10**UNBOUNDED_REACH times the unknowns' scale
    max(1, max |x|), fell at every step, each time by at least half the fall before (a linear fall grows tenfold,
    -log(x)'s stays the same; -atan(x), bounded, shrinks tenfold); None otherwise.  -inf counts as a fall."""
    x = np.asarray(x, dtype=np.float64)
    g = np.asarray(g, dtype=np.float64)
    top = float(np.max(np.abs(g))) if g.size else 0.0
    if not (top > 0 and math.isfinite(top)):
        return None
    unit = g / top  # scaled first: the norm of a gradient of 1e308 overflows
    lo = np.array([-math.inf if v is None else v for v in lower], dtype=np.float64)
    hi = np.array([math.inf if v is None else v for v in upper], dtype=np.float64)
    direction = -unit / float(np.linalg.norm(unit)) * max(1.0, float(np.max(np.abs(x))))
    previous, drop = loss_at(x), None
    for k in range(UNBOUNDED_REACH + 1):
        trial = np.clip(x + 10.0 ** k * direction, lo, hi)
        f = loss_at(trial)
        distance = float(np.linalg.norm(trial - x))
        if f == -math.inf:
            return f, distance
        if not (math.isfinite(f) and f < previous) or (drop is not None and previous - f < 0.5 * drop):
            return None
        previous, drop = f, previous - f
    return previous, distance


def _iterate(point, opt, method, lr, rates, watch, lower, upper, bounded, steps):
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
            if rates is not None:
                rates.step(loss_now)
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
        "stalled": "no damping gives a further decrease",
    }.get(code, code)
