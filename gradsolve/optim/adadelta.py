"""Adadelta (Zeiler, 2012): an adaptive step from running averages of g^2 and dx^2."""

from __future__ import annotations

from .optimizer import Optimizer

__all__ = ["Adadelta"]


class Adadelta(Optimizer):
    r"""Adadelta, "An Adaptive Learning Rate Method" (https://arxiv.org/abs/1212.5701).

    For each parameter ``p`` with gradient ``g`` (``v``: square_avg, ``u``: acc_delta,
    both start at 0)::

        g = -g if maximize
        g = g + weight_decay * p                   if weight_decay != 0
        v = rho * v + (1 - rho) * g**2
        dx = sqrt(u + eps) / sqrt(v + eps) * g     # the PREVIOUS u
        u = rho * u + (1 - rho) * dx**2
        p = p - lr * dx                            # lr applied last

    Args:
        params: tensors (a list or a tuple) or parameter groups.
        lr: coefficient that scales dx before it is applied (default 1.0).
        rho: decay of the running averages (default 0.9).
        eps: added inside the square roots (default 1e-6).
        weight_decay: L2 penalty (default 0).
        maximize: ascend instead of descend.
    """

    def __init__(self, params, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
                 weight_decay: float = 0.0, *, maximize: bool = False) -> None:
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"Invalid rho value: {rho}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults)

    def apply_update(self, p, grad, state, group) -> None:
        xp = p._xp
        lr, rho, eps, weight_decay = group["lr"], group["rho"], group["eps"], group["weight_decay"]
        if not state:
            state["step"] = 0
            state["square_avg"] = xp.zeros_like(p._data)
            state["acc_delta"] = xp.zeros_like(p._data)
        state["step"] += 1

        g = -grad if group["maximize"] else grad
        if weight_decay != 0:
            g = g + weight_decay * p._data
        square_avg = state["square_avg"] * rho + (1 - rho) * g * g
        std = xp.sqrt(square_avg + eps)
        delta = xp.sqrt(state["acc_delta"] + eps) / std * g
        acc_delta = state["acc_delta"] * rho + (1 - rho) * delta * delta
        state["square_avg"] = xp.asarray(square_avg)
        state["acc_delta"] = xp.asarray(acc_delta)
        p._assign_(p._data + (-lr) * delta)
