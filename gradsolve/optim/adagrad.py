"""Adagrad (Duchi, Hazan & Singer, 2011): per-coordinate steps from the sum of g^2."""

from __future__ import annotations

from .optimizer import Optimizer

__all__ = ["Adagrad"]


class Adagrad(Optimizer):
    r"""Adagrad, "Adaptive Subgradient Methods" (JMLR 12, 2011).

    For each parameter ``p`` with gradient ``g``; the accumulator ``s`` starts at
    ``initial_accumulator_value`` and the step count ``t`` at 1 on the first update::

        g = -g if maximize
        g = g + weight_decay * p                 if weight_decay != 0
        clr = lr / (1 + (t - 1) * lr_decay)
        s = s + g**2
        p = p - clr * g / (sqrt(s) + eps)

    Args:
        params: tensors or parameter groups.
        lr: learning rate (default 1e-2).
        lr_decay: learning-rate decay (default 0).
        weight_decay: L2 penalty (default 0).
        initial_accumulator_value: start of ``s`` (default 0).
        eps: added to the denominator (default 1e-10).
        maximize: ascend instead of descend.
    """

    def __init__(self, params, lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10, *,
                 maximize: bool = False) -> None:
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= lr_decay:
            raise ValueError(f"Invalid lr_decay value: {lr_decay}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= initial_accumulator_value:
            raise ValueError(f"Invalid initial_accumulator_value value: {initial_accumulator_value}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, maximize=maximize)
        super().__init__(params, defaults)

    def apply_update(self, p, grad, state, group) -> None:
        xp = p._xp
        lr, lr_decay, eps, weight_decay = group["lr"], group["lr_decay"], group["eps"], group["weight_decay"]
        if not state:
            state["step"] = 0
            state["sum"] = xp.full_like(p._data, group["initial_accumulator_value"])
        state["step"] += 1
        step = state["step"]

        g = -grad if group["maximize"] else grad
        if weight_decay != 0:
            g = g + weight_decay * p._data
        clr = lr / (1 + (step - 1) * lr_decay)
        state_sum = state["sum"] + 1 * g * g
        state["sum"] = xp.asarray(state_sum)
        std = xp.sqrt(state_sum) + eps
        p._assign_(p._data + (-clr) * g / std)
