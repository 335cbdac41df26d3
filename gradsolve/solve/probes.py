"""Probes of a reported point: pure functions of the loss, its gradient and its Hessian, measured there.

Each takes evaluators (``loss_at(values)``, ``hessian_at(values)``, ``grad_at(values)``)
and the point, and answers a question the verdicts ask (gradsolve.solve.verdicts):
how steeply does the loss still fall nearby (`descent_slope`, for losses with
kinks)?  is the residual orthogonal to the Jacobian (`lm_cosines`, MINPACK's
test)?  does the Hessian refute a minimum (`minimum_refuted`)?  where does
negative curvature lead (`escape_point`)?  does the loss seem unbounded below
(`unbounded_below`)?  A fall is only ever measured or read off the Hessian,
never assumed: no claim where an evaluation fails.
"""
from __future__ import annotations

import math

import numpy as np

from gradsolve.solve.bounds import held_by_bounds, limits, unknown_scales

__all__ = ["search_scales", "descent_slope", "lm_cosines", "curvature_rtol", "minimum_refuted", "escape_point", "unbounded_below",
           "describe_direction", "HESSIAN_LIMIT", "CURVATURE_RTOL"]

# A stop on a loss with kinks is probed (descent_slope) with SAMPLED_GRADIENTS * (n + 1) gradients near the
# point and along each unknown's axis, up to AXIS_PROBE_LIMIT unknowns.
AXIS_PROBE_LIMIT = 100
SAMPLED_GRADIENTS = 4
# lm_cosines: rounding in the residual, at most about eps * |J diag(x)|, is discounted LM_ROUNDING_SLACK times.
LM_ROUNDING_SLACK = 100.0
# A converged stop other than atol is confirmed a local minimum (minimum_refuted) up to HESSIAN_LIMIT free unknowns:
# the loss Hessian, in the unknowns' own scale (bounds.unknown_scales: |x_j|, no floor), may have no eigenvalue
# below -CURVATURE_RTOL times its largest |eigenvalue|.  1e-8 is about sqrt(eps): the Hessian comes from exact double-backward passes,
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
# A loss that keeps falling along the negative gradient by more at every tenfold step, out to UNBOUNDED_REACH
# times the unknowns' scale, is said to seem unbounded below.
UNBOUNDED_REACH = 6  # powers of ten
# escape_point: from a saddle, or from a degenerate minimum whose flat valley leads to negative curvature.
ESCAPE_DIRECTIONS = 3  # flat directions walked along
ESCAPE_WALK = (0.1, 0.5, 1.0)  # how far, in the unknowns' scale
ESCAPE_RISE = 1e-6  # the relative rise of the loss along a flat direction still counted as the valley's floor
ESCAPE_LEVEL = 1e-9  # the least relative fall of the loss that counts
ESCAPE_STEPS = (0.01, 0.1, 1.0)  # steps along the negative curvature, in the unknowns' scale


def descent_slope(loss_at, x, g, lower, upper, tol, names=None, grad_at=None, scales=None):
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
    lo, hi = limits(lower, upper)
    rel = math.sqrt(tol) if tol > 1e-16 else 1e-8
    f0 = loss_at(x)
    if not math.isfinite(f0) or n == 0:
        return 0.0, None
    held = np.array(held_by_bounds(g, x, lower, upper), dtype=bool)
    # each unknown's own size (its start, bounds, value: bounds.unknown_scales), no floor of 1, which has units
    scales = unknown_scales(x) if scales is None else np.asarray(scales, dtype=np.float64)
    length = rel * float(np.max(scales))
    directions = []

    def along(d, label):
        norm = float(np.linalg.norm(d))
        if norm > 0 and math.isfinite(norm):
            directions.append((d / norm * length, label))

    if grad_at is not None and n <= AXIS_PROBE_LIMIT:
        rng = np.random.default_rng(0)
        radius = rel * scales
        gradients = [np.asarray(g, dtype=np.float64)]
        for _ in range(SAMPLED_GRADIENTS * (n + 1)):
            gi = np.asarray(grad_at(np.clip(x + radius * rng.uniform(-1.0, 1.0, n), lo, hi)), dtype=np.float64)
            if np.all(np.isfinite(gi)):
                gradients.append(gi)
        along(-min_norm_point(np.where(held, 0.0, np.array(gradients))), "the nearby gradients' shortest combination")
    along(-np.where(held, 0.0, np.asarray(g, dtype=np.float64)), "the negative gradient")
    if n <= AXIS_PROBE_LIMIT:
        for i in range(n):
            for sign in (1.0, -1.0):
                step = np.zeros(n)
                step[i] = sign * rel * float(scales[i])
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


