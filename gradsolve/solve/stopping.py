"""Stopping tests and learning-rate rules: for a single start and for a batch of starts, side by side.

Every run stops on the same tests, whether it is one start (`Watch`, after each
step of `gradsolve.solve.loop`) or K starts as one array (`BatchStops`, in
`gradsolve.solve.multistart`):

* ``solved`` (Levenberg-Marquardt, which has the residuals and Jacobian at
  every step): every residual is within SOLVED_ROUNDINGS roundings of its own
  terms (verdicts.residual_roundings): a test without units, where an absolute
  bound on the loss would mean "solved" in amperes and "not yet" in picoamperes;
* ``atol``: the loss is at most ``atol`` (0 by default: a loss that is exactly 0).
  Only for losses that cannot go below zero (sums of squares, or a minimize
  expression proven non-negative): a loss of -5 is not "solved";
* ``gtol``: the largest gradient component is at most ``tol * g0``, g0 the first
  one (no absolute floor: a problem in small units has small gradients);
* ``xtol``: the step is at most ``tol * |x|`` (first-order methods: for
  FTOL_PATIENCE iterations in a row, as ftol); gtol and xtol wait while the loss
  still falls geometrically (GEOMETRIC_FALL), as it does into a multiple root;
* ``ftol``: the relative loss change stays at most ``tol`` for FTOL_PATIENCE
  iterations in a row (one flat step of a momentum method proves nothing).

A stop that rests on the steps stopping is provisional: gradsolve.solve.verdicts
judges it at the point reported.  `REASONS` words each test once, for every path.

Adaptive first-order methods run under `RateRule` (on one start's floats, or per start of a batch):
the rate halves when the best loss stalls and doubles while the loss falls at
every step, so a long slope is crossed instead of crawled.  `time_limit` gives a
whole solve one deadline (``--time-limit``), which both forms check after every step.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
import time

import numpy as np

from gradsolve.solve.options import flag
from gradsolve.solve.records import ProgressRow
from gradsolve.solve.verdicts import (SOLVED_ROUNDINGS, judge_stopped_moving, residual_roundings, solved_reason,
                                      stationary_gradient_limit)

__all__ = ["FTOL_PATIENCE", "REASONS", "stop_reason", "lm_reason", "Watch", "RateRule", "BatchStops",
           "BATCH_TESTS", "GEOMETRIC_FALL", "linear_fall", "time_limit", "past_time_limit", "time_limit_reason"]

FTOL_PATIENCE = 5
# RateRule (adaptive first-order methods): halve the rate when the best loss has not improved by
# PLATEAU_THRESHOLD (relative) for more than PLATEAU_PATIENCE steps, unless the loss fell steadily at every one
# of them; double it once the loss has fallen at every step for GROW_AFTER steps, up to GROW_LIMIT times the start.
PLATEAU_FACTOR = 0.5
PLATEAU_PATIENCE = 50
PLATEAU_THRESHOLD = 1e-3
GROW_AFTER = 100
GROW_SPREAD = 1.5  # ... by amounts within this factor of each other (a straight slope, not a curved valley)
GROW_LIMIT = 2.0 ** 20
LM_POLISH_STEPS = 5    # at most this many LM steps once the equations hold (or the loss is below atol) ...
LM_POLISH_GAIN = 10.0  # ... each while the loss still falls by this factor
#: gtol and xtol wait while the loss falls at least this factor a step: Gauss-Newton converges only linearly
#: to a multiple root (x^2 = 0: the loss falls sixteen-fold a step), with gradients and steps that are small
#: against the start long before the residuals are rounding.
GEOMETRIC_FALL = 0.5
#: Levenberg-Marquardt's own step tests firing after this many such falls in a row end a run at a multiple root:
#: the loss of an inconsistent system settles on its positive minimum instead of halving at every step.
GEOMETRIC_STEPS = 3

#: Each stopping test in words: (what is measured, the test).  `stop_reason` puts in the measured value.
REASONS = {
    "atol": ("loss", "<= atol {atol:g}"),
    "exact": ("loss", "is exactly 0"),
    "gtol": ("gradient norm", "<= tol * initial gradient norm (gtol)"),
    "xtol": ("step", "<= tol * |x| (xtol)"),
    "ftol": ("relative loss change", "<= tol (ftol)"),
    # Levenberg-Marquardt's own tests (the loop gives it gtol 0: its gradient test is a zero gradient)
    "lm_gtol": ("gradient", "zero to rounding (gtol)"),
    "lm_stalled": ("no damping", "gives a further decrease"),
}
#: The tests of a batch, in the order BatchStops numbers them (its `why`).
BATCH_TESTS = ("atol", "gtol", "xtol", "ftol")


def linear_fall(history, window: int = 8) -> float | None:
    """The loss's constant ratio per step at the end of a run, where it fell linearly (geometrically), else None.

    Gauss-Newton converges linearly only into a root where the Jacobian is
    singular: a multiple root of multiplicity m gives the ratio
    ((m - 1) / m)**(2m), 1/16 for a double root.  Quadratic convergence shows
    ratios that shrink step by step, a stall ratios near 1.

    >>> linear_fall([3.0 ** 4 / 16 ** k for k in range(12)])
    0.0625
    """
    ratios = [b / a for a, b in zip(history[:-1], history[1:]) if a > 0 and b > 0]
    # the last few ratios may be rounding's (the residuals at rounding level): look just before them too
    for end in range(len(ratios), max(len(ratios) - 3, 0), -1):
        tail = ratios[max(end - window, 0):end]
        if len(tail) < GEOMETRIC_STEPS or not all(0.01 <= q <= GEOMETRIC_FALL for q in tail):
            continue
        if max(tail) > 4 * min(tail):  # not one ratio: quadratic convergence's ratios fall away
            continue
        return float(np.exp(np.mean(np.log(tail))))
    return None


def stop_reason(test: str, *, atol: float | None = None, measured: float | None = None) -> str:
    """`test` (a key of REASONS) in words, with the measured value when there is one.

    >>> stop_reason("xtol", measured=3e-13)
    'step 3e-13 <= tol * |x| (xtol)'
    """
    if test == "atol" and atol == 0:
        test, measured = "exact", None
    what, rule = REASONS[test]
    value = "" if measured is None else f" {measured:.3g}"
    return f"{what}{value} {rule.format(atol=atol)}"


#: (deadline on time.perf_counter's clock, the limit in seconds) of the solve under way, or None.
_TIME_LIMIT = contextvars.ContextVar("gradsolve_time_limit", default=None)


@contextlib.contextmanager
def time_limit(seconds: float | None):
    """Every run started inside stops by `seconds` from now (status max_steps, with its best point): one clock for
    the whole solve, the runs after a first one (polishing, reweighting, the starts of a batch) included."""
    if seconds is None:
        yield
        return
    token = _TIME_LIMIT.set((time.perf_counter() + seconds, seconds))
    try:
        yield
    finally:
        _TIME_LIMIT.reset(token)


def past_time_limit() -> bool:
    limit = _TIME_LIMIT.get()
    return limit is not None and time.perf_counter() >= limit[0]


def time_limit_reason(step: int | None = None) -> str:
    """The stop reason of a run the time limit stopped (after `step` steps, where known)."""
    at = f" at step {step}" if step is not None else ""
    return f"reached the time limit ({_TIME_LIMIT.get()[1]:g} s){at}"


def lm_reason(code: str, atol: float) -> str:
    """The reason for a stop of Levenberg-Marquardt's own (its ``stop_reason`` code)."""
    test = {"gtol": "lm_gtol", "stalled": "lm_stalled"}.get(code, code)
    return stop_reason(test, atol=atol) if test in REASONS else code


