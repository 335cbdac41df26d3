"""nn.functional losses: values and gradients worked out by hand, checked against finite differences too."""
from __future__ import annotations

import numpy as np
import pytest

import gradsolve as gs
import gradsolve.nn.functional as F
from gradsolve.autograd import gradcheck

from engine_helpers import make

# input - target = d = [0.2, -1.5, 2.0, -0.4], |d| = [0.2, 1.5, 2.0, 0.4] (none of them on a branch point)
INPUT = [0.2, -1.5, 3.0, 0.6]
TARGET = [0.0, 0.0, 1.0, 1.0]
SIGN = [1.0, -1.0, 1.0, -1.0]

# loss -> (call, elementwise loss, elementwise derivative with respect to the input)
LOSSES = {
    "l1": (lambda x, t, r: F.l1_loss(x, t, reduction=r),
           [0.2, 1.5, 2.0, 0.4], SIGN),
    # beta = 1: 0.5 d^2 where |d| < 1, else |d| - 0.5
    "smooth_l1": (lambda x, t, r: F.smooth_l1_loss(x, t, reduction=r),
                  [0.02, 1.0, 1.5, 0.08], [0.2, -1.0, 1.0, -0.4]),
    # beta = 0.5: 0.5 d^2 / 0.5 where |d| < 0.5, else |d| - 0.25
    "smooth_l1_beta_0.5": (lambda x, t, r: F.smooth_l1_loss(x, t, reduction=r, beta=0.5),
                           [0.04, 1.25, 1.75, 0.16], [0.4, -1.0, 1.0, -0.8]),
    "smooth_l1_beta_0": (lambda x, t, r: F.smooth_l1_loss(x, t, reduction=r, beta=0.0),
                         [0.2, 1.5, 2.0, 0.4], SIGN),
    # delta = 1: 0.5 d^2 where |d| <= 1, else |d| - 0.5
    "huber": (lambda x, t, r: F.huber_loss(x, t, reduction=r),
              [0.02, 1.0, 1.5, 0.08], [0.2, -1.0, 1.0, -0.4]),
    # delta = 0.5: 0.5 d^2 where |d| <= 0.5, else 0.5 (|d| - 0.25)
    "huber_delta_0.5": (lambda x, t, r: F.huber_loss(x, t, reduction=r, delta=0.5),
                        [0.02, 0.625, 0.875, 0.08], [0.2, -0.5, 0.5, -0.4]),
    # delta = 1.8: 0.5 d^2 where |d| <= 1.8, else 1.8 (|d| - 0.9)
    "huber_delta_1.8": (lambda x, t, r: F.huber_loss(x, t, reduction=r, delta=1.8),
                        [0.02, 1.125, 1.98, 0.08], [0.2, -1.5, 1.8, -0.4]),
}


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_values_and_gradients(name, reduction, device):
    call, elementwise, derivative = LOSSES[name]
    x = make(INPUT, device)
    t = make(TARGET, device)
    loss = call(x, t, reduction)
    elementwise, derivative = np.array(elementwise), np.array(derivative)
    weights = np.array([1.0, 2.0, 3.0, 4.0])
    if reduction == "none":
        assert loss.shape == (4,)
        np.testing.assert_allclose(loss.numpy(), elementwise, rtol=1e-13, atol=1e-15)
        loss.backward(gs.tensor(weights, device=device))
        expected = weights * derivative
    else:
        assert loss.shape == ()
        scale = 1.0 / 4 if reduction == "mean" else 1.0
        assert loss.item() == pytest.approx(elementwise.sum() * scale, rel=1e-13)
        loss.backward()
        expected = derivative * scale
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(t.grad.numpy(), -expected, rtol=1e-13, atol=1e-15)  # d/dtarget = -d/dinput
    assert gradcheck(lambda a, b: call(a, b, reduction), (make(INPUT, device), make(TARGET, device)))


def test_mse_loss_and_reduction_names(device):
    x = make(INPUT, device)
    loss = F.mse_loss(x, make(TARGET, device, requires_grad=False))
    assert loss.item() == pytest.approx((0.04 + 2.25 + 4.0 + 0.16) / 4, rel=1e-13)
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), np.array([0.2, -1.5, 2.0, -0.4]) / 2, rtol=1e-13)
    with pytest.raises(ValueError, match="reduction must be one of mean, sum, none"):
        F.l1_loss(x, x, reduction="average")


def test_losses_keep_float32(device):
    x = gs.tensor(INPUT, dtype=gs.float32, device=device, requires_grad=True)
    t = gs.tensor(TARGET, dtype=gs.float32, device=device)
    for call, _, _ in LOSSES.values():
        out = call(x, t, "mean")
        assert out.dtype == gs.float32
        out.backward()
    assert x.grad.dtype == gs.float32
