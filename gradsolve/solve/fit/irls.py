"""Iteratively reweighted least squares (IRLS): a robust loss as a run of weighted least-squares solves.

Both paths use it: a linear fit solves each weighted problem by a QR reduction of the full residuals, a
nonlinear one by its optimizer on the reweighted residuals.  The weights are ``robust.weights`` of the
residuals at the current point (scaled by the rows' own sqrt(1/sigma^2) when they have one).
"""
from __future__ import annotations

import numpy as np

from gradsolve.solve.fit import robust

__all__ = ["MAX_REWEIGHTINGS", "reweight", "started_as", "reported_as", "stop_reason"]

#: Weighted solves at most, if the parameters have not settled before.
MAX_REWEIGHTINGS = 100


def reweight(loss: str, f_scale: float, xp, *, values, residuals, sqrt_weights, solve, tol: float):
    """Reweight and solve until the parameters settle: (values, reweightings).

    ``residuals(values)`` are the model's residuals at ``values`` (namespace ``xp``), ``sqrt_weights`` the
    rows' sqrt(1/sigma^2) there (or None), ``solve(robust_weights)`` the solution of the least-squares
    problem with the robust weights of this step (and the rows' own, which it applies) as a host
    float64 array.  The parameters have settled when none moved by more than 100 max(tol, 1e-14) of itself.
    """
    for iteration in range(1, MAX_REWEIGHTINGS + 1):
        r = residuals(values)
        scaled = r * sqrt_weights if sqrt_weights is not None else r
        new = solve(robust.weights(loss, scaled, f_scale, xp=xp))
        change = float(np.max(np.abs(new - values) / np.maximum(np.abs(new), 1e-300)))
        values = new
        if change <= max(tol, 1e-14) * 100:
            break
    return values, iteration


def started_as(method: str, loss: str) -> str:
    """The method named when the run starts: the optimizer, inside IRLS for a robust loss."""
    return method if loss == "squared" else f"irls ({method})"


def reported_as(method: str, loss: str) -> str:
    """The method the result names."""
    return method if loss == "squared" else "irls"


def stop_reason(reason: str, loss: str, reweightings: int) -> str:
    """The last weighted solve's stop reason, with the reweightings it took."""
    return f"{reason}; robust {loss} loss by IRLS ({reweightings} reweightings)"