def min_norm_point(G, iterations=1000):
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


def curvature_rtol(eps) -> float:
    """The relative size below which an eigenvalue of the scaled loss Hessian counts as zero (see CURVATURE_RTOL)."""
    return CURVATURE_RTOL if eps <= float(np.finfo(np.float64).eps) else max(CURVATURE_RTOL, math.sqrt(eps))


class Curvature:
    """The loss Hessian at points near x over the unknowns that are free there, in their scale s_j (unknown_scales).

    Free: strictly inside the bounds and not held by one (`held_by_bounds`, with
    the gradient g at x).  ``usable`` is False where there are none or more than
    HESSIAN_LIMIT (no claim then).  ``spectrum(y)`` is (eigenvalues ascending,
    eigenvectors, the numerical zero b = curvature_rtol(eps) * max |lambda|) of
    diag(s) H(y) diag(s), or None where the Hessian fails or is not finite;
    ``step(u)`` turns a unit vector of that scale into a step in the unknowns.
    """

    def __init__(self, hessian_at, x, g, lower, upper, eps, scales=None):
        self.hessian_at = hessian_at
        self.rtol = curvature_rtol(eps)
        self.x = np.asarray(x, dtype=np.float64)
        self.lo, self.hi = limits(lower, upper)
        held = np.array(held_by_bounds(g, self.x, lower, upper), dtype=bool)
        self.idx = np.flatnonzero(~held & (self.x > self.lo) & (self.x < self.hi))
        self.scale = (unknown_scales(self.x) if scales is None else np.asarray(scales, dtype=np.float64))[self.idx]
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
        return lam, V, self.rtol * float(np.max(np.abs(lam)))

    def step(self, u):
        d = np.zeros(self.x.size)
        d[self.idx] = u * self.scale
        return d

    def clip(self, v):
        return np.clip(v, self.lo, self.hi)


