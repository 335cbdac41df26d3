"""The bases a linear model is reduced in, and the exact way back to the user's coefficients.

A basis gives the *preconditioned* columns A' of the model (powers of
t = (x - centre)/scale for a polynomial; centred and scaled columns for any
other linear model) and the change of basis M with b = M c (binomial expansion
of the powers of t, or the undoing of the column centring) as exact fractions,
applied in exact rational arithmetic (``apply_exact``).  Residuals in the
user's basis are computed in double-double arithmetic (about 32 digits), for
the refinement pass of ``tsqr``.

Array work uses the namespace ``xp`` it is handed, through Array API standard
calls only.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

__all__ = ["PolynomialBasis", "ColumnBasis", "NonFiniteColumn", "apply_exact", "exact_product", "rounded"]


# ----------------------------------------------------------------------------- double-double
# Error-free transformations on arrays of any namespace (or Python floats): only +, -, * of the
# operands, which every Array API library provides elementwise and rounds to float64 per operation.
def _two_sum(a, b):
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _quick_two_sum(a, b):
    s = a + b
    return s, b - (s - a)


def _split(a):
    c = 134217729.0 * a  # 2**27 + 1 (Dekker)
    hi = c - (c - a)
    return hi, a - hi


def _two_prod(a, b):
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _dd_mul(hi, lo, x):
    p, e = _two_prod(hi, x)
    return _quick_two_sum(p, e + lo * x)


def _dd_add(hi, lo, b):
    s, e = _two_sum(hi, b)
    return _quick_two_sum(s, e + lo)


def _dd_residual(y, hi, lo):
    """y - (hi + lo), rounded once to float64."""
    s, e = _two_sum(y, -hi)
    return s + (e - lo)


# ----------------------------------------------------------------------------- bases
def _fraction(value: float) -> Fraction:
    return Fraction(float(value))


class PolynomialBasis:
    """c0 + c1*x + ... + cN*x**N, fitted in the powers of t = (x - centre) / scale.

    The scale is a power of two (the division is exact) and the centre is
    rounded to 20 bits of the scale, so t is as exact as a subtraction allows.
    """

    # Array arithmetic only: chunks may be mapped from several threads (tsqr's map steps). A subclass that
    # evaluates through the engine must set this False (grad mode and compiled programs are shared).
    thread_safe = True

    def __init__(self, degree: int, centre: float = 0.0, scale: float = 1.0):
        self.degree = int(degree)
        self.centre = float(centre)
        self.scale = float(scale)

    @classmethod
    def for_range(cls, degree: int, lo: float, hi: float) -> "PolynomialBasis":
        if not (math.isfinite(lo) and math.isfinite(hi)):
            return cls(degree)
        half = (hi - lo) / 2.0
        scale = 2.0 ** math.ceil(math.log2(half)) if half > 0 else 1.0
        unit = scale / (1 << 20)
        centre = round((lo + hi) / 2.0 / unit) * unit
        return cls(degree, centre, scale)

    @property
    def p(self) -> int:
        return self.degree + 1

    @property
    def has_constant(self) -> bool:
        return True

    def columns(self, xp, xs):
        (x,) = xs
        t = (x - self.centre) / self.scale
        cols = [xp.ones_like(t)]
        for _ in range(self.degree):
            cols.append(cols[-1] * t)
        return xp.stack(cols, axis=1)

    def design(self, xp, xs):
        """(A', offset): the preconditioned columns and the part of the model without parameters (none)."""
        return self.columns(xp, xs), None

    def to_user(self) -> list[list[Fraction]]:
        """M with b = M c: t**j = sum_k C(j, k) (-centre)**(j-k) x**k / scale**j, exactly."""
        p = self.p
        c, s = _fraction(self.centre), _fraction(self.scale)
        M = [[Fraction(0)] * p for _ in range(p)]
        for j in range(p):
            for k in range(j + 1):
                M[k][j] = Fraction(math.comb(j, k)) * (-c) ** (j - k) / s ** j
        return M

    def residual(self, xp, xs, y, b):
        """y - sum_k b_k x**k per row, by Horner's rule in double-double (about 32 digits)."""
        (x,) = xs
        hi = xp.full(x.shape, float(b[-1]), dtype=x.dtype)
        lo = xp.zeros_like(x)
        for k in range(self.degree - 1, -1, -1):
            hi, lo = _dd_mul(hi, lo, x)
            hi, lo = _dd_add(hi, lo, float(b[k]))
        return _dd_residual(y, hi, lo)

    def values(self, xp, xs, b):
        (x,) = xs
        out = xp.full(x.shape, float(b[-1]), dtype=x.dtype)
        for k in range(self.degree - 1, -1, -1):
            out = out * x + float(b[k])
        return out

    def rows(self, xp, xs):
        """The user's basis (powers of x) at points xs: m x p (for prediction errors)."""
        (x,) = xs
        cols = [xp.ones_like(x)]
        for _ in range(self.degree):
            cols.append(cols[-1] * x)
        return xp.stack(cols, axis=1)


class NonFiniteColumn(ValueError):
    """Column ``column`` of a ColumnBasis is not finite on the data (an overflow, a log of a negative)."""

    def __init__(self, column: int):
        super().__init__(f"column {column} of the model is not finite on the data")
        self.column = column


class ColumnBasis:
    """Any model linear in its parameters: model = f0(x) + sum_j b_j f_j(x).

    ``evaluate(xp, xs)`` returns (f0 or None, [f_1, ..., f_p]) as arrays of the
    namespace ``xp`` (0-d for a constant), for columns ``xs`` in that namespace
    (the engine evaluates them on the matching device).  When one f_j is a
    constant, the others are centred (``centres``) and every non-constant column
    is scaled (``scales``) -- ``prepare`` sets both from the first chunk.
    """

    def __init__(self, evaluate, p: int, constant: int | None = None):
        self.evaluate = evaluate
        self._p = int(p)
        self.constant = constant  # index of a constant column, or None
        self.constant_value = 1.0
        self.centres = [0.0] * self._p
        self.scales = [1.0] * self._p

    @property
    def p(self) -> int:
        return self._p

    @property
    def has_constant(self) -> bool:
        return self.constant is not None

    def prepare(self, xp, xs):
        """Centres and scales from a chunk (the whole data when it is in memory)."""
        _, cols = self._raw(xp, xs, xs[0].shape)
        for j, col in enumerate(cols):
            size = math.prod(col.shape)
            if self.constant is not None and j == self.constant:
                value = float(xp.reshape(col, (-1,))[0]) if size else 1.0
                self.constant_value = value if value != 0 else 1.0
                continue
            mean = float(xp.mean(col)) if (self.constant is not None and size) else 0.0
            spread = float(xp.max(xp.abs(col - mean))) if size else 0.0
            if not (math.isfinite(mean) and math.isfinite(spread)):
                raise NonFiniteColumn(j)
            self.centres[j] = mean
            self.scales[j] = 2.0 ** math.ceil(math.log2(spread)) if spread > 0 and math.isfinite(spread) else 1.0

    def _raw(self, xp, xs, shape):
        f0, cols = self.evaluate(xp, xs)
        cols = [xp.broadcast_to(xp.asarray(c, dtype=xp.float64), shape) for c in cols]
        if f0 is not None:
            f0 = xp.broadcast_to(xp.asarray(f0, dtype=xp.float64), shape)
        return f0, cols

    def columns(self, xp, xs):
        return self.design(xp, xs)[0]

    def design(self, xp, xs):
        """(A', f0): the preconditioned columns and the offset f0 (None when the model has none), from
        one evaluation of the model's terms."""
        shape = xs[0].shape
        f0, cols = self._raw(xp, xs, shape)
        out = []
        for j, col in enumerate(cols):
            if self.constant is not None and j == self.constant:
                out.append(col / self.constant_value)
            else:
                out.append((col - self.centres[j] * (cols[self.constant] / self.constant_value
                                                      if self.constant is not None else 0.0)) / self.scales[j])
        return xp.stack(out, axis=1), f0

    def offset(self, xp, xs):
        f0, _ = self._raw(xp, xs, xs[0].shape)
        return f0

    def to_user(self) -> list[list[Fraction]]:
        """M with b = M c: column j of A' is (f_j - centre_j * f_k / v) / scale_j, f_k = v the constant."""
        p = self.p
        M = [[Fraction(0)] * p for _ in range(p)]
        for j in range(p):
            if self.constant is not None and j == self.constant:
                M[j][j] = 1 / _fraction(self.constant_value)
                continue
            M[j][j] = 1 / _fraction(self.scales[j])
            if self.constant is not None:
                M[self.constant][j] = -_fraction(self.centres[j]) / (_fraction(self.scales[j])
                                                                     * _fraction(self.constant_value))
        return M

    def residual(self, xp, xs, y, b):
        """y - f0 - sum_j b_j f_j per row, products and sums in double-double."""
        f0, cols = self._raw(xp, xs, xs[0].shape)
        hi, lo = y, xp.zeros_like(y)
        if f0 is not None:
            hi, lo = _dd_add(hi, lo, -f0)
        for bj, col in zip(b, cols):
            p, e = _two_prod(col, -float(bj))
            s, e2 = _two_sum(hi, p)
            hi, lo = _quick_two_sum(s, e2 + lo + e)
        return hi + lo

    def values(self, xp, xs, b):
        f0, cols = self._raw(xp, xs, xs[0].shape)
        out = xp.zeros(xs[0].shape, dtype=xp.float64) if f0 is None else f0
        for bj, col in zip(b, cols):
            out = out + float(bj) * col
        return out

    def rows(self, xp, xs):
        _, cols = self._raw(xp, xs, xs[0].shape)
        return xp.stack(cols, axis=1)


# ----------------------------------------------------------------------------- exact change of basis
def apply_exact(M: list, c) -> np.ndarray:
    """M c in exact rational arithmetic, rounded once per entry."""
    cf = [_fraction(v) for v in c]
    return np.array([float(sum((mij * cj for mij, cj in zip(row, cf) if mij), Fraction(0))) for row in M])


def exact_product(M: list, K: np.ndarray) -> np.ndarray:
    """M K (K a float matrix) in exact arithmetic, rounded once per entry."""
    cols = [apply_exact(M, K[:, j]) for j in range(K.shape[1])]
    return np.stack(cols, axis=1) if cols else np.zeros((len(M), 0))


def rounded(M: list) -> np.ndarray:
    """M with each entry rounded to float64 (for a solve in floating point)."""
    return np.array([[float(v) for v in row] for row in M])
