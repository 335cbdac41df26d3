"""Adam (Kingma & Ba, 2014), with optional AMSGrad and decoupled weight decay."""

from __future__ import annotations

from .optimizer import Optimizer, lerp

__all__ = ["Adam"]


def validate_adam_hyperparameters(lr, betas, eps, weight_decay) -> None:
    """Raise ValueError, with PyTorch's messages, for hyperparameters out of range (Adam, AdamW, NAdam)."""
    if not 0.0 <= lr:
        raise ValueError(f"Invalid learning rate: {lr}")
    if not 0.0 <= eps:
        raise ValueError(f"Invalid epsilon value: {eps}")
    if not 0.0 <= betas[0] < 1.0:
        raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
    if not 0.0 <= betas[1] < 1.0:
        raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
    if not 0.0 <= weight_decay:
        raise ValueError(f"Invalid weight_decay value: {weight_decay}")


class Adam(Optimizer):
    r"""Adam, "A Method for Stochastic Optimization" (https://arxiv.org/abs/1412.6980).

    For each parameter ``p`` with gradient ``g``; ``m``, ``v`` (and ``v_max``) start at 0
    and the step count ``t`` starts at 1 on the first update::

        g = -g if maximize
        p = p * (1 - lr * weight_decay)   if decoupled_weight_decay (AdamW)
        g = g + weight_decay * p          otherwise, if weight_decay != 0
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g**2
        v_max = max(v_max, v); v_hat = v_max   if amsgrad   else  v_hat = v
        p = p - lr / (1 - beta1**t) * m / (sqrt(v_hat) / sqrt(1 - beta2**t) + eps)

    Note that ``eps`` is added *outside* the square root of the bias-corrected second
    moment.

    Args:
        params: tensors or parameter groups.
        lr: learning rate (default 1e-3).
        betas: decay rates of the first and second moments (default (0.9, 0.999)).
        eps: added to the denominator (default 1e-8).
        weight_decay: L2 penalty, or decoupled decay when ``decoupled_weight_decay``.
        amsgrad: use the running maximum of ``v`` (AMSGrad).
        maximize: ascend instead of descend.
        decoupled_weight_decay: decay the parameter directly, as AdamW does.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False, *,
                 maximize: bool = False, decoupled_weight_decay: bool = False) -> None:
        validate_adam_hyperparameters(lr, betas, eps, weight_decay)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=maximize,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    def apply_update(self, p, grad, state, group) -> None:
        xp = p._xp
        lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p._data)
            state["exp_avg_sq"] = xp.zeros_like(p._data)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = xp.zeros_like(p._data)
        state["step"] += 1
        step = state["step"]

        g = -grad if group["maximize"] else grad
        param = p._data
        if weight_decay != 0:
            if group["decoupled_weight_decay"]:
                param = param * (1 - lr * weight_decay)
            else:
                g = g + weight_decay * param

        exp_avg = lerp(state["exp_avg"], g, 1 - beta1)
        exp_avg_sq = state["exp_avg_sq"] * beta2 + (1 - beta2) * g * g
        state["exp_avg"] = xp.asarray(exp_avg)
        state["exp_avg_sq"] = xp.asarray(exp_avg_sq)

        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = xp.asarray(xp.maximum(state["max_exp_avg_sq"], exp_avg_sq))
            denom = xp.sqrt(state["max_exp_avg_sq"]) / bias_correction2_sqrt + eps
        else:
            denom = xp.sqrt(exp_avg_sq) / bias_correction2_sqrt + eps
        p._assign_(param + (-step_size) * exp_avg / denom)
