"""Stochastic gradient descent, with momentum, dampening, Nesterov and weight decay."""

from __future__ import annotations

from .optimizer import Optimizer

__all__ = ["SGD"]


class SGD(Optimizer):
    r"""Stochastic gradient descent (PyTorch's algorithm and defaults).

    For each parameter ``p`` with gradient ``g`` (``b`` is the momentum buffer)::

        g = -g if maximize
        g = g + weight_decay * p                       if weight_decay != 0
        if momentum != 0:
            b = g                        on the first step
            b = momentum * b + (1 - dampening) * g     afterwards
            g = g + momentum * b  if nesterov  else  b
        p = p - lr * g

    Args:
        params: tensors or parameter groups to optimize.
        lr: learning rate (default 1e-3, as in current PyTorch).
        momentum: momentum factor (default 0).
        dampening: dampening of the momentum (default 0).
        weight_decay: L2 penalty added to the gradient (default 0).
        nesterov: Nesterov momentum (needs momentum > 0 and dampening 0).
        maximize: ascend instead of descend.

    Example (call ``zero_grad`` each step; without it gradients accumulate, and this
    run ends at x = 4, y = 2 as in PyTorch)::

        >>> import gradsolve as gs
        >>> x = gs.tensor(5.0, requires_grad=True); y = gs.tensor(1.0, requires_grad=True)
        >>> opt = SGD([x, y], lr=0.1)
        >>> for _ in range(100):
        ...     opt.zero_grad(); (x - y).abs().backward(); opt.step()
        >>> round(x.item(), 6), round(y.item(), 6)    # they meet at 3 (then swap by lr)
        (3.0, 3.0)
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False) -> None:
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)

    def apply_update(self, p, grad, state, group) -> None:
        xp = p._xp
        lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
        weight_decay = group["weight_decay"]

        g = -grad if group["maximize"] else grad
        if weight_decay != 0:
            g = g + weight_decay * p._data
        if momentum != 0:
            if "momentum_buffer" not in state:
                buf = xp.asarray(g, copy=True)
            else:
                buf = state["momentum_buffer"] * momentum + (1 - dampening) * g
            state["momentum_buffer"] = xp.asarray(buf)
            g = g + momentum * buf if group["nesterov"] else buf
        p._assign_(p._data + (-lr) * g)
