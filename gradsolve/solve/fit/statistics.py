"""Fit statistics: standard errors, correlations, R^2, RMSE -- or why they cannot be had.

The covariance of the parameters is ``s2 * K K^T``: K = M R^-1 for a linear
fit (R from the QR reduction, M the change of basis to the user's
coefficients), K = V S^-1 from the SVD J = U S V^T of the residual Jacobian
for a nonlinear one.  ``s2`` is the reduced chi-square rss / dof, or 1 when the
rows carry standard deviations (``--sigma``: the errors are then absolute).

Everything here is p x p (or n x p for a Jacobian, on the host): NumPy directly.
"""
from __future__ import annotations

import math

import numpy as np

from gradsolve.solve.fit.bases import exact_product, rounded
from gradsolve.solve.fit.tsqr import back_substitute, rank_of

__all__ = ["covariance_from_K", "fit_statistics", "jacobian_K", "reduction_K", "solution_family", "runaway_pairs",
           "runaway_warning", "RUNAWAY_CORRELATION"]

#: Parameters run off along a near-flat valley (a degenerate asymptote) where a pair is correlated at least this
#: closely and each of the pair's standard errors exceeds its value: the data fix only a combination of them.
RUNAWAY_CORRELATION = 0.999

#: A parameter whose weight in a null-space direction exceeds this is "not determined".
NULL_COMPONENT = 1e-6


def jacobian_K(J: np.ndarray):
    """(K, rank, null_space) from the residual Jacobian: Cov = s2 K K^T on the identifiable part."""
    J = np.asarray(J, dtype=np.float64)
    if J.size == 0:
        return np.zeros((J.shape[1], 0)), 0, np.eye(J.shape[1])
    # column scaling first: the rank should not depend on a parameter's units
    norms = np.linalg.norm(J, axis=0)
    norms = np.where(norms > 0, norms, 1.0)
    _, s, Vt = np.linalg.svd(J / norms, full_matrices=True)
    tol = max(J.shape) * np.finfo(np.float64).eps * (float(s[0]) if s.size else 0.0)
    rank = int(np.count_nonzero(s > tol))
    K = (Vt[:rank].T / s[:rank]) / norms[:, None]
    return K, rank, Vt[rank:]


def reduction_K(red):
    """(K, rank, null_space) from a linear fit's QR reduction: K = M R^-1, so Cov(b) = s2 M R^-1 R^-T M^T
    (R of the weighted, preconditioned basis)."""
    rank, U, s, Vt = rank_of(red.R)
    if rank == red.p:
        Rinv = np.stack([back_substitute(red.R, e) for e in np.eye(red.p)], axis=1)
        null = None
    else:
        Rinv = Vt[:rank].T / s[:rank] @ U[:, :rank].T
        null_c = Vt[rank:]
        Mf = rounded(red.M)
        null = np.array([v / np.linalg.norm(v) for v in (Mf @ null_c.T).T])
    K = exact_product(red.M, Rinv)
    return K, rank, null


def covariance_from_K(K: np.ndarray, s2: float) -> np.ndarray:
    return s2 * (K @ K.T)


