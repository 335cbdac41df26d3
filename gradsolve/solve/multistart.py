"""Batched multistart: solve K starting points together and report every distinct solution found.

A nonlinear system can have several solutions (the circle x**2 + y**2 = 25 meets
the line x + y = 7 at (3, 4) and at (4, 3)); one start finds one of them.

Starts.  The first start is the problem's own starting point; the other K - 1
are drawn from a stream of the seed of their own (``STARTS_STREAM``), independent
of the ``default_rng(seed)`` stream that gives unknowns without a start their
random value: uniform within the bounds for an unknown with both a ``min`` and a
``max``, otherwise ``init + N(0, s)`` with ``s`` the unknown's own scale
(bounds.unknown_scales: |init|, its bounds, or the scale its equations'
constants give it, as 5e-11 A for a current through 10 GOhm at 0.5 V), then
clipped into whatever bounds there are.

One batch.  First-order methods (sgd, adam, ...) run all K starts as one
``(K, p)`` array: the traced array code (or the engine over ``(K, 1)`` leaf
tensors with ``--no-trace``) evaluates K losses and gradients per call, the
gs.optim update rule (``Optimizer.apply_update``, the one definition) moves all rows
at once with a per-start learning rate, the learning-rate rule
(stopping.RateRule, per start) halves it on plateaus and doubles it on steady falls, the
single start's stopping tests run per start (stopping.BatchStops), and a start that stops (converged or
diverged) is frozen; afterwards the starts are judged as a single start is, at
the point reported for each: on a smooth loss the starts that stopped moving by
the gradient there, on a loss with kinks by probing the loss, and every start
converged other than by atol by the verdicts' curvature check (a saddle or a
maximum is stalled), once per distinct point.  So the cost of a
step grows far slower than K.  The batch lives on the problem's device (points,
optimizer state, rates, stopping state; see ``run_batch``): on a GPU each step
is a few dozen array operations over K starts there, and the results come back
to the host once, at the end.  Levenberg-Marquardt and L-BFGS, whose
iterations branch per start (damping retries, line searches), solve the starts
one after another with the single-start loop (traced when possible), whose
curvature check, too, runs once per distinct point afterwards (and so without
Levenberg-Marquardt's escape from saddles: the other starts are the search).

Solutions.  The candidates are the starts that converged (when none did, the
``UNCONVERGED_LISTED`` best finite points, which are not solutions).  They are
grouped by distance in the unknowns' scale: two points are one solution when every unknown differs by at most ``CLUSTER_RTOL`` times the larger of |v|
and the unknown's own scale (so picoampere solutions stay apart);
groups are listed best loss first, each with how many starts reached it (when the
best group's equations hold, to rounding or within ``atol``, groups where they do
not are dropped: they stalled).  When
the best solution's Jacobian is rank deficient the solutions form a continuum
(the four-unknown puzzle), which is reported once, with its ``solution_set``,
not as K points.  The top-level parameters, status and exit code are the best
solution's.
"""
from __future__ import annotations

import math
import time

import numpy as np
import sympy

import gradsolve as gs
from gradsolve.methods import DEFAULT_LR, FIRST_ORDER
from gradsolve.problem import analysis
from gradsolve.problem.lowering import compile_program
from gradsolve.solve.bounds import is_bounded, limits, names_at_bounds, projected_max_abs, unknown_scales
from gradsolve.solve.loop import FIRST_ORDER_CLASSES, run, sgd_rate
from gradsolve.solve.points import loss_and_gradient, loss_traits, set_values, unreached_unknowns, values_of
from gradsolve.solve.records import Outcome, ProgressRow
from gradsolve.solve.stopping import (BATCH_TESTS, BatchStops, RateRule, past_time_limit, stop_reason,
                                      time_limit_reason)
from gradsolve.solve.trace import ArraySlot, TracedPoint
from gradsolve.solve.verdicts import (Stop, held_to_rounding, confirm_kink_stop, confirm_minimum_stop, diverged_advice,
                                      judge_stopped_moving, short_stop_reason, stationary_gradient_limit)

__all__ = ["draw_starts", "cluster", "solve_multistart", "solutions_listed", "run_batch", "EagerBatch",
           "CLUSTER_RTOL"]

CLUSTER_RTOL = 1e-6


