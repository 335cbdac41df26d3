"""dtype promotion follows PyTorch: 0-d tensors and Python numbers only promote across categories."""
from __future__ import annotations

import numpy as np
import pytest

import gradsolve as gs


def f32(device, values=(1.0, 2.0)):
    return gs.tensor(list(values), dtype=gs.float32, device=device)


def test_zero_dim_float64_does_not_promote_float32(device):
    x = f32(device)
    s = gs.tensor(3.0, device=device)  # 0-d float64
    for out in (x + s, s + x, x - s, s - x, x * s, s * x, x / s, s / x, x ** s,
                gs.maximum(x, s), gs.minimum(s, x), gs.where(x > 1.5, x, s), gs.atan2(x, s)):
        assert out.dtype == gs.float32
    assert (x + s).tolist() == [4.0, 5.0]
    assert (x < s).tolist() == [True, True]


def test_python_floats_do_not_promote_float32(device):
    x = f32(device)
    for out in (x + 1.5, 1.5 + x, x - 0.1, 0.1 - x, x * 2.5, x / 3.0, 3.0 / x, x ** 1.5, 2.0 ** x,
                gs.maximum(x, 1.5), x + np.float64(1.5)):
        assert out.dtype == gs.float32


def test_dimensioned_tensors_promote_each_other(device):
    x = f32(device)
    assert (x + gs.tensor([1.0, 1.0], device=device)).dtype == gs.float64
    assert (gs.tensor(1.0, dtype=gs.float32, device=device) + gs.tensor(1.0, device=device)).dtype == gs.float64


def test_int_tensors_meet_floats(device):
    i = gs.tensor([1, 2], device=device)
    assert (i + 1.5).dtype == gs.float64  # the default float dtype
    assert (i + 1.5).tolist() == [2.5, 3.5]
    assert (1.5 * i).dtype == gs.float64
    assert (i / 2).tolist() == [0.5, 1.0] and (i / 2).dtype == gs.float64  # true division
    assert (i + gs.tensor(0.5, dtype=gs.float32, device=device)).dtype == gs.float32  # the 0-d tensor's float
    assert (i + gs.tensor(0.5, device=device)).dtype == gs.float64
    assert (i ** 0.5).dtype == gs.float64
    assert (2.5 ** i).tolist() == [2.5, 6.25]
    assert gs.maximum(i, 1.5).tolist() == [1.5, 2.0]


def test_int_widths_and_bools(device):
    i32 = gs.tensor([1, 2], dtype=gs.int32, device=device)
    assert (i32 + 1).dtype == gs.int32
    assert (i32 + gs.tensor(1, device=device)).dtype == gs.int32  # 0-d int64 is the same category
    assert (i32 + gs.tensor([1, 1], device=device)).dtype == gs.int64
    b = gs.tensor([True, False], device=device)
    assert (b + 1).dtype == gs.int64
    assert (b + 1.5).dtype == gs.float64
    assert (b + gs.tensor(1, dtype=gs.int32, device=device)).dtype == gs.int32


def test_gradients_keep_their_inputs_dtype(device):
    x = gs.tensor([1.0, 2.0], dtype=gs.float32, device=device, requires_grad=True)
    s = gs.tensor(3.0, device=device, requires_grad=True)  # 0-d float64
    y = x * s + s / x - gs.maximum(x, s)
    assert y.dtype == gs.float32
    y.sum().backward()
    assert x.grad.dtype == gs.float32 and s.grad.dtype == gs.float64
    xv = np.array([1.0, 2.0])
    np.testing.assert_allclose(x.grad.numpy(), 3.0 - 3.0 / xv ** 2, rtol=1e-6)
    np.testing.assert_allclose(s.grad.numpy(), xv.sum() + (1.0 / xv).sum() - 2.0, rtol=1e-6)


def test_mixed_dtype_gradients_with_create_graph(device):
    x = gs.tensor([1.0, 2.0], dtype=gs.float32, device=device, requires_grad=True)
    s = gs.tensor(3.0, device=device, requires_grad=True)
    (gs_,) = gs.autograd.grad((x * x * s).sum(), s, create_graph=True)  # sum x^2
    assert gs_.dtype == gs.float64 and gs_.item() == pytest.approx(5.0)
    gs_.backward()  # d(sum x^2)/dx = 2x, back in float32
    assert x.grad.dtype == gs.float32 and x.grad.tolist() == [2.0, 4.0]
