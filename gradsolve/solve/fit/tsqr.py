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
basis that the basis gives (``bases``), applied in exact rational arithmetic.
When the data can be read
again (in memory, or a file), ``refine`` makes one correction from residuals
computed in double-double arithmetic (about 32 digits) in the user's basis:
b += M (R^T R)^-1 A'^T r -- the corrected semi-normal equations, which win the
last digits on ill-conditioned sets such as NIST's Filip, Wampler and Pontius.

Data-sized work (building chunks, the chunk QR, residuals, their sums) uses
the array namespace ``xp`` of the tensor backend (NumPy, CuPy, or the strict
Array API reference in the tests), through Array API standard calls only.
Chunks arrive as host (NumPy) arrays; each map step (``map_chunk``,
``reduce_chunks``, ``refine``, ``residual_stats``) moves its chunk to ``xp``
once (``transfer.to_device``) and works there; what comes back to the host is small
(an R factor, a p-vector, scalars).  The small p x p algebra on R factors is
NumPy on the host, deliberately.
"""
from __future__ import annotations

import itertools
import math
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from gradsolve.solve.fit.bases import apply_exact
from gradsolve.solve.fit.transfer import on_device, to_device, to_host

__all__ = ["Summary", "map_chunk", "reduce_summaries", "Reduction", "reduce_chunks", "refine", "residual_stats",
           "back_substitute", "rank_of", "solve_reduced", "to_user"]

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
        r = to_host(xp, xp.linalg.qr(a, mode="reduced")[1])
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
        return to_host(xp, A.T @ r)

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