def fit_statistics(names, *, K, rank, null_space=None, rss, sum_r2, n, tss, weighted, at_bounds=(),
                   extra_reason=None) -> dict:
    """The ``statistics`` object of the JSON result (README: "Fit statistics")."""
    p = len(names)
    dof = n - rank
    stats = {
        "stderr": {name: None for name in names},
        "correlation": {"names": list(names), "matrix": None},
        "r_squared": (1.0 - rss / tss) if tss > 0 else None,
        "rmse": math.sqrt(sum_r2 / n) if n > 0 else None,
        "rss": rss,
        "dof": int(dof),
        "deficit": int(p - rank),  # parameters the data do not determine (p - rank): the family's dimension
        "residual_sd": math.sqrt(rss / dof) if dof > 0 else None,
        "covariance": "ok",
        "reason": None,
        "unavailable": [],
        "sigma": "absolute" if weighted else "scaled by the reduced chi-square",
    }
    undetermined = set()
    reasons = []
    if null_space is not None and len(null_space):
        for direction in np.atleast_2d(null_space):
            for name, component in zip(names, direction):
                if abs(component) > NULL_COMPONENT:
                    undetermined.add(name)
        reasons.append(f"the Jacobian has rank {rank} of {p}: the data do not determine "
                       f"{', '.join(n for n in names if n in undetermined)} separately "
                       "(a combination of them can change without changing the fit)")
    stuck = [name for name in names if name in set(at_bounds)]
    if stuck:
        undetermined.update(stuck)
        reasons.append(f"{', '.join(stuck)} ended on a bound, where the error estimate does not apply")
    if dof <= 0:
        undetermined.update(names)
        reasons.append(f"no degrees of freedom left ({n} rows, {rank} determined parameters)")
    if extra_reason:
        undetermined.update(names)
        reasons.append(extra_reason)
    s2 = 1.0 if weighted else (rss / dof if dof > 0 else math.nan)
    if not math.isfinite(s2):
        undetermined.update(names)
    cov = covariance_from_K(K, s2) if K is not None and K.size and math.isfinite(s2) else None
    if cov is not None:
        sd = np.sqrt(np.maximum(np.diag(cov), 0.0))
        for i, name in enumerate(names):
            if name not in undetermined:
                stats["stderr"][name] = float(sd[i])
        matrix = []
        for i, a in enumerate(names):
            row = []
            for j, b in enumerate(names):
                if a in undetermined or b in undetermined or sd[i] == 0 or sd[j] == 0:
                    row.append(None)
                else:
                    row.append(1.0 if i == j else float(np.clip(cov[i, j] / (sd[i] * sd[j]), -1.0, 1.0)))
            matrix.append(row)
        stats["correlation"]["matrix"] = matrix
    if undetermined:
        stats["covariance"] = "unavailable"
        stats["unavailable"] = [name for name in names if name in undetermined]
        stats["reason"] = "; ".join(reasons) or "the covariance could not be estimated"
    return stats


def solution_family(names, rank, null_space):
    """A fit the data do not determine (rank < parameters): its family, as a puzzle's ``solution_set`` (the
    reported parameters are one member; each free direction changes the fit nowhere), else None."""
    if null_space is None or not len(null_space) or rank >= len(names):
        return None
    return {"rank": int(rank), "unknowns": list(names), "particular": None, "local": False,
            "free_directions": [dict(zip(names, map(float, d))) for d in np.atleast_2d(null_space)]}


def runaway_pairs(names, values, stats) -> list[tuple[str, str, float]]:
    """(a, b, correlation) for each pair of parameters that ran off along a near-flat valley: |correlation| at
    least RUNAWAY_CORRELATION and both standard errors larger than the values themselves."""
    matrix = stats.get("correlation", {}).get("matrix")
    stderr = stats.get("stderr", {})
    if not matrix:
        return []
    loose = {n for n in names if stderr.get(n) is not None and stderr[n] > abs(values[n])}
    pairs = []
    for i, a in enumerate(names):
        for j in range(i + 1, len(names)):
            b, rho = names[j], matrix[i][j]
            if rho is not None and abs(rho) >= RUNAWAY_CORRELATION and a in loose and b in loose:
                pairs.append((a, b, float(rho)))
    return pairs


def runaway_warning(names, values, stats) -> str | None:
    """The warning a fit carries when `runaway_pairs` finds any (one rule, for every report that needs it)."""
    pairs = runaway_pairs(names, values, stats)
    if not pairs:
        return None
    listed = ", ".join(f"{a} and {b} (correlation {rho:+.4f})" for a, b, rho in pairs)
    return (f"fit: warning: parameters ran off along a near-flat valley: {listed} move together with errors "
            f"larger than their values; the data fix only a combination of them (a degenerate asymptote: "
            f"e.g. a + b*exp(c*t) with c -> 0 is a straight line); simplify the model or fix one with --init")
