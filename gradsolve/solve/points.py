"""What the solve loop moves and measures: the unknowns as the engine's leaf tensors.

An objective (``gradsolve.solve.solver.Objective``, a fit's objectives) has
``params`` (0-d leaf tensors), ``names``, ``loss()`` (a 0-d tensor), ``residuals``
(a closure returning the residual vector, or None for a ``minimize`` loss), and
may say ``atol_applies`` (its loss cannot go below zero), ``smooth`` (False for
a loss with kinks) and ``unused`` (unknowns no expression uses).  A point is what
an optimizer updates: `EagerPoint` here, or the traced stand-in
(``gradsolve.solve.trace.TracedPoint``) with the same methods.  Every check at
a reported point evaluates the objective itself, through these functions.
"""
from __future__ import annotations

import math

import numpy as np

import gradsolve as gs
from gradsolve import optim
from gradsolve.solve.bounds import clip_values

__all__ = ["EagerPoint", "TensorDescent", "values_of", "set_values", "loss_and_gradient", "loss_traits", "unreached_unknowns",
           "loss_hessian", "evaluators"]


def values_of(params) -> np.ndarray:
    """The parameters' values as a float64 array."""
    return np.array([float(p.item()) for p in params], dtype=np.float64)


def set_values(params, values) -> None:
    with gs.no_grad():
        for p, v in zip(params, values):
            p._assign_(p._xp.asarray(v, dtype=p._data.dtype))


def _project(params, lower, upper) -> None:
    """Clip each unknown into its bounds (first-order methods project after every step)."""
    values = [float(p.item()) for p in params]
    with gs.no_grad():
        for p, value, clipped in zip(params, values, clip_values(values, lower, upper)):
            if clipped != value:
                p._assign_(p._xp.asarray(clipped, dtype=p._data.dtype))


def loss_and_gradient(objective, params):
    """(loss, gradient) at the parameters' values; leaves each parameter's .grad set (None: no path to it)."""
    for p in params:
        p.grad = None
    loss = objective.loss()
    if loss.requires_grad:  # a loss with no path to the unknowns (sign(x): piecewise constant) has gradient 0
        loss.backward()
    grad = np.array([0.0 if p.grad is None else float(p.grad.item()) for p in params])
    return float(loss.item()), grad


def loss_traits(objective) -> tuple[bool, bool]:
    """(atol applies, smooth) for an objective: see the module doc."""
    return (bool(getattr(objective, "atol_applies", objective.residuals is not None)),
            bool(getattr(objective, "smooth", True)))


def unreached_unknowns(objective, params) -> list[str]:
    """The unknowns the loss uses that its graph has no path to, after `loss_and_gradient` (their .grad is None).

    Such a loss is piecewise constant in them (sign(x)): its gradient there is 0
    everywhere and says nothing about a minimum.  Unknowns no expression uses
    (``objective.unused``, names) are not counted: nothing depends on them.
    """
    unused = set(getattr(objective, "unused", ()))
    return [name for name, p in zip(objective.names, params) if p.grad is None and name not in unused]


def loss_hessian(objective, params, values) -> np.ndarray:
    """The n x n Hessian of the objective's loss at `values`, float64, symmetrized; the parameters keep `values`.

    The gradient graph is built once (``create_graph``) and each row is one
    backward pass through it: n passes, not n Hessian-vector products that
    each rebuild the loss and its gradient first (25 times slower at 150
    unknowns).  Rows of unknowns the gradient has no path to are zero.
    """
    set_values(params, values)
    n = len(params)
    with gs.enable_grad():
        loss = objective.loss()
        if not loss.requires_grad:
            return np.zeros((n, n))
        grads = gs.autograd.grad([loss], params, create_graph=True, allow_unused=True, materialize_grads=True)
    rows = []
    for g_k in grads:
        if not g_k.requires_grad:
            rows.append(np.zeros(n))
            continue
        row = gs.autograd.grad([g_k], params, retain_graph=True, allow_unused=True, materialize_grads=True)
        rows.append([float(r.item()) for r in row])
    H = np.array(rows, dtype=np.float64).reshape(n, n)
    return (H + H.T) / 2.0


def evaluators(objective, params):
    """(loss_at(values), hessian_at(values)) of `objective`, for the checks made at a reported point:
    each sets the parameters to `values` (the caller puts them back)."""
    def loss_at(v):
        set_values(params, v)
        with gs.no_grad():
            return float(objective.loss().item())

    def hessian_at(v):
        return loss_hessian(objective, params, v)

    return loss_at, hessian_at


class TensorDescent:
    """First-order steps on a point's tensors: the optimizer's own ``step()`` over ``point.params``, the point's
    evaluation (the engine's, or a trace's over one flat tensor).  The loop's first-order steps
    (gradsolve.solve.loop) drive it; ``TracedPoint`` has a float counterpart with the same methods."""

    def __init__(self, point, opt):
        self.point, self.opt = point, opt

    def start(self) -> np.ndarray:
        return self.point.values()

    def loss_grad(self, x):
        """(loss, gradient) at x, where the point is; leaves the gradient in .grad for the next step."""
        return self.point.loss_grad()

    def step(self, g, lower, upper, bounded: bool) -> np.ndarray:
        """One update of the optimizer's rule from the gradient in .grad (= g), projected into the bounds."""
        self.opt.step()
        if bounded:
            self.point.project(lower, upper)
        return self.point.values()

    @staticmethod
    def distance(a, b) -> float:
        return float(np.linalg.norm(a - b))

    @staticmethod
    def norm(a) -> float:
        return float(np.linalg.norm(a))

    @staticmethod
    def max_abs(g) -> float:
        return float(np.max(np.abs(g))) if g.size else 0.0

    def finish(self, values) -> None:
        self.point.set_values(values)


class EagerPoint:
    """The unknowns as the engine's 0-d leaf tensors: what the loop moves when nothing is traced."""

    label = "eager"

    def __init__(self, objective):
        self.objective = objective
        self.params = objective.params  # what the optimizer updates

    def values(self) -> np.ndarray:
        return values_of(self.params)

    def set_values(self, values) -> None:
        set_values(self.params, values)

    def project(self, lower, upper) -> None:
        _project(self.params, lower, upper)

    def loss_grad(self):
        """(loss, gradient array) at the current point; leaves each parameter's .grad set."""
        return loss_and_gradient(self.objective, self.params)

    def loss(self) -> float:
        with gs.no_grad():
            return float(self.objective.loss().item())

    def closure(self):
        objective = self.objective

        def closure():
            for p in self.params:
                p.grad = None
            value = objective.loss()
            if value.requires_grad:  # no path to the unknowns: gradient 0 (see loss_and_gradient)
                value.backward()
            return value

        return closure

    def make_lm(self, **settings):
        return optim.LevenbergMarquardt(self.params, residuals=self.objective.residuals, **settings)

    def descent(self, opt) -> TensorDescent:
        """What the loop's first-order steps drive (see TensorDescent)."""
        return TensorDescent(self, opt)