#: The multistart draws use their own stream of the seed: the one numpy's ``SeedSequence(seed).spawn``
#: would give as child 1.  The problem's own random starting values come from ``default_rng(seed)``
#: (gradsolve.problem.spec); drawing the starts from that stream too made start 1 repeat the deviates
#: of start 0 (for an unknown with a random init, start 1 was exactly 2x start 0).
STARTS_STREAM = 1


def _holds(spec, lowered, x, options) -> bool:
    """The equations of `spec` hold at x to rounding (verdicts.held_to_rounding); False for a fit or minimize."""
    if spec.kind != "equations" or spec.n_rows is not None:
        return False
    saved = lowered.values()
    try:
        return held_to_rounding(spec, lowered, np.asarray(x, dtype=np.float64), options.dtype) is not None
    finally:
        lowered.set_values(saved)


def _scales(spec, lowered):
    """Each unknown's own scale at the problem's start (bounds.unknown_scales), its equations' constants included."""
    init = spec.initial_values()
    lo, hi = spec.bounds()
    hint = None
    if spec.kind == "equations" and spec.n_rows is None:
        saved = lowered.values()
        try:
            hint = analysis.constant_scales(lowered, init)
        except Exception:  # noqa: BLE001 - a hint only: without it the other scales stand
            hint = None
        finally:
            lowered.set_values(saved)
    return unknown_scales(init, None, lo, hi, hint=hint)


def draw_starts(spec, K: int, seed: int, scales=None) -> np.ndarray:
    """(K, p) starting points: the problem's own first, then K - 1 drawn from `seed` (see the module doc);
    `scales` (default: bounds.unknown_scales of the start and bounds) sets each unknown's spread."""
    init = spec.initial_values()
    lo, hi = spec.bounds()
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(STARTS_STREAM,)))
    starts = np.empty((K, init.shape[0]))
    starts[0] = init
    if K > 1:
        both = np.isfinite(lo) & np.isfinite(hi)
        spread = unknown_scales(init, None, lo, hi) if scales is None else np.asarray(scales, dtype=np.float64)
        normal = init + rng.standard_normal((K - 1, init.shape[0])) * spread
        uniform = rng.uniform(np.where(both, lo, 0.0), np.where(both, hi, 1.0), size=(K - 1, init.shape[0]))
        starts[1:] = np.where(both, uniform, normal)
    return np.clip(starts, lo, hi)


class EagerBatch:
    """The engine over a batch: each unknown a (K, 1) leaf tensor, the program compiled over them.

    The tensors live on the lowered problem's device; ``batch_loss_grad`` takes and
    returns arrays on it (``backend``), as ``Trace.batch_loss_grad`` does.
    """

    def __init__(self, spec, lowered, K: int):
        self.kind = spec.kind
        self.K = K
        device = lowered.device
        self.backend = gs.backend.get_backend(device)
        dtype = lowered.dtype
        self.params = [gs.zeros((K, 1), dtype=dtype, device=device, requires_grad=True) for _ in lowered.params]
        inputs = {sympy.Symbol(n, real=True): p for n, p in zip(spec.unknown_names, self.params)}
        inputs.update({sympy.Symbol(n, real=True): t for n, t in lowered.data.items()})
        self.program = compile_program(spec.expressions, inputs, dtype=dtype, device=device)
        self.widths = [spec.n_rows or 1 for _ in spec.expressions]
        self.zeros = gs.zeros((K, 1), dtype=dtype, device=device)

    def batch_loss_grad(self, X):
        backend = self.backend
        xp = backend.xp
        if isinstance(X, np.ndarray) and not backend.is_numpy:
            X = backend.from_numpy(np.ascontiguousarray(X))
        with gs.no_grad():
            for j, p in enumerate(self.params):
                p._assign_(xp.asarray(X[:, j:j + 1], dtype=p._data.dtype))
        for p in self.params:
            p.grad = None
        outs = self.program.run()
        if self.kind == "minimize":
            loss = (outs[0] + self.zeros).reshape(self.K)
        else:
            pieces = [o.reshape(1, -1) if o.ndim == 1 else o for o in outs]
            pieces = [piece + self.zeros for piece in pieces]
            r = pieces[0] if len(pieces) == 1 else gs.cat(pieces, dim=1)
            loss = (r * r).sum(dim=1)
        if loss.requires_grad:
            loss.sum().backward()
        f64 = xp.float64
        G = xp.concat([xp.zeros((self.K, 1), dtype=f64) if p.grad is None else xp.asarray(p.grad._data, dtype=f64)
                       for p in self.params], axis=1)
        return xp.asarray(loss.detach()._data, dtype=f64), G


