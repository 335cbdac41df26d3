"""RMSprop (Hinton's lecture 6e), optionally centered and with momentum."""

from __future__ import annotations

from .optimizer import Optimizer, lerp

__all__ = ["RMSprop"]


class RMSprop(Optimizer):
    r"""RMSprop (Tieleman & Hinton, 2012; centered form from Graves, 2013).

    For each parameter ``p`` with gradient ``g``; ``v`` (square_avg), ``m`` (grad_avg)
    and ``b`` (momentum buffer) start at 0::

        g = -g if maximize
        g = g + weight_decay * p                 if weight_decay != 0
        v = alpha * v + (1 - alpha) * g**2
        if centered:  m = alpha * m + (1 - alpha) * g;  avg = sqrt(v - m**2) + eps
        else:         avg = sqrt(v) + eps
        if momentum > 0:  b = momentum * b + g / avg;  p = p - lr * b
        else:             p = p - lr * g / avg

    Args:
        params: tensors or parameter groups.
        lr: learning rate (default 1e-2).
        alpha: smoothing constant (default 0.99).
        eps: added to the denominator (default 1e-8).
        weight_decay: L2 penalty (default 0).
        momentum: momentum factor (default 0).
        centered: normalize by an estimate of the gradient's variance.
        maximize: ascend instead of descend.
    """

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False,
                 maximize: bool = False) -> None:
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= momentum:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= alpha:
            raise ValueError(f"Invalid alpha value: {alpha}")
        defaults = dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                        weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults)

    def apply_update(self, p, grad, state, group) -> None:
        xp = p._xp
        lr, alpha, eps = group["lr"], group["alpha"], group["eps"]
        weight_decay, momentum = group["weight_decay"], group["momentum"]
        if not state:
            state["step"] = 0
            state["square_avg"] = xp.zeros_like(p._data)
            if momentum > 0:
                state["momentum_buffer"] = xp.zeros_like(p._data)
            if group["centered"]:
                state["grad_avg"] = xp.zeros_like(p._data)
        state["step"] += 1

        g = -grad if group["maximize"] else grad
        if weight_decay != 0:
            g = g + weight_decay * p._data
        square_avg = state["square_avg"] * alpha + (1 - alpha) * g * g
        state["square_avg"] = xp.asarray(square_avg)
        if group["centered"]:
            grad_avg = lerp(state["grad_avg"], g, 1 - alpha)
            state["grad_avg"] = xp.asarray(grad_avg)
            avg = xp.sqrt(square_avg - grad_avg * grad_avg) + eps
        else:
            avg = xp.sqrt(square_avg) + eps
        if momentum > 0:
            buf = state["momentum_buffer"] * momentum + g / avg
            state["momentum_buffer"] = xp.asarray(buf)
            p._assign_(p._data + (-lr) * buf)
        else:
            p._assign_(p._data + (-lr) * g / avg)
