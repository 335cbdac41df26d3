"""Bounds on the unknowns, in the two forms the solver uses, and the rules every test applies to them.

A problem gives its bounds as arrays with -inf/+inf for "none" (``spec.bounds()``);
the optimizers and the loop take lists with ``None`` for "none" (so that
``any(v is not None ...)`` says whether a problem is bounded at all).  `optional`
and `limits` convert between the two; nothing else does.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["optional", "limits", "unbounded", "is_bounded", "clip_values", "held_by_bounds", "projected_max_abs",
           "names_at_bounds", "unknown_scales"]


def optional(lo, hi) -> tuple[list, list]:
    """(lower, upper) as lists of floats, None where an array of limits says -inf/+inf (or NaN)."""
    return ([None if not math.isfinite(v) else float(v) for v in lo],
            [None if not math.isfinite(v) else float(v) for v in hi])


def limits(lower, upper) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) float64 arrays, -inf/+inf where a list of optional bounds says None."""
    return (np.array([-math.inf if v is None else v for v in lower], dtype=np.float64),
            np.array([math.inf if v is None else v for v in upper], dtype=np.float64))


def unbounded(n: int) -> tuple[list, list]:
    """Optional bounds for n free unknowns."""
    return [None] * n, [None] * n


def is_bounded(lower, upper) -> bool:
    return any(v is not None for v in list(lower) + list(upper))


def clip_values(values, lower, upper) -> list:
    """Each value clipped into its optional bounds, as Python floats (first-order methods project every step)."""
    return [min(max(v, -math.inf if lo is None else lo), math.inf if hi is None else hi)
            for v, lo, hi in zip(values, lower, upper)]


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


def names_at_bounds(names, values, lower, upper) -> list[str]:
    """The unknowns whose value lies on (or beyond) one of its bounds."""
    return [name for name, v, lo, hi in zip(names, values, lower, upper)
            if (lo is not None and v <= lo) or (hi is not None and v >= hi)]


def unknown_scales(values, start=None, lower=None, upper=None, hint=None) -> np.ndarray:
    """Each unknown's own scale: the largest of |value|, |start| and its finite bounds' magnitudes.

    An unknown with none of these (0, started at 0, unbounded) takes `hint`
    (the scale its equations' constants give it: analysis.constant_scales), then
    the largest other scale, and 1 only where every unknown has none: a scale
    that changes with the unknown's units, where max(1, |x|) would not.

    >>> unknown_scales([2.4e-11, 0.0], start=[0.0, 0.0], upper=[None, 0.5])
    array([2.4e-11, 5.0e-01])
    """
    columns = [np.abs(np.asarray(values, dtype=np.float64).reshape(-1))]
    n = columns[0].size
    for extra in (start, lower, upper):
        if extra is not None:
            column = np.array([abs(float(v)) if v is not None and math.isfinite(float(v)) else 0.0 for v in extra])
            columns.append(column.reshape(-1)[:n])
    scales = np.max(np.stack(columns), axis=0) if n else np.zeros(0)
    if hint is not None:
        scales = np.where(scales > 0, scales, np.nan_to_num(np.asarray(hint, dtype=np.float64).reshape(-1)[:n]))
    fallback = float(np.max(scales)) if n and np.max(scales) > 0 else 1.0
    return np.where(scales > 0, scales, fallback)