def run_batch(evaluator, X0, options, *, method: str, lower=None, upper=None, lr=None, on_progress=None,
              every: int = 100, names=(), atol_applies=True, smooth=True):
    """First-order method on K starts at once; returns per-start dict of NumPy arrays (see solve_multistart).

    `evaluator.batch_loss_grad(X) -> (loss (K,), G (K, p))`, on the device of
    `evaluator.backend` (NumPy when it has none).  Per start: the loop's
    stopping tests (atol, gtol, xtol, ftol with patience), best point, divergence;
    a stopped start is frozen.  `atol_applies` and `smooth` as gradsolve.solve.points says of an objective.

    The whole batch -- points, optimizer state, per-start learning rates, stopping
    state -- stays on the evaluator's device from the first step to the last: the
    starts go there once and the results come back once.
    """
    if method not in FIRST_ORDER:
        raise ValueError(f"run_batch runs first-order methods, not {method}")
    backend = getattr(evaluator, "backend", None) or gs.backend.get_backend("cpu")
    xp = backend.xp
    f64 = xp.float64

    def device(array):  # host -> device, once per array
        return backend.from_numpy(np.ascontiguousarray(array, dtype=array.dtype))

    def as64(array):
        return xp.asarray(array, dtype=f64)

    host = np.array(X0, dtype=np.float64)
    K, p = host.shape
    lower, upper = (lower or [None] * p), (upper or [None] * p)
    lo_h, hi_h = limits(lower, upper)
    bounded = is_bounded(lower, upper)
    lo, hi = device(lo_h), device(hi_h)
    X = device(np.clip(host, lo_h, hi_h))
    opt = FIRST_ORDER_CLASSES[method]([gs.tensor(0.0, requires_grad=True)], lr=lr, weight_decay=0.0)  # as loop
    group = opt.param_groups[0]
    group["lr"] = device(np.full((K, 1), float(lr)))
    slot, state = ArraySlot(X, xp), {}
    rates = RateRule(float(lr), K=K, xp=xp, device=device) if method != "sgd" else None
    stops = BatchStops(backend, K, options, atol_applies=atol_applies, smooth=smooth)
    best_loss, best_x = device(np.full(K, math.inf)), X
    last_finite = X
    prev_loss = device(np.full(K, math.nan))
    first_gnorm = None
    history = []
    all_active = True
    interrupted = timed_out = False
    start = time.perf_counter()
    loss, G = evaluator.batch_loss_grad(X)
    loss, G = as64(loss), as64(G)
    step = 0
    try:
        for step in range(1, options.steps + 1):
            active = stops.active
            if step == 1:  # later losses were checked when they were measured (below)
                stops.stop(active & ~xp.isfinite(loss), stops.DIVERGED, 0, step)
                active = stops.active
            better = active & (loss < best_loss)
            best_loss = xp.where(better, loss, best_loss)
            best_x = xp.where(better[:, None], X, best_x)
            slot._data = X
            with np.errstate(all="ignore"):
                opt.apply_update(slot, G, state, group)
            X_new = slot._data if all_active else xp.where(active[:, None], slot._data, X)
            if bounded:
                X_new = xp.minimum(xp.maximum(X_new, lo), hi)  # np.clip, in the standard's terms
                # components a bound holds do not count (bounds.held_by_bounds)
                G = xp.where(((X <= lo) & (G > 0)) | ((X >= hi) & (G < 0)), 0.0, G)
            gnorm = _row_max_abs(xp, G)
            loss_new, G = evaluator.batch_loss_grad(X_new)
            loss_new, G = as64(loss_new), as64(G)
            if rates is not None:
                group["lr"] = rates.step(loss_new, active, group["lr"])
            ok = xp.isfinite(loss_new)
            for j in range(p):
                ok = ok & xp.isfinite(X_new[:, j])
            newly = active & ~ok
            stops.stop(newly, stops.DIVERGED, 0, step)
            X_new = xp.where(newly[:, None], last_finite, X_new)
            active = stops.active
            last_finite = xp.where(active[:, None], X_new, last_finite)
            better = active & (loss_new < best_loss)
            best_loss = xp.where(better, loss_new, best_loss)
            best_x = xp.where(better[:, None], X_new, best_x)
            if step == 1:
                first_gnorm = gnorm
            step_norm = _row_norm(xp, X_new - X)
            x_norm = _row_norm(xp, X_new)
            stops.observe(step, active, loss_new, prev_loss, gnorm, first_gnorm, step_norm, x_norm)  # Watch's tests
            prev_loss, X, loss = loss_new, X_new, loss_new
            running = stops.any_active()  # the one wait for the device per step
            all_active = bool(xp.all(stops.active)) if stops.check_first else False
            history.append(xp.min(best_loss))
            if on_progress is not None and (step % every == 0 or step == 1 or not running or step == options.steps):
                k = int(xp.argmin(best_loss))
                on_progress(ProgressRow(step, float(best_loss[k]), None, float(gnorm[k]), None,
                                        float(group["lr"][k, 0]), "lr",
                                        dict(zip(names, backend.to_numpy(best_x[k, :]).tolist())),
                                        time.perf_counter() - start))
            if not running:
                break
            if past_time_limit():
                timed_out = True
                break
    except KeyboardInterrupt:
        interrupted = True
    out = _outcome(backend, stops, best_x, best_loss, history, step, interrupted, method, options, group["lr"],
                   time.perf_counter() - start, timed_out)
    # what solve_multistart needs to confirm, on a loss with kinks, the stops that only stopped moving
    out["first_gnorm"] = np.array(backend.to_numpy(first_gnorm), dtype=np.float64) if first_gnorm is not None \
        else np.zeros(K)
    out["lr"] = np.array(backend.to_numpy(group["lr"][:, 0]), dtype=np.float64)
    code, why = backend.to_numpy(stops.code), backend.to_numpy(stops.why)
    out["stopped_moving"] = np.asarray((code == stops.CONVERGED) & (why >= 2), dtype=bool)  # xtol or ftol
    # xtol or ftol where the gradient was not small
    out["slope_stalled"] = np.asarray(code == stops.STALLED, dtype=bool)
    out["why"] = np.asarray(why, dtype=np.int64)
    out["atol_stop"] = np.asarray((code == stops.CONVERGED) & (why == 0), dtype=bool)
    return out


