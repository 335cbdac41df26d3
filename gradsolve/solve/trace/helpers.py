"""The functions generated code calls, bound in its namespace under the names it uses (``_pow``, ``_wmax_a``, ...).

Float code sees ``FLOAT_HELPERS``: ``math`` as ``_m`` and scalar functions that
keep NumPy's semantics where plain ``math`` or Python would differ (NaN through
max and min, the sign of 0).  Array code sees ``array_helpers(xp)`` over the
array namespace of its device.  ``CPU_HELPERS`` is both, over NumPy.
"""
from __future__ import annotations

import math

import numpy as np


def _pow(x, y):
    return math.pow(x, y)


def _sign(x):
    return 1.0 if x > 0.0 else (-1.0 if x < 0.0 else x * 0.0)


def _sigmoid(x):
    e = math.exp(-abs(x))
    return 1.0 / (1.0 + e) if x >= 0 else e / (1.0 + e)


def float_maximum(a, b):
    if a != a or b != b:
        return math.nan
    return a if a >= b else b


def float_minimum(a, b):
    if a != a or b != b:
        return math.nan
    return a if a <= b else b


def _wmax(a, b):
    return 1.0 if a > b else (0.5 if a == b else 0.0)


def _wmin(a, b):
    return 1.0 if a < b else (0.5 if a == b else 0.0)


def _logpos(a):
    return math.log(a) if a > 0 else 0.0


FLOAT_HELPERS = {"_m": math, "_pow": _pow, "_sign": _sign, "_sigmoid": _sigmoid, "_max": float_maximum,
                 "_min": float_minimum, "_wmax": _wmax, "_wmin": _wmin, "_logpos": _logpos}


def array_helpers(xp) -> dict:
    """The names array code calls, over the array namespace `xp` (NumPy, CuPy, any Array API namespace).

    Array code is written against ``_np`` and these helpers only, so the same
    generated source runs on every backend: bound to NumPy for the cpu, to the
    device's namespace (CuPy for cuda) for a problem lowered on a device.  Only
    standard calls are used (``where``, ``broadcast_to``, ``concat``, ...) and
    Python numbers are made arrays before they meet one (the standard's
    ``where`` and ``broadcast_to`` take arrays).
    """

    def sigmoid_a(x):
        e = xp.exp(-xp.abs(x))
        return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))

    def weights(wins, a, b):
        dtype = xp.result_type(a.dtype, b.dtype, xp.float32)
        one, half, zero = (xp.asarray(v, dtype=dtype) for v in (1.0, 0.5, 0.0))
        return xp.where(wins(a, b), one, xp.where(a == b, half, zero))

    def wmax_a(a, b):
        a, b = xp.broadcast_arrays(xp.asarray(a), xp.asarray(b))
        return weights(lambda u, v: u > v, a, b)

    def wmin_a(a, b):
        a, b = xp.broadcast_arrays(xp.asarray(a), xp.asarray(b))
        return weights(lambda u, v: u < v, a, b)

    def logpos_a(a):
        a = xp.asarray(a)
        positive = a > 0
        return xp.where(positive, xp.log(xp.where(positive, a, 1.0)), 0.0)

    def cols(columns, K, dtype):
        """(K, p) from p columns that may be numbers, (K, 1) or broadcastable."""
        out = xp.empty((K, len(columns)), dtype=dtype)
        for j, c in enumerate(columns):
            out[:, j] = xp.reshape(xp.broadcast_to(xp.asarray(c, dtype=dtype), (K, 1)), (K,))
        return out

    def cat(pieces, widths, K, dtype):
        """The (K, m) residual matrix from per-output pieces (numbers, (K, 1) or (K, rows))."""
        return xp.concat([xp.broadcast_to(xp.asarray(p, dtype=dtype), (K, w)) for p, w in zip(pieces, widths)],
                         axis=1)

    def jac(blocks, widths, K, p, dtype):
        """(K, m, p) from blocks[i][j] (adjoint of unknown j for output i: a number or broadcastable array)."""
        out = xp.zeros((K, sum(widths), p), dtype=dtype)
        row = 0
        for block, w in zip(blocks, widths):
            for j, adj in enumerate(block):
                out[:, row:row + w, j] = xp.broadcast_to(xp.asarray(adj, dtype=dtype), (K, w))
            row += w
        return out

    return {"_np": xp, "_sigmoid_a": sigmoid_a, "_wmax_a": wmax_a, "_wmin_a": wmin_a, "_logpos_a": logpos_a,
            "_cols": cols, "_cat": cat, "_jac": jac}


#: What generated code sees on the cpu: the float helpers and the array helpers over NumPy.
CPU_HELPERS = {**FLOAT_HELPERS, **array_helpers(np)}