class RateRule:
    """The learning-rate rule of the adaptive first-order methods, for one start or for K starts at once.

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

    One definition, two kinds of state: ``RateRule(lr)`` keeps one start's as
    Python floats (the single-start loop, at float speed); ``RateRule(lr, K=K,
    xp=xp, device=...)`` keeps K starts' as arrays on the batch's device, where a
    stopped start keeps its rate.  ``step(loss, active, lr)`` returns the new rate(s).
    """

    def __init__(self, lr: float, *, K: int | None = None, xp=None, device=None):
        self.ops = _FLOAT_OPS if K is None else _ArrayOps(xp)

        def state(value, dtype=np.float64):
            return value if K is None else device(np.full(K, value, dtype=dtype))

        self.ceiling = float(lr) * GROW_LIMIT
        self.best = state(math.inf)
        self.bad = state(0, np.int64)  # steps since the best loss last improved by the threshold
        self.falling = state(0, np.int64)  # steps in a row at which the loss fell by about the same amount
        self.drop_lo = state(0.0)  # the smallest and largest of those falls
        self.drop_hi = state(0.0)
        self.last = state(math.nan)  # NaN: no fall measured before the first step

    def step(self, loss, active=True, lr=None):
        """The rate(s) after a step that reached `loss` (K rates as a (K, 1) column for a batch)."""
        ops = self.ops
        with ops.quiet():  # NaN comparisons on arrays (a start's first step, a diverged start) are expected
            drop = self.last - loss
            fell = drop > 0
            steady = ops.all_of(fell, self.falling > 0,
                                ops.maximum(self.drop_hi, drop) <= GROW_SPREAD * ops.minimum(self.drop_lo, drop))
            fresh = ops.all_of(fell, ops.negate(steady))
            self.falling = ops.where(steady, self.falling + 1, ops.count(fresh))  # else 1 or 0
            self.drop_lo = ops.where(steady, ops.minimum(self.drop_lo, drop), ops.where(fresh, drop, self.drop_lo))
            self.drop_hi = ops.where(steady, ops.maximum(self.drop_hi, drop), ops.where(fresh, drop, self.drop_hi))
            self.last = loss
            improved = loss < self.best * (1.0 - PLATEAU_THRESHOLD)
        self.best = ops.where(improved, loss, self.best)
        self.bad = ops.where(improved, 0, self.bad + 1)
        grow = ops.all_of(active, self.falling >= GROW_AFTER)
        halve = ops.all_of(active, ops.negate(grow), self.bad > PLATEAU_PATIENCE, self.falling <= PLATEAU_PATIENCE)
        lr = ops.where(ops.column(grow), ops.minimum(lr * 2.0, self.ceiling),
                       ops.where(ops.column(halve), lr * PLATEAU_FACTOR, lr))
        self.falling = ops.where(grow, 0, self.falling)
        self.bad = ops.where(ops.any_of(grow, halve), 0, self.bad)
        return lr