def minimum_refuted(loss_at, hessian_at, x, g, lower, upper, *, smooth, eps, names=None, scales=None):
    """None where x may be a local minimum of the loss (or nothing can be said), else why it is not one, in words.

    `loss_at(values)` evaluates the loss, `hessian_at(values)` its Hessian, `g`
    is the gradient at x.  With the eigenvalues lambda of the Hessian over the
    free unknowns in their scale and its numerical zero b (`Curvature`):

    * lambda < -b: the loss curves down along that direction (a saddle or a
      maximum).  On a loss with kinks the Hessian is only that of one piece,
      so the fall is measured first: the mean of the loss a step of PROBE_STEP
      away both ways must lie below the loss itself by more than rounding;
    * |lambda| <= b: the Hessian says nothing there (x**3 at 0, (x - 1)**4 at 1):
      the loss is probed a step of PROBE_STEP and of twice that along the
      direction, each way; a fall at both, larger at the longer step, and beyond
      the gradient's share (``|g . step|``) and rounding (`loss_rounding`) each
      time, refutes a minimum.  A flat true minimum rises, or falls only by what
      its small gradient explains.

    A fall is only ever measured or read off the Hessian, never assumed: no claim
    where the Hessian cannot be computed or is not finite.
    """
    x = np.asarray(x, dtype=np.float64)
    g = np.asarray(g, dtype=np.float64)
    at = curvature_at(loss_at, hessian_at, x, g, lower, upper, eps, scales)
    if at is None:
        return None
    curvature, (lam, V, bound), f0 = at
    noise = loss_rounding(loss_at, x, f0, eps)
    for k in np.flatnonzero(lam < -bound)[:3]:
        d = curvature.step(V[:, k])
        if smooth:
            return f"a saddle point or maximum, the loss curves down along {describe_direction(d, names)}"
        mean = (loss_at(curvature.clip(x + PROBE_STEP * d)) + loss_at(curvature.clip(x - PROBE_STEP * d))) / 2.0
        if mean < f0 - noise:
            return (f"a saddle point or maximum, the loss curves down along {describe_direction(d, names)} (by "
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
                return (f"the loss falls along {describe_direction(sign * d, names, oriented=True)}, where it has no "
                        f"curvature (by "
                        f"{falls[0]:.3g} a step of {PROBE_STEP:g} of the unknowns' scale away): a degenerate "
                        f"saddle such as x^3 at 0")
    return None


def curvature_at(loss_at, hessian_at, x, g, lower, upper, eps, scales=None):
    """(curvature, its spectrum (lam, V, bound), loss) at x, or None where the Hessian or the loss is unusable."""
    curvature = Curvature(hessian_at, x, g, lower, upper, eps, scales)
    spectrum = curvature.spectrum(x) if curvature.usable else None
    f0 = loss_at(x)
    if spectrum is None or not math.isfinite(f0):
        return None
    return curvature, spectrum, f0


def search_scales(x) -> np.ndarray:
    """The scales an escape searches in: each unknown's |x_j|, none below the point's RMS magnitude.

    A search, not a verdict: a lower point it finds is verified by the run that
    follows.  Lanczos2's merged exponentials need their small amplitudes (0.1)
    walked at the size of the point (its RMS, 2.6) to find the curvature that
    leads off the degenerate valley; each unknown's own scale (its value or its
    start) stays in it (RSS 1.9e5 times the certified one).
    """
    x = np.abs(np.asarray(x, dtype=np.float64))
    rms = float(np.sqrt(np.mean(x * x))) if x.size else 0.0
    return np.maximum(x, rms) if rms > 0 else unknown_scales(x)


def escape_point(loss_at, hessian_at, x, g, lower, upper, *, eps, scales=None):
    """A point clearly below the loss at x, reached along a direction of negative curvature; None when none is found.

    Where the Hessian at x (over the free unknowns in their scale, `Curvature`)
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
    at = curvature_at(loss_at, hessian_at, x, g, lower, upper, eps, search_scales(x) if scales is None else scales)
    if at is None:
        return None
    curvature, (lam, V, bound), f0 = at
    level = max(ESCAPE_LEVEL * abs(f0), loss_rounding(loss_at, x, f0, eps))
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


def loss_rounding(loss_at, x, f0, eps) -> float:
    """How much the loss at x moves by rounding: PROBE_ROUNDING * eps * |f0|, or 8 times the largest change
    under three perturbations of the unknowns by 4 eps of themselves (signs from a fixed seed), if larger."""
    rng = np.random.default_rng(0)
    spread = 0.0
    for _ in range(3):
        f = loss_at(x * (1.0 + 4.0 * eps * rng.choice((-1.0, 1.0), size=x.size)))
        if math.isfinite(f):
            spread = max(spread, abs(f - f0))
    return max(PROBE_ROUNDING * eps * max(abs(f0), float(np.finfo(np.float64).tiny)), 8.0 * spread)


def describe_direction(d, names=None, *, oriented=False) -> str:
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


def unbounded_below(loss_at, x, g, lower, upper, scales=None):
    """(loss, distance) where the loss, stepped along -g by 1, 10, ... 10**UNBOUNDED_REACH times the unknowns' scale
    (unknown_scales), fell at every step, each time by at least half the fall before (a linear fall grows tenfold,
    -log(x)'s stays the same; -atan(x), bounded, shrinks tenfold); None otherwise.  -inf counts as a fall."""
    x = np.asarray(x, dtype=np.float64)
    g = np.asarray(g, dtype=np.float64)
    top = float(np.max(np.abs(g))) if g.size else 0.0
    if not (top > 0 and math.isfinite(top)):
        return None
    unit = g / top  # scaled first: the norm of a gradient of 1e308 overflows
    lo, hi = limits(lower, upper)
    scales = unknown_scales(x) if scales is None else np.asarray(scales, dtype=np.float64)
    direction = -unit / float(np.linalg.norm(unit)) * float(np.max(scales))
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
