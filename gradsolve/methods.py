"""The optimizer table: every method the solver runs, and what each one needs.

Plain data that imports nothing, so ``gradsolve --help`` (the choices of
``--optimizer``), ``gradsolve check`` (what a problem file's ``optimizer:`` may
say) and the solver read the same table.

>>> from gradsolve.methods import METHODS, NAMES
>>> NAMES[0], METHODS["lm"].needs_residuals, METHODS["lbfgs"].supports_bounds
('auto', True, False)
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Method", "METHODS", "NAMES", "FIRST_ORDER", "DEFAULT_LR", "PRECONDITIONED_LR"]


@dataclass(frozen=True)
class Method:
    """One optimizer as the solver drives it.

    `default_lr` is the rate for problems (None: sgd takes 1/L from the curvature at
    the start, lm has no rate); `preconditioned_lr` the rate on a linear fit's reduced
    problem, whose Hessian is 2I (see gradsolve.solve.fit).
    """

    name: str
    first_order: bool
    needs_residuals: bool = False
    supports_bounds: bool = True
    default_lr: float | None = None
    preconditioned_lr: float | None = None


# Rates for problems (unknowns of order 1 to 10, losses that reach zero): PyTorch's defaults are tuned for
# training networks and crawl here (Adam's 1e-3 needs 10,000 steps to move an unknown by 10).
# On the reduced linear problem (Hessian 2I, |z| = 1) the steps a method takes are of order lr, so the
# preconditioned rates reach the minimum in tens to hundreds of steps; SGD there uses 1/L = 1/2 (one step).
# Adadelta's 0.5 there is the Newton step 1/2 (its step is lr * g once its running averages sit far below eps).
_TABLE = (
    Method("sgd", first_order=True),
    Method("adadelta", first_order=True, default_lr=1.0, preconditioned_lr=0.5),
    Method("adam", first_order=True, default_lr=0.1, preconditioned_lr=0.1),
    Method("adamw", first_order=True, default_lr=0.1, preconditioned_lr=0.1),
    Method("nadam", first_order=True, default_lr=0.1, preconditioned_lr=0.1),
    Method("rmsprop", first_order=True, default_lr=0.01, preconditioned_lr=0.01),
    Method("adagrad", first_order=True, default_lr=0.5, preconditioned_lr=0.5),
    Method("lbfgs", first_order=False, supports_bounds=False, default_lr=1.0, preconditioned_lr=1.0),
    Method("lm", first_order=False, needs_residuals=True),
)

#: name -> Method, in the order --help lists them.
METHODS = {method.name: method for method in _TABLE}
#: Every name --optimizer accepts: "auto" (the solver chooses) and the methods.
NAMES = ("auto",) + tuple(METHODS)
#: The first-order methods (one gradient a step; batched multistart runs them as one array).
FIRST_ORDER = tuple(m.name for m in _TABLE if m.first_order)
DEFAULT_LR = {m.name: m.default_lr for m in _TABLE if m.default_lr is not None}
PRECONDITIONED_LR = {m.name: m.preconditioned_lr for m in _TABLE if m.preconditioned_lr is not None}
