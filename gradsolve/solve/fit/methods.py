"""Which optimizer a fit runs, where, and with which settings.

A linear fit's optimizers work on the reduced problem (``tsqr``): |u - z|^2 in the orthogonal basis of
the QR, Hessian 2I, |z| = 1.  The rates and settings here are tuned for that problem; a nonlinear fit
uses the optimizers' own, with weight decay 0 (a fit minimizes the sum of squares).
"""
from __future__ import annotations

import gradsolve as gs
from gradsolve.methods import FIRST_ORDER, PRECONDITIONED_LR
from gradsolve.solve.options import choose_method
from gradsolve.solve.points import EagerPoint

__all__ = ["PRECONDITIONED_LR", "PRECONDITIONED_SETTINGS", "fit_device", "fit_method", "GroupPoint",
           "optimizer_point"]

# PRECONDITIONED_LR (the optimizer table's rates for that problem, gradsolve.methods): the steps a method
# takes there are of order lr, so these reach the minimum in tens to hundreds of steps; SGD uses 1/L = 1/2
# (one step). The plateau halving of the solve loop then settles each on the minimum.
#: Hyperparameters other than the rate for the preconditioned linear problem.
#:
#: * Adadelta's step is lr * sqrt(acc_delta + eps) / sqrt(acc_grad + eps) * g.  Once both running
#:   averages are far below eps the ratio is 1 and the method is gradient descent with rate lr: on the
#:   Hessian 2I the error maps to (1 - 2 lr) times itself, so lr = 1 (the general default) only flips
#:   its sign (the loss freezes and the run stalls unless the plateau halving happens to fire first),
#:   while lr = 0.5 is the Newton step.  Far above eps the first steps are about sqrt(eps) long and
#:   grow slowly (hundreds of steps from |z| = 1 with eps = 1e-6).  Adadelta is unchanged by scaling
#:   the target by s and eps by s^2, so eps = 1e4 on the |z| = 1 problem is the target scaled to
#:   |z| = 1e-5, far inside sqrt(1e-6): the ratio stays within 1e-4 of 1 for any data and the method
#:   converges in a few steps, while the stopping tests keep the scale of the other optimizers.
#: * Weight decay (AdamW's 1e-2) adds a pull toward 0 in the orthogonal basis: it changes the
#:   objective, which for a fit is the sum of squares, so it is 0 unless the caller asks for it.
PRECONDITIONED_SETTINGS = {"adadelta": {"eps": 1e4}}


def fit_device(options) -> str:
    """The device the fit runs on: 'auto' resolved (cuda when usable, else cpu); DeviceError when unusable."""
    device = gs.backend.resolve_device(options.device)
    return gs.backend.get_backend(device).name


def fit_method(options, *, linear: bool) -> str:
    """The method to run: --optimizer auto is the direct QR solve (linear) or Levenberg-Marquardt."""
    if options.optimizer == "auto":
        return "qr" if linear else "lm"
    return choose_method(options.optimizer, has_residuals=True, smooth=True, bounded=False)


class GroupPoint:
    """The solve loop's eager point, except that the optimizer is built on one parameter group with
    its own hyperparameters (``settings``), which override the optimizer's defaults (as PyTorch's
    parameter groups do).  ``params`` is what the loop hands the optimizer; the rest is the eager point's."""

    def __init__(self, objective, settings: dict):
        self._eager = EagerPoint(objective)
        self.params = [dict(settings, params=list(objective.params))]

    def __getattr__(self, name):
        return getattr(self._eager, name)


def optimizer_point(task, objective, method, *, reduced: bool):
    """What the loop moves for `method`: None (its default point), or a `GroupPoint` with the fit's settings:
    weight decay 0 unless the caller gave one, and PRECONDITIONED_SETTINGS on the reduced linear problem."""
    if method not in FIRST_ORDER:
        return None
    settings = dict(PRECONDITIONED_SETTINGS.get(method, {})) if reduced else {}
    settings["weight_decay"] = 0.0 if task.weight_decay is None else task.weight_decay
    return GroupPoint(objective, settings)