def _outcome(backend, stops, best_x, best_loss, history, step, interrupted, method, options, group_lr, elapsed,
             timed_out=False):
    """The batch's results, back on the host once: values, losses, status and reason strings, steps."""
    host = backend.to_numpy
    code, why, steps = host(stops.code), host(stops.why), np.array(host(stops.steps), dtype=np.int64)
    running = code == stops.RUNNING
    steps[running] = step
    status = np.full(code.shape, "interrupted" if interrupted else "max_steps", dtype=object)
    reason = np.full(code.shape, f"interrupted at step {step}" if interrupted
                     else time_limit_reason(step) if timed_out
                     else f"reached the step limit ({options.steps})", dtype=object)
    whys = np.array([stop_reason(test, atol=options.atol) for test in BATCH_TESTS], dtype=object)
    for k in (stops.CONVERGED, stops.STALLED):
        mask = code == k
        status[mask] = "converged" if k == stops.CONVERGED else "stalled"
        reason[mask] = whys[why[mask]]
    stalled = code == stops.STALLED
    reason[stalled] = [f"{method} stopped moving ({w}) where the gradient is not small: not a minimum"
                       for w in reason[stalled]]
    diverged = code == stops.DIVERGED
    status[diverged] = "diverged"
    lr_of = np.array(host(group_lr), dtype=np.float64).reshape(-1) if group_lr is not None else None
    reason[diverged] = [f"the loss became non-finite at step {s}"
                        + (diverged_advice(lr_of[k]) if lr_of is not None and s > 1 else "")
                        for k, s in zip(np.flatnonzero(diverged), steps[diverged])]
    if history:
        history = [float(v) for v in host(backend.xp.stack(history))]
    return {"values": np.array(host(best_x), dtype=np.float64), "loss": np.array(host(best_loss), dtype=np.float64),
            "status": status, "reason": reason, "steps": steps, "history": history, "elapsed_s": elapsed}


