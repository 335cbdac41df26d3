"""The examples of the seed material (PyTorch tutorials), in gradsolve's spelling, with their values.

Each runs on every device; the tutorials' own code runs on the cpu, elsewhere only
`device=` is added to the tensors they create.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import gradsolve as gs
import gradsolve.nn.functional as F
from gradsolve.autograd import Variable


def test_tanh_mse_example(device):
    x = gs.tensor(1.0, requires_grad=True, device=device)
    y = gs.tensor(5.0, requires_grad=True, device=device)
    z = (x + y) / (x * y)
    w = gs.tanh(z)
    loss = F.mse_loss(w, z)
    assert round(loss.item(), 4) == 0.1342
    loss.backward()
    # d/dz (tanh z - z)^2 = 2 (tanh z - z)(1 - tanh^2 z - 1); dz/dx = -1/x^2
    zv = 1.2
    dz = 2 * (math.tanh(zv) - zv) * (-math.tanh(zv) ** 2)
    assert x.grad.item() == pytest.approx(dz * -1.0, rel=1e-12)
    assert y.grad.item() == pytest.approx(dz * -1.0 / 25.0, rel=1e-12)


def test_square_gradient(device):
    x = Variable(gs.tensor(3.6, device=device), requires_grad=True)
    y = x * x
    y.backward()
    assert x.grad.item() == pytest.approx(7.2, rel=1e-15)


def test_ones_mean_example(device):
    x = gs.ones(2, 2, requires_grad=True, device=device)
    y = x + 2
    z = y * y * 2
    out = z.mean()
    assert out.item() == 18.0
    out.backward()
    assert x.grad.tolist() == [[3.0, 3.0], [3.0, 3.0]]
    assert x.grad_fn is None and x.is_leaf
    assert repr(y.grad_fn) == "<AddBackward0>"
    assert (x + 1).grad_fn.name() == "AddBackward0"


def test_doubling_until_norm_with_vector_gradient(device):
    gs.manual_seed(0)
    x = gs.randn(3, requires_grad=True, device=device)
    y = x * 2
    doublings = 1
    while y.data.norm() < 100:
        y = y * 2
        doublings += 1
    gradient = gs.tensor([0.1, 1.0, 0.0001], device=device)
    y.backward(gradient)
    expected = np.array([0.1, 1.0, 0.0001]) * 2.0 ** doublings
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-15)


def test_doubling_example_in_float32_keeps_float32_gradients(device):
    # The tutorial's x is float32 (torch's default) and its gradient a default-dtype tensor: the
    # seed is cast to the output's dtype, so x.grad stays float32 as in PyTorch.
    gs.manual_seed(0)
    x = gs.randn(3, device=device).type(gs.FloatTensor).requires_grad_()
    (x * 2).backward(gs.tensor([0.1, 1.0, 0.0001], device=device))
    assert x.grad.dtype == gs.float32
    np.testing.assert_allclose(x.grad.numpy(), np.array([0.2, 2.0, 0.0002], dtype=np.float32), rtol=1e-7)
    y = gs.tensor([1.0, 2.0], dtype=gs.float32, device=device, requires_grad=True)
    (gx,) = gs.autograd.grad(y * 3.0, y, grad_outputs=gs.tensor([1.0, 1.0], device=device))
    assert gx.dtype == gs.float32 and gx.tolist() == [3.0, 3.0]


def test_non_scalar_backward_without_gradient_is_a_clear_error(device):
    x = gs.randn(3, requires_grad=True, device=device)
    with pytest.raises(RuntimeError, match="only for scalar outputs"):
        (x * 2).backward()


N, D_IN, H, D_OUT = 64, 1000, 100, 10


def _two_layer_data(device):
    gs.manual_seed(0)
    dtype = gs.FloatTensor
    x = gs.randn(N, D_IN, device=device).type(dtype)
    y = gs.randn(N, D_OUT, device=device).type(dtype)
    w1 = Variable(gs.randn(D_IN, H, device=device).type(dtype), requires_grad=True)
    w2 = Variable(gs.randn(H, D_OUT, device=device).type(dtype), requires_grad=True)
    return x, y, w1, w2


class MyReLU(gs.autograd.Function):
    """The seed's custom ReLU, unchanged but for its imports."""

    @staticmethod
    def forward(ctx, input):
        ctx.save_for_backward(input)
        return input.clamp(min=0)

    @staticmethod
    def backward(ctx, grad_output):
        input, = ctx.saved_tensors
        grad_input = grad_output.clone()
        grad_input[input < 0] = 0
        return grad_input


def _train(relu, device, steps):
    x, y, w1, w2 = _two_layer_data(device)
    learning_rate = 1e-6
    losses = []
    for _ in range(steps):
        y_pred = relu(x.mm(w1)).mm(w2)
        loss = (y_pred - y).pow(2).sum()
        losses.append(loss.item())
        loss.backward()
        w1.data -= learning_rate * w1.grad.data
        w2.data -= learning_rate * w2.grad.data
        w1.grad.data.zero_()
        w2.grad.data.zero_()
    return losses, w1


def test_two_layer_network_learns_and_custom_relu_matches(device):
    # The tutorial's 500 steps on the cpu; 100 elsewhere, where they cost more and test the same code.
    steps = 500 if device == "cpu" else 100
    builtin, w1 = _train(lambda t: t.clamp(min=0), device, steps)
    assert w1.dtype == gs.float32 and w1.device == device
    assert builtin[-1] < builtin[0] * (1e-3 if steps == 500 else 0.1)
    assert all(math.isfinite(v) for v in builtin)
    custom, _ = _train(MyReLU.apply, device, steps)
    assert custom == builtin  # identical step for step


def test_two_layer_network_no_grad_update_style(device):
    x, y, w1, w2 = _two_layer_data(device)
    first = None
    for _ in range(50):
        loss = (x.mm(w1).clamp(min=0).mm(w2) - y).pow(2).sum()
        first = first if first is not None else loss.item()
        loss.backward()
        with gs.no_grad():
            w1 -= 1e-6 * w1.grad
            w2 -= 1e-6 * w2.grad
            w1.grad.zero_()
            w2.grad.zero_()
    assert loss.item() < first