class _FloatOps:
    """RateRule's operations on one start's Python floats and bools."""

    class _Quiet:  # Python floats warn about nothing: no np.errstate (several microseconds a step) needed
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    _QUIET = _Quiet()

    @classmethod
    def quiet(cls):
        return cls._QUIET

    @staticmethod
    def where(condition, a, b):
        return a if condition else b

    maximum = staticmethod(max)
    minimum = staticmethod(min)

    @staticmethod
    def all_of(*conditions):
        return all(conditions)

    @staticmethod
    def any_of(*conditions):
        return any(conditions)

    @staticmethod
    def negate(condition):
        return not condition

    @staticmethod
    def count(condition):
        return int(condition)

    @staticmethod
    def column(condition):
        return condition


_FLOAT_OPS = _FloatOps()


class _ArrayOps:
    """RateRule's operations on K starts' arrays of the namespace `xp` (the batch's device)."""

    def __init__(self, xp):
        self.xp = xp
        self.where, self.maximum, self.minimum = xp.where, xp.maximum, xp.minimum

    @staticmethod
    def quiet():
        return np.errstate(invalid="ignore")

    def all_of(self, first, *more):
        for condition in more:
            first = first & condition
        return first

    def any_of(self, first, *more):
        for condition in more:
            first = first | condition
        return first

    @staticmethod
    def negate(condition):
        return ~condition

    def count(self, condition):
        return self.xp.astype(condition, self.xp.int64)

    @staticmethod
    def column(condition):
        return condition[:, None]


