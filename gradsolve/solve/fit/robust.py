"""Robust losses for fits with outliers, minimized by iteratively reweighted least squares (IRLS).

Each loss is rho(z) of z = (r / f)^2, f the ``--f-scale`` (scipy's
``least_squares`` conventions): the fit minimizes sum f^2 rho((r_i / f)^2).

=========  ===============================  ==========================
loss       rho(z)                           weight rho'(z)
=========  ===============================  ==========================
squared    z                                1
huber      z if z <= 1 else 2 sqrt(z) - 1   1 if z <= 1 else 1/sqrt(z)
soft_l1    2 (sqrt(1 + z) - 1)              1 / sqrt(1 + z)
cauchy     log(1 + z)                       1 / (1 + z)
=========  ===============================  ==========================

IRLS: with weights w_i = rho'(z_i) at the current point, a weighted least
squares step; repeat until the parameters stop moving.  A stationary point of
the weighted problem with its own weights is a stationary point of the robust
loss (the gradients agree: d/db sum f^2 rho = sum 2 rho'(z) r dr/db).
"""
from __future__ import annotations

import numpy as np

__all__ = ["LOSSES", "weights", "robust_loss"]

LOSSES = ("squared", "huber", "soft_l1", "cauchy")


def weights(loss: str, r, f_scale: float, xp=None):
    """rho'(z) at z = (r / f)^2, per row, in the array namespace ``xp`` of ``r`` (NumPy by default).

    Only Array API standard calls, so the weights of a fit on the GPU are computed there.
    """
    if xp is None or xp is np:
        xp = np
        r = np.asarray(r, dtype=np.float64)
    z = (r / f_scale) ** 2
    if loss == "squared":
        return xp.ones_like(z)
    if loss == "huber":
        inside = z <= 1.0
        return xp.where(inside, xp.ones_like(z), 1.0 / xp.sqrt(xp.where(inside, xp.ones_like(z), z)))
    if loss == "soft_l1":
        return 1.0 / xp.sqrt(1.0 + z)
    if loss == "cauchy":
        return 1.0 / (1.0 + z)
    raise ValueError(f"unknown robust loss {loss!r}: choose one of {', '.join(LOSSES)}")


def robust_loss(loss: str, r: np.ndarray, f_scale: float) -> float:
    """sum f^2 rho((r / f)^2)."""
    z = (np.asarray(r, dtype=np.float64) / f_scale) ** 2
    if loss == "squared":
        rho = z
    elif loss == "huber":
        rho = np.where(z <= 1.0, z, 2.0 * np.sqrt(np.maximum(z, 1.0)) - 1.0)
    elif loss == "soft_l1":
        rho = 2.0 * (np.sqrt(1.0 + z) - 1.0)
    elif loss == "cauchy":
        rho = np.log1p(z)
    else:
        raise ValueError(f"unknown robust loss {loss!r}")
    return float(f_scale ** 2 * np.sum(rho))
