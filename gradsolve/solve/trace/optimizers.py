"""gs.optim's optimizers over a Trace: ``TracedPoint``, the solve loop's stand-in for the unknowns, and ``TracedLM``.

The update rules are gs.optim's own (``Optimizer.apply_update``); what changes is what
they run on: one (p,) tensor whose .grad the trace fills, one Python float per
unknown (``_ScalarSlot``, with ``_FloatMath`` as its array namespace), or a
(K, p) batch of points (``ArraySlot``).
"""
from __future__ import annotations

import math

import numpy as np

import gradsolve as gs
from gradsolve import optim
from gradsolve.solve.bounds import clip_values, is_bounded, limits
from gradsolve.solve.trace.codegen import FLOAT
from gradsolve.solve.trace.compiled import Trace
from gradsolve.solve.points import TensorDescent
from gradsolve.solve.trace.helpers import float_maximum

__all__ = ["TracedPoint", "TracedLM", "ArraySlot"]


class _FloatMath:
    """The few array-namespace functions the gs.optim update rules call, on Python floats.

    With it, ``Optimizer.apply_update`` -- the one definition of each update rule --
    runs on a plain float per unknown (``_ScalarSlot``) at float speed.
    """

    @staticmethod
    def zeros_like(x):
        return 0.0

    @staticmethod
    def full_like(x, value):
        return float(value)

    @staticmethod
    def asarray(x, dtype=None, copy=None):
        return x

    @staticmethod
    def sqrt(x):
        return math.sqrt(x) if x >= 0.0 else math.nan

    @staticmethod
    def maximum(a, b):
        return float_maximum(a, b)


class _ScalarSlot:
    """A stand-in parameter for ``Optimizer.apply_update``: a float with ``_xp``, ``_data`` and ``_assign_``."""

    __slots__ = ("_data",)
    _xp = _FloatMath

    def __init__(self, value: float):
        self._data = value

    def _assign_(self, value) -> None:
        self._data = value


class ArraySlot:
    """The same stand-in over an array (a (K, p) batch of points) of the namespace `xp` (NumPy by default)."""

    __slots__ = ("_data", "_xp")

    def __init__(self, array, xp=np):
        self._data = array
        self._xp = xp

    def _assign_(self, value) -> None:
        self._data = value


class FloatDescent:
    """The loop's first-order steps on Python floats, one per unknown, for a float trace.

    The same methods as ``points.TensorDescent``: the optimizer's rule is gs.optim's
    own (``apply_update`` per unknown, on ``_ScalarSlot``), the loss and gradient come
    from the trace's straight-line code (one call for both), so a step costs
    microseconds.  `math` raises where NumPy returns inf or NaN: such a point is
    evaluated again by the array code.
    """

    def __init__(self, point, opt):
        self.point = point
        self.trace = point.trace
        self.raw = point.trace.fast_loss_grad
        self.update = opt.apply_update
        self.group = opt.param_groups[0]
        self.slots, self.states = [], []

    def start(self) -> list:
        x = self.point.values().tolist()
        self.slots = [_ScalarSlot(v) for v in x]
        self.states = [{} for _ in x]
        return x

    def loss_grad(self, x):
        try:
            out = self.raw(*x)
            return out[0], out[1:]
        except (ArithmeticError, ValueError):
            return self.trace.loss_grad(x)

    def step(self, g, lower, upper, bounded: bool) -> list:
        update, group = self.update, self.group
        for slot, gi, state in zip(self.slots, g, self.states):
            update(slot, gi, state, group)
        x_new = [slot._data for slot in self.slots]
        if bounded:
            x_new = clip_values(x_new, lower, upper)
            for slot, v in zip(self.slots, x_new):
                slot._data = v
        return x_new

    distance = staticmethod(math.dist)

    @staticmethod
    def norm(x) -> float:
        return math.hypot(*x)

    @staticmethod
    def max_abs(values) -> float:
        out = 0.0
        for v in values:
            a = abs(v)
            if not a <= out:
                if a != a:
                    return math.nan
                out = a
        return out

    def finish(self, values) -> None:
        self.point.set_values(values)


class TracedPoint:
    """The unknowns as one flat tensor, evaluated by a Trace: the loop's stand-in for the engine's leaves.

    The optimizers are the gs.optim classes themselves, over ``params = [flat]``
    (one (p,) tensor whose .grad the trace fills); Levenberg-Marquardt is
    ``TracedLM``.  For float traces the loop's first-order steps run on one float
    per unknown (``FloatDescent``), calling the same update rules.
    """

    def __init__(self, trace: Trace, values, dtype):
        self.trace = trace
        self.label = trace.label
        self.flat = gs.tensor(np.asarray(values, dtype=np.float64), dtype=dtype, requires_grad=True)
        self.params = [self.flat]

    def values(self) -> np.ndarray:
        return np.asarray(self.flat.detach().numpy(), dtype=np.float64).copy()

    def set_values(self, values) -> None:
        with gs.no_grad():
            self.flat._assign_(np.asarray(values, dtype=self.flat._data.dtype).reshape(self.flat.shape))

    def project(self, lower, upper) -> None:
        if is_bounded(lower, upper):
            self.set_values(clip_values(self.values().tolist(), lower, upper))

    def loss_grad(self):
        loss, g = self.trace.loss_grad(self.values())
        g = np.asarray(g, dtype=np.float64)
        self.flat.grad = gs.tensor(g, dtype=self.flat.dtype)
        return float(loss), g

    def loss(self) -> float:
        return float(self.trace.loss_grad(self.values())[0])

    def closure(self):
        def closure():
            loss, _ = self.loss_grad()
            return gs.tensor(loss, dtype=self.flat.dtype)

        return closure

    def make_lm(self, lower=None, upper=None, **settings):
        free = [None] * self.flat.shape[0]
        lo, hi = limits(free if lower is None else lower, free if upper is None else upper)
        flat_lower = None if lower is None else [lo]
        flat_upper = None if upper is None else [hi]
        return TracedLM(self.params, self.trace, lower=flat_lower, upper=flat_upper, **settings)

    def descent(self, opt):
        """What the loop's first-order steps drive: Python floats for a float trace, else the flat tensor."""
        return FloatDescent(self, opt) if self.trace.flavour == FLOAT else TensorDescent(self, opt)


class TracedLM(optim.LevenbergMarquardt):
    """Levenberg-Marquardt (gs.optim's algorithm, unchanged) with residuals and Jacobian from a Trace.

    Only the four evaluation hooks differ: the point is the flat parameter's values,
    residuals and the exact Jacobian come from the generated code.
    """

    def __init__(self, params, trace: Trace, **settings):
        super().__init__(params, residuals=_no_closure, **settings)
        self.trace = trace

    def _get_x(self) -> np.ndarray:
        return np.asarray(self._params[0].detach().numpy(), dtype=np.float64).reshape(-1).copy()

    def _set_x(self, x) -> None:
        p = self._params[0]
        p._assign_(np.asarray(x, dtype=p._data.dtype).reshape(p.shape))

    def _eval_residuals(self) -> np.ndarray:
        self.nfev += 1
        return self.trace.residuals(self._get_x())

    def _eval_jacobian(self):
        self.nfev += 1
        self.njev += 1
        return self.trace.residuals_jacobian(self._get_x())


def _no_closure():  # pragma: no cover - TracedLM evaluates through its trace
    raise AssertionError("TracedLM has no residual closure")
