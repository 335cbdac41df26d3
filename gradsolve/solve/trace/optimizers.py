"""gs.optim's optimizers over a Trace: ``TracedPoint``, the solve loop's stand-in for the unknowns, and ``TracedLM``.

The update rules are gs.optim's own (``Optimizer._update``); what changes is what
they run on: one (p,) tensor whose .grad the trace fills, one Python float per
unknown (``_ScalarSlot``, with ``_FloatMath`` as its array namespace), or a
(K, p) batch of points (``ArraySlot``).
"""
from __future__ import annotations

import math

import numpy as np

import gradsolve as gs
from gradsolve import optim
from gradsolve.solve.loop import projected_max_abs
from gradsolve.solve.trace.codegen import FLOAT
from gradsolve.solve.trace.compiled import Trace
from gradsolve.solve.trace.helpers import float_maximum

__all__ = ["TracedPoint", "TracedLM", "ArraySlot"]


class _FloatMath:
    """The few array-namespace functions the gs.optim update rules call, on Python floats.

    With it, ``Optimizer._update`` -- the one definition of each update rule --
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
    """A stand-in parameter for ``Optimizer._update``: a float with ``_xp``, ``_data`` and ``_assign_``."""

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


def _clip(values, lower, upper):
    return [min(max(v, -math.inf if lo is None else lo), math.inf if hi is None else hi)
            for v, lo, hi in zip(values, lower, upper)]


class TracedPoint:
    """The unknowns as one flat tensor, evaluated by a Trace: the loop's stand-in for the engine's leaves.

    The optimizers are the gs.optim classes themselves, over ``params = [flat]``
    (one (p,) tensor whose .grad the trace fills); Levenberg-Marquardt is
    ``TracedLM``.  For float traces, ``fast_first_order`` runs first-order methods
    on one float per unknown, calling the same ``_update`` rules.
    """

    def __init__(self, trace: Trace, values, dtype):
        self.trace = trace
        self.label = trace.label
        self.flat = gs.tensor(np.asarray(values, dtype=np.float64), dtype=dtype, requires_grad=True)
        self.params = [self.flat]
        if trace.flavour != FLOAT:
            self.fast_first_order = None

    def values(self) -> np.ndarray:
        return np.asarray(self.flat.detach().numpy(), dtype=np.float64).copy()

    def set_values(self, values) -> None:
        with gs.no_grad():
            self.flat._assign_(np.asarray(values, dtype=self.flat._data.dtype).reshape(self.flat.shape))

    def project(self, lower, upper) -> None:
        if any(v is not None for v in list(lower) + list(upper)):
            self.set_values(_clip(self.values().tolist(), lower, upper))

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
        flat_lower = None if lower is None else [np.array([-math.inf if v is None else v for v in lower])]
        flat_upper = None if upper is None else [np.array([math.inf if v is None else v for v in upper])]
        return TracedLM(self.params, self.trace, lower=flat_lower, upper=flat_upper, **settings)

    def fast_first_order(self, opt, rates, watch, lower, upper, steps):
        """First-order steps on Python floats; returns (steps run, (status, reason) or None).

        Each step: loss and gradient from the float trace, ``opt._update`` per
        unknown (the gs.optim rule), projection into the bounds, the rate
        scheduler, then the loop's shared stopping tests (``watch``).  The loss
        after a step and the gradient for the next come from one call.
        """
        trace = self.trace
        raw = trace.fast_loss_grad

        def loss_grad(x):
            try:
                out = raw(*x)
                return out[0], out[1:]
            except (ArithmeticError, ValueError):
                return trace.loss_grad(x)

        x = self.values().tolist()
        slots = [_ScalarSlot(v) for v in x]
        states = [{} for _ in slots]
        group = opt.param_groups[0]
        update = opt._update
        bounded = any(v is not None for v in list(lower) + list(upper))
        observe, offer, isfinite = watch.observe, watch.offer, math.isfinite
        loss, g = loss_grad(x)
        step = 0
        try:
            for step in range(1, steps + 1):
                watch.current_step = step
                if not isfinite(loss):
                    return step, ("diverged", f"the loss became {loss} at step {step}")
                offer(loss, x)
                for slot, gi, state in zip(slots, g, states):
                    update(slot, gi, state, group)
                x_new = [slot._data for slot in slots]
                if bounded:
                    x_new = _clip(x_new, lower, upper)
                    for slot, v in zip(slots, x_new):
                        slot._data = v
                grad_norm = projected_max_abs(g, x, lower, upper) if bounded else _max_abs_floats(g)
                loss, g = loss_grad(x_new)
                if rates is not None:
                    rates.step(loss)
                stop = observe(step, loss, grad_norm, math.dist(x_new, x), math.hypot(*x_new), x_new,
                               group["lr"], "lr")
                x = x_new
                if stop is not None:
                    return step, stop
            return step, None
        finally:
            self.set_values(x if all(map(isfinite, x)) else watch.last_finite_x)


def _max_abs_floats(values) -> float:
    out = 0.0
    for v in values:
        a = abs(v)
        if not a <= out:
            if a != a:
                return math.nan
            out = a
    return out


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