def _row_max_abs(xp, A):
    """max |A[k, j]| over j (NaN if any is NaN), a column at a time: fast for few columns."""
    out = xp.zeros(A.shape[0], dtype=A.dtype)
    for j in range(A.shape[1]):
        out = xp.maximum(out, xp.abs(A[:, j]))
    return out


def _row_norm(xp, A):
    """The Euclidean norm of each row, a column at a time."""
    out = xp.zeros(A.shape[0], dtype=A.dtype)
    for j in range(A.shape[1]):
        column = A[:, j]
        out = out + column * column
    return xp.sqrt(out)


UNCONVERGED_LISTED = 10


def cluster(values, losses, rtol: float = CLUSTER_RTOL, *, return_labels: bool = False, scales=None):
    """Group points (rows of `values`) that agree to `rtol` in each unknown's scale; best loss first.

    The scale of an unknown is the larger of |value| and `scales` (its own scale, see
    bounds.unknown_scales; default none), so the test has no units of its own.

    Returns a list of (index of the group's best point, count), ordered by loss; with
    `return_labels`, also each point's group (an index into that list).
    Greedy in order of loss; each point is compared only with the groups whose
    first coordinate lies within the tolerance window (centres kept sorted on it),
    so K scattered points cost O(K log K), not O(K^2).
    """
    import bisect

    values = np.asarray(values, dtype=np.float64)
    floor = np.zeros(values.shape[1] if values.ndim == 2 else 0) if scales is None else np.asarray(scales, float)
    order = np.argsort(losses, kind="stable")
    keys = []      # first coordinate of each centre, sorted
    slots = []     # index into centers/counts/firsts, in the order of keys
    centers, counts, firsts = [], [], []
    labels = np.zeros(len(order), dtype=np.int64)
    for i in order:
        v = values[i]
        v0 = float(v[0])
        # |c0 - v0| <= rtol * max(floor0, |c0|, |v0|) implies c0 lies in this window
        reach = rtol * max(float(floor[0]) if floor.size else 0.0, abs(v0)) / (1.0 - rtol) if rtol < 1 else np.inf
        lo = bisect.bisect_left(keys, v0 - reach)
        hi = bisect.bisect_right(keys, v0 + reach)
        found = None
        for k in range(lo, hi):
            c = centers[slots[k]]
            scale = np.maximum(floor, np.maximum(np.abs(c), np.abs(v)))
            if np.all(np.abs(c - v) <= rtol * scale):
                if found is None or slots[k] < found:
                    found = slots[k]  # the best (earliest) matching group
        if found is not None:
            counts[found] += 1
            labels[i] = found
            continue
        position = bisect.bisect_left(keys, v0)
        keys.insert(position, v0)
        slots.insert(position, len(centers))
        labels[i] = len(centers)
        centers.append(v)
        counts.append(1)
        firsts.append(int(i))
    groups = list(zip(firsts, counts))
    return (groups, labels) if return_labels else groups