class Watch:
    """Bookkeeping shared by every loop: best point, history, the stopping tests, progress rows."""

    def __init__(self, options, method, names, on_progress, every, start, x0, *, atol_applies=True, smooth=True,
                 constants=None):
        self.options, self.method, self.names = options, method, names
        self.constants = constants  # each equation's constant terms (analysis.constant_term_sizes), or None
        self.eps = float(np.finfo(np.float32 if options.dtype == "float32" else np.float64).eps)
        self.atol_applies, self.smooth = atol_applies, smooth
        self.on_progress, self.every, self.start = on_progress, every, start
        self.best_loss, self.best_x = math.inf, list(x0)
        self.best_merit = math.inf  # what picks the best point: the loss, or the weighted loss LM minimizes
        self.last_finite_x = list(x0)
        self.history = []
        self.prev_loss = None
        self.prev_merit = None
        self.flat_steps = 0
        self.falls = 0  # consecutive steps at which the loss fell by GEOMETRIC_FALL or more
        self.still_steps = 0  # consecutive steps below xtol
        self.first_grad_norm = None
        self.polish_steps = 0
        self.current_step = 0
        self.confirm = None  # "lm", "kink" or "gradient": a stop the verdicts must confirm at the reported point
        self.moving_why = None  # the test that fired when the steps stopped (xtol, ftol): see _stopped_moving
        self.at_atol = False  # stopped because the loss reached atol: a proven minimum, no curvature check
        self.time_limited = _TIME_LIMIT.get() is not None

    def offer(self, loss, x) -> None:
        """A loss measured at x (before a step): it may be the best point."""
        if loss < self.best_merit:
            self.best_loss, self.best_x, self.best_merit = loss, list(x), loss

    def observe(self, step, loss_now, grad_norm, step_norm, x_norm, x_new, rate, rate_name, lm_stop=None,
                residuals=None, jacobian=None, merit=None):
        """After a step: None to go on, or (status, reason) to stop.

        For Levenberg-Marquardt `lm_stop` is its (stop_reason, converged) once it
        stopped, and `residuals`, `jacobian` are r and J at x_new (the solved test); `merit` is
        what it minimizes where that is not the loss (its weighted loss), which picks the best point.  A converged verdict that rests on the steps stopping is
        provisional (``confirm``): verdicts.judge confirms it at the reported point.
        """
        options = self.options
        if not (math.isfinite(loss_now) and all(map(math.isfinite, x_new))):
            return "diverged", f"the loss became {loss_now} at step {step}"
        self.last_finite_x = list(x_new)
        self.history.append(loss_now)
        prev_loss = self.prev_loss
        change = None if prev_loss is None else loss_now - prev_loss
        # the tests read what the method minimizes: the loss, or Levenberg-Marquardt's weighted loss
        merit = loss_now if merit is None else merit
        prev_merit = self.prev_merit
        if merit < self.best_merit:
            self.best_loss, self.best_x, self.best_merit = loss_now, list(x_new), merit
        if self.first_grad_norm is None:
            self.first_grad_norm = grad_norm
        stop = None
        # only a loss that cannot go below zero falls geometrically (into 0); -1 <= 0.5 * -1 is no fall
        falling = self.atol_applies and prev_merit is not None and 0 <= merit <= GEOMETRIC_FALL * prev_merit
        if lm_stop is None:  # a step Levenberg-Marquardt declined to take measures no fall
            self.falls = self.falls + 1 if falling else 0
        small_step = self.method != "lm" and step_norm <= options.tol * x_norm and not falling
        self.still_steps = self.still_steps + 1 if small_step else 0
        held = None
        if self.atol_applies and residuals is not None and jacobian is not None:
            held = residual_roundings(residuals, jacobian, x_new, self.constants, self.eps)
            held = held if held <= SOLVED_ROUNDINGS else None
        if lm_stop is not None:
            code, _ = lm_stop
            if code == "nonfinite":
                stop = ("diverged", f"the Jacobian is not finite at step {step} (a function at the edge of its "
                                    f"domain, such as sqrt or log at 0): start inside the domain ({flag('init')}) or "
                                    f"bound the unknowns")
            elif self.atol_applies and loss_now <= options.atol:
                # polished past atol until its own test stopped it: the loss is the news, not the test
                stop = ("converged", stop_reason("atol", atol=options.atol, measured=loss_now))
                self.at_atol = True
            elif held is not None:
                stop = ("converged", solved_reason(held, options.dtype))
                self.at_atol = True
            elif code in ("atol", "gtol"):  # F <= atol, or a gradient that is zero (to machine precision)
                stop = ("converged", lm_reason(code, options.atol))
            elif (self.atol_applies and residuals is not None and code in ("xtol", "ftol")
                  and self.falls >= GEOMETRIC_STEPS and linear_fall(self.history) is not None):
                # the steps stopped (xtol: relative to x) on a loss still halving: Gauss-Newton's linear
                # convergence into a root where the Jacobian is singular; to_result says how many digits it has
                stop = ("converged", f"{lm_reason(code, options.atol)} while the loss fell geometrically to "
                                     f"{loss_now:.3g} (at least {1 / GEOMETRIC_FALL:g}-fold a step for the last "
                                     f"{self.falls} steps): a multiple root")
                self.at_atol = True
            else:  # a small step, a small reduction, or no damping that helps
                stop = self._lm_stopped(lm_reason(code, options.atol))
        elif self.atol_applies and (loss_now <= options.atol or held is not None):
            if (self.method == "lm" and self.polish_steps < LM_POLISH_STEPS and prev_merit is not None
                    and prev_merit > LM_POLISH_GAIN * merit and merit > 0):
                # Still converging quadratically: each Gauss-Newton step is cheap and doubles the
                # correct digits, so residuals within a few roundings become the rounding itself.
                self.polish_steps += 1
            else:
                stop = ("converged", stop_reason("atol", atol=options.atol, measured=loss_now)
                        if loss_now <= options.atol else solved_reason(held, options.dtype))
                self.at_atol = True
        elif grad_norm is not None and grad_norm <= options.tol * (self.first_grad_norm or 0.0) and not falling:
            why = stop_reason("gtol", measured=grad_norm)
            # small against the start is not small against the problem: a saturated model's plateau
            stop = self._lm_stopped(why) if self.method == "lm" else ("converged", why)
        elif small_step and (self.still_steps >= FTOL_PATIENCE or self.method == "lbfgs"):
            # one short step of a momentum method (its velocity turning round) proves nothing either
            stop = self._stopped_moving(stop_reason("xtol", measured=step_norm), grad_norm)
        elif prev_merit is not None and abs(merit - prev_merit) <= options.tol * abs(prev_merit) and not falling:
            self.flat_steps += 1
            if self.method == "lm" and self.flat_steps >= FTOL_PATIENCE:
                stop = self._lm_stopped(stop_reason("ftol"))
            elif self.flat_steps >= FTOL_PATIENCE or self.method == "lbfgs":
                stop = self._stopped_moving(stop_reason("ftol"), grad_norm)
        else:
            self.flat_steps = 0
        if stop is not None and held is not None and stop[0] == "converged":
            self.best_loss, self.best_x, self.best_merit = loss_now, list(x_new), -math.inf  # the point that holds
        if stop is None and self.time_limited and past_time_limit():
            stop = ("max_steps", time_limit_reason(step))
        if self.on_progress is not None and (stop is not None or step % self.every == 0 or step == 1
                                             or step == options.steps):
            self.on_progress(ProgressRow(step, loss_now, change, grad_norm, step_norm, rate, rate_name,
                                         dict(zip(self.names, map(float, x_new))), time.perf_counter() - self.start))
        self.prev_loss, self.prev_merit = loss_now, merit
        return stop

    def _lm_stopped(self, why):
        """Levenberg-Marquardt stopped short of atol: converged if verdicts.judge finds r orthogonal to J there."""
        self.confirm = "lm"
        return "converged", why

    def _stopped_moving(self, why, grad_norm):
        """xtol or ftol fired: converged, or stalled when the gradient says this is no minimum.

        On a loss with kinks a first-order method's gradient proves nothing either
        way: the verdict is left to gradsolve.solve.verdicts, which probes the loss.
        """
        limit = stationary_gradient_limit(self.options.tol, self.first_grad_norm, self.options.dtype)
        needs_gradient = self.smooth or self.method == "lbfgs"
        self.moving_why = why
        if not needs_gradient:
            self.confirm = "kink"
            return "converged", why
        # judged again at the reported point (the best one seen), whose gradient the loop measures
        self.confirm = "gradient"
        return judge_stopped_moving(grad_norm, limit, self.method, why)


