"""Linear equation systems solved directly: what ``--optimizer auto`` does with a system proven affine.

An iterative method stops once its tests fire, a few digits short of what the
system allows (a Wheatstone bridge's galvanometer current to 1.5e-12 relative
where numpy.linalg.solve gets 16 digits).  A linear system needs no iterations:
the coefficients come from analysis.linear_solution (sympy's, exact before they
are rounded), the matrix is equilibrated (columns, then rows, to unit norm: an
unknown or an equation in other units changes nothing), solved by SVD (the
minimum-norm least-squares solution of the equilibrated system at its numerical
rank), then corrected once, ``x += A^+ (b - A x)``, with the residual computed
exactly in rationals, so the unknowns are as accurate as the condition number
of the equilibrated matrix allows (about cond * eps).

The outcome's optimizer is "qr", as a linear fit's.  Bounds, data rows and an
optimizer asked for by name keep the iterative path (`applies`).
"""
from __future__ import annotations

import time
from fractions import Fraction

import numpy as np

import gradsolve as gs

from gradsolve.problem import analysis
from gradsolve.solve.options import flag
from gradsolve.solve.points import loss_and_gradient, set_values, values_of
from gradsolve.solve.records import Outcome
from gradsolve.solve.verdicts import SOLVED_ROUNDINGS, residual_roundings, solved_reason

__all__ = ["applies", "solve_linear", "EXACT_RESIDUAL_LIMIT"]

#: The exact residual of the correction step costs a rational product per coefficient: up to this many.
EXACT_RESIDUAL_LIMIT = 40_000


def applies(spec, options, *, bounded: bool) -> bool:
    """A system of equations, without data rows or bounds, proven affine, with the optimizer left to gradsolve."""
    return (options.optimizer == "auto" and spec.kind == "equations" and spec.n_rows is None and not bounded
            and options.dtype == "float64" and analysis.is_linear(spec))


def solve_linear(spec, objective, options) -> Outcome:
    """The minimum-norm least-squares solution of the linear system `spec`, refined once; see the module doc."""
    start = time.perf_counter()
    system = analysis.linear_solution(spec)
    A, b = system.A, system.b
    # equilibrated, so that units change nothing: columns to unit norm (an unknown in other units), then rows
    # (an equation times a constant); x = D y solves A x = b where (W A D) y = W b
    D = _inverse_norms(A, axis=0)
    W = _inverse_norms(A * D, axis=1)
    scaled = (A * D) * W[:, None]
    rank, solve_scaled, singular = _pseudo_inverse(scaled)

    def solve(r):
        return D * solve_scaled(W * r)

    x = solve(b)
    if A.size <= EXACT_RESIDUAL_LIMIT and np.all(np.isfinite(x)):
        x = x + solve(_exact_residual(A, b, x))
    kept = singular[:rank]
    condition = float(kept[0] / kept[-1]) if kept.size else 1.0
    params = objective.params
    set_values(params, x)
    loss, g = loss_and_gradient(objective, params)
    with gs.no_grad():  # the residuals as the result reports them: the problem's own expressions at x
        r = np.asarray(objective.residuals().numpy(), dtype=np.float64).reshape(-1)
    held = residual_roundings(r, A, x, analysis.constant_term_sizes(spec), float(np.finfo(np.float64).eps))
    how = (f"solved directly (least squares, {len(b)} x {len(x)}, rank {rank}, condition number "
           f"{condition:.3g}): the unknowns are accurate to about {max(condition, 1.0) * np.finfo(float).eps:.2g} "
           f"relative")
    if held <= SOLVED_ROUNDINGS:
        how = f"{how}; {solved_reason(held)}"
    if options.starts > 1:
        how = f"{how}; {flag('starts')} {options.starts} adds nothing: a linear system has one solution or one family"
    return Outcome(status="converged", stop_reason=how, optimizer="qr", steps=1, loss=loss,
                   gradient_norm=float(np.max(np.abs(g))) if g.size else 0.0, values=values_of(params),
                   elapsed_s=time.perf_counter() - start, loss_history=[loss],
                   atol_stop=held <= SOLVED_ROUNDINGS or loss == 0)


def _inverse_norms(A, axis):
    """1 / the norms of A's columns (axis 0) or rows (axis 1); 1 for a zero one."""
    norms = np.linalg.norm(A, axis=axis) if A.size else np.ones(A.shape[1 - axis])
    return 1.0 / np.where(norms > 0, norms, 1.0)


def _pseudo_inverse(A):
    """(rank, r -> the minimum-norm least-squares solution of A d = r, singular values), the rank as
    analysis.jacobian_rank counts it (max(m, n) * eps * largest singular value)."""
    if not A.size:
        return 0, lambda r: np.zeros(A.shape[1]), np.zeros(0)
    u, s, vt = np.linalg.svd(A, full_matrices=False)
    rank = int(np.count_nonzero(s > max(A.shape) * np.finfo(np.float64).eps * s[0]))
    u, kept, vt = u[:, :rank], s[:rank], vt[:rank]
    return rank, (lambda r: vt.T @ ((u.T @ r) / kept)), s


def _exact_residual(A, b, x) -> np.ndarray:
    """b - A x computed exactly in rationals, then rounded once."""
    xs = [Fraction(float(v)) for v in x]
    out = np.empty(len(b))
    for i, row in enumerate(A):
        total = Fraction(float(b[i]))
        for a, v in zip(row, xs):
            if a:
                total -= Fraction(float(a)) * v
        out[i] = float(total)
    return out if np.all(np.isfinite(out)) else np.zeros(len(b))

