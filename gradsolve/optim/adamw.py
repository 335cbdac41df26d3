"""AdamW (Loshchilov & Hutter, 2017): Adam with decoupled weight decay."""

from __future__ import annotations

from .adam import Adam

__all__ = ["AdamW"]


class AdamW(Adam):
    r"""AdamW, "Decoupled Weight Decay Regularization" (https://arxiv.org/abs/1711.05101).

    Adam (see :class:`~gradsolve.optim.Adam`) where the decay shrinks the parameter
    before the moment update instead of entering the gradient::

        p = p * (1 - lr * weight_decay)
        ... then the Adam update with the undecayed gradient g

    Args are Adam's; ``weight_decay`` defaults to 1e-2.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize, decoupled_weight_decay=True)

    def load_state_dict(self, state_dict) -> None:
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