class BatchStops:
    """The stopping tests of `Watch`, per start of a batch, on the batch's device: running or not, why, when.

    ``observe(...)`` after each step applies atol, gtol, xtol and ftol (with their
    patience) to the running starts in `active`; a stop that only stopped moving
    (xtol, ftol) on a smooth loss where the gradient is not small is STALLED.
    ``stop(mask, code, why, step)`` records a stop for the running starts in
    `mask` (`why` indexes BATCH_TESTS).  On the cpu it first asks whether any start
    is in the mask (cheap, and most steps stop nobody); on a device it updates with
    masked selects and never waits for the device, so a step costs one
    synchronisation (the loop's "is any start still running").
    """

    RUNNING, CONVERGED, STALLED, DIVERGED = 0, 1, 2, 3

    def __init__(self, backend, K, options, *, atol_applies=True, smooth=True):
        self.xp = backend.xp
        self.check_first = backend.is_numpy
        self.active = backend.from_numpy(np.ones(K, dtype=bool))
        self.code = backend.from_numpy(np.zeros(K, dtype=np.int8))
        self.why = backend.from_numpy(np.zeros(K, dtype=np.int8))
        self.steps = backend.from_numpy(np.zeros(K, dtype=np.int64))
        self.flat = backend.from_numpy(np.zeros(K, dtype=np.int64))  # consecutive steps below ftol
        self.still = backend.from_numpy(np.zeros(K, dtype=np.int64))  # consecutive steps below xtol
        self.no = backend.from_numpy(np.zeros(K, dtype=bool))
        self.tol, self.atol = options.tol, options.atol
        self.atol_applies, self.smooth = atol_applies, smooth
        # relative to the first gradient norm, as Watch's limit
        self.still_limit = stationary_gradient_limit(options.tol, 1.0, options.dtype)

    def stop(self, mask, code, why, step) -> None:
        if self.check_first and not mask.any():
            return
        xp = self.xp
        self.code = xp.where(mask, code, self.code)
        self.why = xp.where(mask, why, self.why)
        self.steps = xp.where(mask, step, self.steps)
        self.active = self.active & ~mask

    def observe(self, step, active, loss_new, prev_loss, gnorm, first_gnorm, step_norm, x_norm) -> None:
        """Watch.observe's tests for every running start after a step."""
        xp, tol, no = self.xp, self.tol, self.no
        change = loss_new - prev_loss
        with np.errstate(invalid="ignore"):
            at = active & (loss_new <= self.atol) if self.atol_applies else no
            # Watch's geometric fall: gtol, xtol and ftol wait while the loss still halves at every step
            falling = ((loss_new >= 0) & (loss_new <= GEOMETRIC_FALL * prev_loss)) if self.atol_applies else no
            gt = active & ~at & (gnorm <= tol * first_gnorm) & ~falling
            small_step = (step_norm <= tol * x_norm) & ~falling
            small = (xp.abs(change) <= tol * xp.abs(prev_loss)) & ~falling
            # stopped moving on a slope: stalled, not converged (Watch._stopped_moving)
            sloped = (gnorm > self.still_limit * first_gnorm) if self.smooth else no
        self.flat = xp.where(small, self.flat + 1, 0)
        self.still = xp.where(small_step, self.still + 1, 0)
        xt = active & ~at & ~gt & (self.still >= FTOL_PATIENCE)
        ft = active & ~(at | gt | xt) & (self.flat >= FTOL_PATIENCE)
        for why, mask in enumerate((at, gt, xt, ft)):
            if why >= 2:  # xtol, ftol: converged only where the gradient is small
                self.stop(mask & sloped, self.STALLED, why, step)
                mask = mask & ~sloped
            self.stop(mask, self.CONVERGED, why, step)

    def any_active(self) -> bool:
        return bool(self.xp.any(self.active))
