"""Losses and activations, as in ``torch.nn.functional`` (imported as ``F``).

>>> import gradsolve as gs
>>> import gradsolve.nn.functional as F
>>> F.mse_loss(gs.tensor([1.0, 2.0]), gs.tensor([1.0, 4.0]))
tensor(2.)
"""
from __future__ import annotations

from gradsolve import ops
from gradsolve._tensor import Tensor

_REDUCTIONS = ("mean", "sum", "none")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be one of {', '.join(_REDUCTIONS)}, got {reduction!r}")


def _check_shapes(input: Tensor, target: Tensor):
    if isinstance(target, Tensor) and input.shape != target.shape:
        # PyTorch broadcasts with a warning; a silent broadcast in a loss is nearly always a bug.
        import warnings

        warnings.warn(f"loss: input shape {input.shape} and target shape {target.shape} differ and will broadcast",
                      stacklevel=3)


def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Mean squared error: reduce((input - target)**2)."""
    _check_shapes(input, target)
    diff = input - target
    return _reduce(diff * diff, reduction)


def l1_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Mean absolute error: reduce(|input - target|)."""
    _check_shapes(input, target)
    return _reduce((input - target).abs(), reduction)


def smooth_l1_loss(input: Tensor, target: Tensor, reduction: str = "mean", beta: float = 1.0) -> Tensor:
    """0.5 d**2 / beta where |d| < beta, else |d| - 0.5 beta (beta = 0 is the L1 loss)."""
    _check_shapes(input, target)
    d = (input - target).abs()
    if beta == 0:
        return _reduce(d, reduction)
    quadratic = 0.5 * d * d / beta
    linear = d - 0.5 * beta
    return _reduce(ops.where(d < beta, quadratic, linear), reduction)


def huber_loss(input: Tensor, target: Tensor, reduction: str = "mean", delta: float = 1.0) -> Tensor:
    """0.5 d**2 where |d| <= delta, else delta (|d| - 0.5 delta)."""
    _check_shapes(input, target)
    d = (input - target).abs()
    quadratic = 0.5 * d * d
    linear = delta * (d - 0.5 * delta)
    return _reduce(ops.where(d <= delta, quadratic, linear), reduction)


def relu(input: Tensor) -> Tensor:
    return input.relu()


def sigmoid(input: Tensor) -> Tensor:
    return input.sigmoid()


def tanh(input: Tensor) -> Tensor:
    return input.tanh()


def softplus(input: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """log(1 + exp(beta x)) / beta, linear above `threshold` for stability."""
    z = input * beta
    safe = ops.where(z > threshold, 0.0, z)
    return ops.where(z > threshold, input, safe.exp().log1p() / beta)
