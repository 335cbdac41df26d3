"""Models linear in their parameters: a one-pass, chunked, numerically stable reduction of the data.

The data enter once, chunk by chunk, as the rows of ``[A' | y/ys]``: A' is the
*preconditioned* basis (powers of t = (x - centre)/scale for a polynomial;
centred and scaled columns for any other linear model), y/ys the target scaled
to order 1 (less the model's part without parameters, f0, when it has one),
every row multiplied by sqrt(weight).  The reduction is a
tall-skinny QR (TSQR), written as a map and a reduce so that a distributed
engine can run it over data larger than one machine:

* map (``map_chunk``): a chunk of m rows -> the (p+1) x (p+1) R factor of its
  rows, plus the count, weighted mean and sum of squared deviations of y
  (Chan's parallel update: the pieces merge exactly);
* reduce (``reduce_summaries``): stacked R factors -> the R factor of the stack
  (the QR of [R1; R2] has the R of [A1; A2]), statistics merged.

The final factor is ``[[R, z], [0, rho]]``: the sum of squares over all rows
is ``|A' c - y/ys|^2 = |R c - z|^2 + rho^2`` for every c.  In the variables
u = R c (the orthogonal basis the QR gives) it is ``|u - z|^2 + rho^2``, whose
Hessian is 2I: every optimizer sees a perfectly conditioned problem, and each
step costs O(p) there plus O(p^2) to map u back, whatever the number of rows.

Coefficients in the user's basis are ``b = ys * M c``, with M the change of
basis (binomial expansion of the powers of t, or the undoing of the column
centring), applied in exact rational arithmetic.  When the data can be read
again (in memory, or a file), ``refine`` makes one correction from residuals
computed in double-double arithmetic (about 32 digits) in the user's basis:
b += M (R^T R)^-1 A'^T r -- the corrected semi-normal equations, which win the
last digits on ill-conditioned sets such as NIST's Filip, Wampler and Pontius.

Data-sized work (building chunks, the chunk QR, residuals, their sums) uses
the array namespace ``xp`` of the tensor backend (NumPy, CuPy, or the strict
Array API reference in the tests), through Array API standard calls only.
Chunks arrive as host (NumPy) arrays; each map step (``map_chunk``,
``reduce_chunks``, ``refine``, ``residual_stats``) moves its chunk to ``xp``
once (``to_device``) and works there; what comes back to the host is small
(an R factor, a p-vector, scalars).  The small p x p algebra on R factors is
NumPy on the host, deliberately.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

__all__ = ["PolynomialBasis", "ColumnBasis", "NonFiniteColumn", "Summary", "map_chunk", "reduce_summaries",
           "Reduction", "reduce_chunks", "refine", "residual_stats", "back_substitute", "to_device",
           "on_device"]

#: How many R factors the running reduce keeps before folding them into one.
FOLD_EVERY = 32
#: Chunks worked on at once by the map steps (NumPy releases the GIL inside its array loops).
MAP_THREADS = min(2, os.cpu_count() or 1)


def _map(basis, xp, chunks, work):
    """``work(xs, y, weights)`` for every non-empty chunk, results in chunk order.

    On NumPy, with a basis that is safe to evaluate from several threads (the
    polynomial basis: array arithmetic only; a --model's columns run through the
    engine, whose programs are not), two chunks are worked on at once, at most
    two more read ahead: the passes over 10^7 rows are array loops that hold no
    lock. The order of the results, and so every sum made of them, stays that of
    the chunks: the answer does not depend on the threads. Workers run under the
    caller's NumPy error settings (np.errstate is per thread).
    """
    chunks = ((xs, y, w) for xs, y, w in chunks if y.shape[0] != 0)
    if MAP_THREADS < 2 or xp is not np or not getattr(basis, "thread_safe", False):
        for xs, y, weights in chunks:
            yield work(*to_device(xp, xs, y, weights))
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    errors = np.geterr()

    def job(xs, y, weights):
        with np.errstate(**errors):
            return work(*to_device(xp, xs, y, weights))

    ahead = 2 * MAP_THREADS  # chunks in flight: one being worked on per thread, one read ahead per thread
    with ThreadPoolExecutor(MAP_THREADS, thread_name_prefix="gradsolve-map") as pool:
        pending = deque()
        for chunk in chunks:
            pending.append(pool.submit(job, *chunk))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


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

    # Array arithmetic only: chunks may be mapped from several threads (_map). A subclass that
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


def _host(xp, array) -> np.ndarray:
    """A (small) array of namespace xp as a float64 NumPy array on the host."""
    if xp is np or isinstance(array, (np.ndarray, np.generic, float, int)):
        return np.asarray(array, dtype=np.float64)
    get = getattr(array, "get", None)
    if callable(get):  # CuPy: device -> host copy
        return np.asarray(get(), dtype=np.float64)
    return np.asarray(np.from_dlpack(array), dtype=np.float64)  # the Array API's standard way out


def on_device(xp, array):
    """One host (NumPy) array -> namespace ``xp`` (as float64); an array already in ``xp`` passes through."""
    if xp is np:
        return np.asarray(array)
    if isinstance(array, (np.ndarray, np.generic)):
        # host -> device, once, from one contiguous float64 buffer (the table's columns already are)
        host = np.asarray(array, dtype=np.float64)
        return xp.asarray(host if host.flags.c_contiguous else np.ascontiguousarray(host))
    return xp.asarray(array)  # already in xp: no copy


def to_device(xp, xs, y=None, weights=None):
    """A chunk ``(xs, y, weights)`` read on the host -> the same arrays in namespace ``xp``.

    NumPy arrays cross to the device once here (no copy at all when ``xp`` is
    NumPy); arrays already in ``xp`` pass through.  Every map step calls this
    first, so the arithmetic after it never mixes namespaces.
    """
    return ([on_device(xp, x) for x in xs], None if y is None else on_device(xp, y),
            None if weights is None else on_device(xp, weights))


# ----------------------------------------------------------------------------- map and reduce
@dataclass
class Summary:
    """What a chunk maps to: the R factor of its rows of [A' | y/ys], and y's weighted moments."""

    R: np.ndarray  # (p+1) x (p+1), upper triangular
    n: int  # rows
    wsum: float  # sum of weights
    mean: float  # weighted mean of y
    m2: float  # weighted sum of squared deviations of y from the mean

    @staticmethod
    def empty(k: int) -> "Summary":
        return Summary(np.zeros((k, k)), 0, 0.0, 0.0, 0.0)


def _concat(xp, arrays, axis):
    """The standard's ``concat``; NumPy < 2 and older CuPy spell it ``concatenate``."""
    concat = getattr(xp, "concat", None)
    return concat(arrays, axis=axis) if concat is not None else xp.concatenate(arrays, axis=axis)


def _qr_r(xp, a):
    """The R factor of a (m x k) as a k x k host array (zero rows added when m < k)."""
    k = a.shape[1]
    if xp is np:
        r = np.linalg.qr(a, mode="r")
    else:  # the Array API's linalg extension: mode "reduced" (standard) gives (Q, R)
        r = _host(xp, xp.linalg.qr(a, mode="reduced")[1])
    r = np.asarray(r, dtype=np.float64)
    if r.shape[0] < k:
        r = np.concatenate([r, np.zeros((k - r.shape[0], k))], axis=0)
    return r


def map_chunk(basis, xp, xs, y, *, y_scale: float, weights=None) -> Summary:
    """One chunk -> its Summary (the map of the map-reduce); host arrays move to ``xp`` first."""
    m = int(y.shape[0])
    k = basis.p + 1
    if m == 0:
        return Summary.empty(k)
    xs, y, weights = to_device(xp, xs, y, weights)
    columns, offset = basis.design(xp, xs)
    target = y if offset is None else y - offset  # the part of the model without parameters moves to y
    block = _concat(xp, [columns, xp.reshape(target / y_scale, (m, 1))], axis=1)
    if weights is not None:
        block = block * xp.reshape(xp.sqrt(weights), (m, 1))
        w = weights
        wsum = float(xp.sum(w))
        mean = float(xp.sum(w * y)) / wsum
        m2 = float(xp.sum(w * (y - mean) ** 2))
    else:
        wsum = float(m)
        mean = float(xp.mean(y))
        m2 = float(xp.sum((y - mean) ** 2))
    return Summary(_qr_r(xp, block), m, wsum, mean, m2)


def reduce_summaries(parts: list[Summary]) -> Summary:
    """Stacked Rs -> one R; moments merged (Chan et al.) (the reduce: associative, any order)."""
    parts = [s for s in parts if s.n > 0]
    if not parts:
        raise ValueError("no rows to reduce")
    if len(parts) == 1:
        return parts[0]
    R = _qr_r(np, np.concatenate([s.R for s in parts], axis=0))
    n, wsum, mean, m2 = 0, 0.0, 0.0, 0.0
    for s in parts:
        total = wsum + s.wsum
        delta = s.mean - mean
        m2 = m2 + s.m2 + delta * delta * wsum * s.wsum / total
        mean = mean + delta * s.wsum / total
        wsum, n = total, n + s.n
    return Summary(R, n, wsum, mean, m2)


@dataclass
class Reduction:
    """The reduced problem: sum of squares = ys^2 (|R c - z|^2 + rho^2), b = ys M c."""

    R: np.ndarray  # p x p
    z: np.ndarray  # p
    rho: float
    y_scale: float
    summary: Summary
    M: list  # p x p Fractions

    @property
    def p(self) -> int:
        return self.R.shape[0]


def reduce_chunks(basis, xp, chunks, *, y_scale: float | None = None) -> Reduction:
    """Map every chunk of ``chunks`` (an iterable of (xs, y, weights)) and reduce, folding as it goes.

    ``y_scale`` defaults to the largest |y| of the first chunk; the final
    scale is then adjusted so that |z| = 1 (R, z and rho are linear in y).
    """
    held: list[Summary] = []
    chunks = iter(chunks)
    if y_scale is None:  # from the first chunk that has rows (the rest are mapped with the same scale)
        first = []
        for xs, y, weights in chunks:
            first.append((xs, y, weights))
            if y.shape[0]:
                top = float(xp.max(xp.abs(on_device(xp, y))))
                y_scale = top if top > 0 and math.isfinite(top) else 1.0
                break
        import itertools

        chunks = itertools.chain(first, chunks)

    def summary(xs, y, weights):
        return map_chunk(basis, xp, xs, y, y_scale=y_scale, weights=weights)

    for part in _map(basis, xp, chunks, summary):
        held.append(part)
        if len(held) >= FOLD_EVERY:
            held = [reduce_summaries(held)]
    if y_scale is None or not held:
        raise ValueError("no rows to fit")
    total = reduce_summaries(held)
    p = basis.p
    R, z, rho = total.R[:p, :p].copy(), total.R[:p, p].copy(), abs(float(total.R[p, p]))
    norm = float(np.linalg.norm(z))
    if norm > 0 and math.isfinite(norm):
        z /= norm
        rho /= norm
        y_scale *= norm
    return Reduction(R, z, rho, y_scale, total, basis.to_user())


# ----------------------------------------------------------------------------- p x p algebra (host NumPy)
def back_substitute(R: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Solve R c = v for upper-triangular R."""
    p = R.shape[0]
    c = np.zeros(p)
    for i in range(p - 1, -1, -1):
        c[i] = (v[i] - R[i, i + 1:] @ c[i + 1:]) / R[i, i]
    return c


def apply_exact(M: list, c) -> np.ndarray:
    """M c in exact rational arithmetic, rounded once per entry."""
    cf = [_fraction(v) for v in c]
    return np.array([float(sum((mij * cj for mij, cj in zip(row, cf) if mij), Fraction(0))) for row in M])


def exact_product(M: list, K: np.ndarray) -> np.ndarray:
    """M K (K a float matrix) in exact arithmetic, rounded once per entry."""
    cols = [apply_exact(M, K[:, j]) for j in range(K.shape[1])]
    return np.stack(cols, axis=1) if cols else np.zeros((len(M), 0))


def rank_of(R: np.ndarray) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """Numerical rank of R (SVD, tolerance p * eps * s_max), with its SVD."""
    U, s, Vt = np.linalg.svd(R)
    tol = max(R.shape) * np.finfo(np.float64).eps * (float(s[0]) if s.size else 0.0)
    return int(np.count_nonzero(s > tol)), U, s, Vt


def solve_reduced(red: Reduction, u: np.ndarray) -> np.ndarray:
    """c from u = R c (minimum-norm when R is rank deficient)."""
    rank, U, s, Vt = rank_of(red.R)
    if rank == red.p:
        return back_substitute(red.R, u)
    return Vt[:rank].T @ ((U[:, :rank].T @ u) / s[:rank])


def to_user(red: Reduction, c: np.ndarray) -> np.ndarray:
    """Coefficients in the user's basis: b = ys M c."""
    return apply_exact(red.M, np.asarray(c) * red.y_scale) if red.y_scale != 1.0 else apply_exact(red.M, c)


# ----------------------------------------------------------------------------- second pass
def refine(basis, xp, red: Reduction, chunks, b: np.ndarray) -> np.ndarray:
    """One correction b += M (R^T R)^-1 A'^T W r, with r = y - A b in double-double (a map-reduce too)."""
    def gradient_part(xs, y, weights):
        r = basis.residual(xp, xs, y, b)
        A = basis.columns(xp, xs)
        if weights is not None:
            r = r * weights
        return _host(xp, A.T @ r)

    g = np.zeros(red.p)
    for part in _map(basis, xp, chunks, gradient_part):
        g += part
    rank, U, s, Vt = rank_of(red.R)
    if rank < red.p:  # project the correction on the identifiable directions
        d = Vt[:rank].T @ ((Vt[:rank] @ g) / s[:rank] ** 2)
    else:
        d = back_substitute(red.R, back_substitute(red.R.T[::-1, ::-1], g[::-1])[::-1])
    return np.asarray(b, dtype=np.float64) + apply_exact(red.M, d)


def residual_stats(basis, xp, chunks, b: np.ndarray) -> dict:
    """Weighted residual sum of squares (double-double residuals), largest |r|, rows."""
    def stats_part(xs, y, weights):
        r = basis.residual(xp, xs, y, b)
        r2 = r * r
        plain = float(xp.sum(r2))
        return (float(xp.sum(r2 * weights)) if weights is not None else plain, plain,
                float(xp.max(xp.abs(r))), int(y.shape[0]))

    rss = 0.0
    top = 0.0
    n = 0
    sum_r2_unweighted = 0.0
    for weighted, plain, largest, rows in _map(basis, xp, chunks, stats_part):
        rss += weighted
        sum_r2_unweighted += plain
        top = max(top, largest)
        n += rows
    return {"rss": rss, "max": top, "n": n, "sum_r2": sum_r2_unweighted}