def solve_multistart(spec, lowered, objective, options, *, method, lower, upper, trace, how, on_progress=None,
                     every=100, on_start=None, starts=None, one_after_another=False):
    """Solve `options.starts` starts of `spec`: (the Outcome of the best, the distinct solutions as (index, count,
    values, loss) best first, how many starts were candidates).  `trace` is the problem's Trace or None (then
    `how` says why), as gradsolve.solve.solver decided.  `starts` (K, p) replaces the drawn ones;
    `one_after_another` runs first-order methods through the single-start loop too (an objective the batch
    cannot evaluate, such as a weighted fit's)."""
    K = options.starts
    names = spec.unknown_names
    scales = _scales(spec, lowered)
    starts = draw_starts(spec, K, options.seed, scales) if starts is None else np.asarray(starts, dtype=np.float64)
    t0 = time.perf_counter()
    if method in FIRST_ORDER and not one_after_another:
        evaluator = trace
        if trace is None:
            evaluator = EagerBatch(spec, lowered, K)
        else:
            how = trace.batch_label
        if on_start is not None:
            on_start(f"{method} — {how}, {K} starts as one batch", names)
        lr = options.lr or (DEFAULT_LR.get(method) if method != "sgd" else sgd_rate(objective, objective.params))
        atol_applies, smooth = loss_traits(objective)
        out = run_batch(evaluator, starts, options, method=method, lower=lower, upper=upper, lr=lr,
                        on_progress=on_progress, every=every, names=names, atol_applies=atol_applies, smooth=smooth)
        out["starts"] = starts  # with the bounds, each start's unknowns' own scales (the verdicts' probes)
        if smooth:
            _judge_stops_at_best_points(evaluator, out, options, method, lower, upper)
        else:
            _confirm_kink_stops(objective, out, options, method, lower, upper)
    else:
        if on_start is not None:
            on_start(f"{method} — {how}, {K} starts one after another", names)
        out = _run_each(spec, lowered, objective, options, method, lower, upper, trace, starts, on_progress,
                        max(every, K // 50))
        out["starts"] = starts
    _confirm_minima(objective, out, options, method, lower, upper)
    elapsed = time.perf_counter() - t0

    status, losses, values = out["status"], out["loss"], out["values"]
    converged = status == "converged"
    candidates = np.flatnonzero(converged if converged.any() else np.isfinite(losses))
    if candidates.size == 0:
        candidates = np.arange(K)
    groups = cluster(values[candidates], np.where(np.isfinite(losses[candidates]), losses[candidates], math.inf),
                     scales=scales)
    groups = [(int(candidates[i]), n) for i, n in groups]
    if loss_traits(objective)[0]:
        # equations that hold (to rounding, or within an explicit atol): groups merely stalled elsewhere are not
        # solutions
        solved = [(i, n) for i, n in groups if losses[i] <= options.atol or _holds(spec, lowered, values[i], options)]
        if solved and solved[0][0] == groups[0][0]:
            groups = solved
    if not converged.any():
        # No start converged: these are not solutions, only the best points reached. Listing
        # every one of K scattered points helps nobody; keep the best few.
        groups = groups[:UNCONVERGED_LISTED]
    best = groups[0][0]

    params = objective.params
    set_values(params, values[best])
    final_loss, g = loss_and_gradient(objective, params)
    reason = str(out["reason"][best])
    if method in FIRST_ORDER:  # the single-start loop (lm, lbfgs) gave its runs this reason already
        set_values(params, starts[best])
        loss0, _ = loss_and_gradient(objective, params)
        reason = short_stop_reason(Stop(objective, values[best], g, lower, upper, options, method, str(status[best]),
                                        reason, loss=final_loss, loss0=loss0, start=starts[best]))
        set_values(params, values[best])
    outcome = Outcome(status=str(status[best]), stop_reason=reason, optimizer=method,
                      steps=int(out["steps"][best]), loss=final_loss,
                      gradient_norm=float(np.max(np.abs(g))) if g.size else 0.0, values=values_of(params),
                      elapsed_s=elapsed, loss_history=out["history"],
                      at_bounds=names_at_bounds(names, values[best], lower, upper))
    solutions = [(i, int(n), values[i], float(losses[i])) for i, n in groups]
    return outcome, solutions, int(candidates.size)


def solutions_listed(names, solutions) -> list[dict]:
    """The result's ``solutions``: each distinct solution's parameters, loss and how many starts reached it."""
    return [{"parameters": dict(zip(names, map(float, values))), "loss": loss, "starts": count}
            for _, count, values, loss in solutions]


def _judge_per_point(objective, out, flagged, judge):
    """Give the starts in `flagged` (indices) the verdict of `judge(k, g) -> (status, reason)` at their point,
    asked once per distinct point (cluster) and given to every start of that cluster when not converged."""
    if flagged.size == 0:
        return
    values = out["values"]
    groups, labels = cluster(values[flagged], out["loss"][flagged], return_labels=True)
    params = objective.params
    saved = values_of(params)
    try:
        for label, (i, _count) in enumerate(groups):
            k = flagged[i]
            set_values(params, values[k])
            _, g = loss_and_gradient(objective, params)
            status, reason = judge(k, g)
            if status != "converged":
                members = flagged[labels == label]
                out["status"][members] = status
                out["reason"][members] = reason
    finally:
        set_values(params, saved)


def _stop_at(objective, out, k, g, options, method, lower, upper) -> Stop:
    """Start k's stop as the verdicts read it."""
    return Stop(objective, out["values"][k], g, lower, upper, options, method, str(out["status"][k]),
                str(out["reason"][k]), start=out["starts"][k])


def _confirm_kink_stops(objective, out, options, method, lower, upper):
    """On a loss with kinks, the starts that merely stopped moving are converged only where no nearby
    step goes down (verdicts.confirm_kink_stop, as a single start gets)."""
    def judge(k, g):
        return confirm_kink_stop(_stop_at(objective, out, k, g, options, method, lower, upper),
                                 stationary_gradient_limit(options.tol, float(out["first_gnorm"][k]), options.dtype),
                                 float(out["lr"][k]))

    _judge_per_point(objective, out, np.flatnonzero(out["stopped_moving"] & (out["status"] == "converged")), judge)


def _judge_stops_at_best_points(evaluator, out, options, method, lower, upper):
    """On a smooth loss, the starts whose steps stopped (xtol, ftol) are judged by the gradient at the point
    reported for them (their best), as a single start is (verdicts.judge): converged where it is small, else
    stalled."""
    moved = out["stopped_moving"] | out["slope_stalled"]
    if not moved.any():
        return
    backend = getattr(evaluator, "backend", None) or gs.backend.get_backend("cpu")
    values = out["values"]
    _, G = evaluator.batch_loss_grad(values)
    G = np.array(backend.to_numpy(G), dtype=np.float64).reshape(values.shape)
    for k in np.flatnonzero(moved):
        limit = stationary_gradient_limit(options.tol, float(out["first_gnorm"][k]), options.dtype)
        at_best = projected_max_abs(G[k], values[k], lower, upper)
        why = stop_reason(BATCH_TESTS[int(out["why"][k])], atol=options.atol)
        out["status"][k], out["reason"][k] = judge_stopped_moving(at_best, limit, method, why)


def _confirm_minima(objective, out, options, method, lower, upper):
    """The starts that converged other than by atol are converged only at a local minimum (verdicts'
    confirm_minimum_stop, as a single start gets)."""
    def judge(k, g):
        stop = _stop_at(objective, out, k, g, options, method, lower, upper)
        stop.flat = unreached_unknowns(objective, objective.params)
        return confirm_minimum_stop(stop)

    _judge_per_point(objective, out, np.flatnonzero((out["status"] == "converged") & ~out["atol_stop"]), judge)


def _run_each(spec, lowered, objective, options, method, lower, upper, trace, starts, on_progress, every):
    """The single-start loop once per start (lm, lbfgs)."""
    K = starts.shape[0]
    values = np.empty_like(starts)
    losses = np.full(K, math.inf)
    status = np.array(["max_steps"] * K, dtype=object)
    reason = np.array([""] * K, dtype=object)
    steps = np.zeros(K, dtype=np.int64)
    atol_stop = np.zeros(K, dtype=bool)
    history = []
    gnorms = np.zeros(K)
    t0 = time.perf_counter()
    for k in range(K):
        if k and past_time_limit():  # the starts left are not run: the best of those that ran is the answer
            status[k:], reason[k:], values[k:] = "max_steps", f"not run: {time_limit_reason()}", starts[k:]
            break
        set_values(objective.params, starts[k])
        point = TracedPoint(trace, starts[k], lowered.dtype) if trace is not None else None
        # the curvature check of converged stops runs afterwards, once per distinct point (_confirm_minima)
        outcome = run(objective, options, method=method, lower=lower, upper=upper, point=point,
                      confirm_minimum=False)
        values[k], losses[k] = outcome.values, outcome.loss
        status[k], reason[k], steps[k] = outcome.status, outcome.stop_reason, outcome.steps
        atol_stop[k] = outcome.atol_stop
        gnorms[k] = outcome.gradient_norm
        history.append(float(np.min(losses[:k + 1])))
        if on_progress is not None and ((k + 1) % every == 0 or k in (0, K - 1)):
            j = int(np.argmin(losses[:k + 1]))
            on_progress(ProgressRow(k + 1, float(losses[j]), None, float(gnorms[j]), None, None, "start",
                                    dict(zip(spec.unknown_names, values[j].tolist())), time.perf_counter() - t0))
        if outcome.status == "interrupted":
            status[k + 1:] = "interrupted"
            values[k + 1:] = starts[k + 1:]
            break
    return {"values": values, "loss": losses, "status": status, "reason": reason, "steps": steps,
            "history": history, "atol_stop": atol_stop}
