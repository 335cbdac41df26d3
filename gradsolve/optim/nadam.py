"""NAdam (Dozat, 2016): Adam with Nesterov momentum and a momentum-decay schedule."""

from __future__ import annotations

from .adam import validate_adam_hyperparameters
from .optimizer import Optimizer, lerp

__all__ = ["NAdam"]


class NAdam(Optimizer):
    r"""NAdam, "Incorporating Nesterov Momentum into Adam" (Dozat, ICLR 2016 workshop).

    For each parameter ``p`` with gradient ``g``; ``m``, ``v`` start at 0, the product
    ``mu_product`` at 1 and the step count ``t`` at 1 on the first update::

        g = -g if maximize
        p = p * (1 - lr * weight_decay)        if decoupled_weight_decay
        g = g + weight_decay * p               otherwise, if weight_decay != 0
        mu      = beta1 * (1 - 0.5 * 0.96 ** (t * momentum_decay))
        mu_next = beta1 * (1 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
        mu_product = mu_product * mu           # kept across steps (PyTorch's form)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g**2
        denom = sqrt(v / (1 - beta2**t)) + eps
        p = p - lr * (1 - mu) / (1 - mu_product) * g / denom
        p = p - lr * mu_next / (1 - mu_product * mu_next) * m / denom

    ``mu_product`` is a Python float (float64) whatever the parameter dtype, as in
    PyTorch with float64 as its default dtype.

    Args:
        params: tensors or parameter groups.
        lr: learning rate (default 2e-3).
        betas: (beta1, beta2) (default (0.9, 0.999)).
        eps: added to the denominator (default 1e-8).
        weight_decay: L2 penalty or decoupled decay (default 0).
        momentum_decay: psi of the momentum schedule (default 4e-3).
        decoupled_weight_decay: decay the parameter directly (as AdamW).
        maximize: ascend instead of descend.
    """

    def __init__(self, params, lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum_decay: float = 4e-3,
                 decoupled_weight_decay: bool = False, *, maximize: bool = False) -> None:
        validate_adam_hyperparameters(lr, betas, eps, weight_decay)
        if not 0.0 <= momentum_decay:
            raise ValueError(f"Invalid momentum_decay value: {momentum_decay}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        momentum_decay=momentum_decay,
                        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize)
        super().__init__(params, defaults)

    def apply_update(self, p, grad, state, group) -> None:
        xp = p._xp
        lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        momentum_decay = group["momentum_decay"]
        if not state:
            state["step"] = 0
            state["mu_product"] = 1.0
            state["exp_avg"] = xp.zeros_like(p._data)
            state["exp_avg_sq"] = xp.zeros_like(p._data)
        state["step"] += 1
        step = state["step"]
        bias_correction2 = 1 - beta2**step

        g = -grad if group["maximize"] else grad
        param = p._data
        if weight_decay != 0:
            if group["decoupled_weight_decay"]:
                param = param * (1 - lr * weight_decay)
            else:
                g = g + weight_decay * param

        mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * momentum_decay)))
        mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * momentum_decay)))
        mu_product = state["mu_product"] * mu
        mu_product_next = mu_product * mu_next
        state["mu_product"] = mu_product

        exp_avg = lerp(state["exp_avg"], g, 1 - beta1)
        exp_avg_sq = state["exp_avg_sq"] * beta2 + (1 - beta2) * g * g
        state["exp_avg"] = xp.asarray(exp_avg)
        state["exp_avg_sq"] = xp.asarray(exp_avg_sq)

        denom = xp.sqrt(exp_avg_sq / bias_correction2) + eps
        param = param + (-lr * (1.0 - mu) / (1.0 - mu_product)) * g / denom
        param = param + ((-lr * mu_next) / (1.0 - mu_product_next)) * exp_avg / denom
        p._assign_(param)
