"""The Tensor API people use directly: creation, dtypes, conversion, repr, typed factories."""
from __future__ import annotations

import numpy as np
import pytest

import gradsolve as gs


def test_default_dtypes(device):
    assert gs.tensor([1.0, 2.0], device=device).dtype == gs.float64
    assert gs.tensor([1, 2], device=device).dtype == gs.int64
    assert gs.tensor([True], device=device).dtype == gs.bool
    assert gs.zeros(2, device=device).dtype == gs.float64
    assert gs.tensor([1.0], dtype=gs.float32, device=device).dtype == gs.float32


def test_creation_functions(device):
    assert gs.zeros(2, 3, device=device).shape == (2, 3)
    assert gs.ones((2,), device=device).tolist() == [1.0, 1.0]
    assert gs.full((2,), 7.0, device=device).tolist() == [7.0, 7.0]
    assert gs.arange(4, device=device).tolist() == [0, 1, 2, 3]
    assert gs.linspace(0, 1, 3, device=device).tolist() == [0.0, 0.5, 1.0]
    assert gs.eye(2, device=device).tolist() == [[1.0, 0.0], [0.0, 1.0]]
    x = gs.rand(1000, device=device)
    assert 0.0 <= x.min().item() and x.max().item() < 1.0
    assert abs(gs.randn(4000, device=device).mean().item()) < 0.1
    like = gs.zeros_like(gs.ones(2, 2, device=device))
    assert like.tolist() == [[0.0, 0.0], [0.0, 0.0]] and like.device == device
    assert gs.ones_like(like).sum().item() == 4.0


def test_manual_seed_is_reproducible():
    gs.manual_seed(42)
    a = gs.randn(5).tolist()
    gs.manual_seed(42)
    assert gs.randn(5).tolist() == a


def test_from_numpy_shares_memory():
    arr = np.array([1.0, 2.0])
    t = gs.from_numpy(arr)
    arr[0] = 5.0
    assert t.tolist() == [5.0, 2.0]
    np.testing.assert_array_equal(t.numpy(), arr)


def test_item_tolist_size(device):
    t = gs.tensor([[1.0, 2.0, 3.0]], device=device)
    assert t.size() == (1, 3) and t.size(1) == 3 and t.ndim == 2 and t.numel() == 3
    assert t.sum().item() == 6.0
    with pytest.raises(ValueError, match="one element"):
        t.item()


def test_repr_like_pytorch():
    assert repr(gs.tensor([1.0, 2.0], requires_grad=True)) == "tensor([1., 2.], requires_grad=True)"
    x = gs.tensor(2.0, requires_grad=True)
    assert repr(x + 1) == "tensor(3., grad_fn=<AddBackward0>)"
    assert repr(gs.tensor([1.0], dtype=gs.float32)) == "tensor([1.], dtype=gradsolve.float32)"


def test_typed_factories_and_type():
    t = gs.randn(2, 2).type(gs.FloatTensor)
    assert t.dtype == gs.float32 and t.type() == "gradsolve.FloatTensor"
    assert gs.DoubleTensor([1.0, 2.0]).dtype == gs.float64
    assert gs.LongTensor([1, 2]).dtype == gs.int64
    assert isinstance(t, gs.FloatTensor)


def test_to_dtype_is_differentiable():
    x = gs.tensor([1.0, 2.0], requires_grad=True)
    y = x.to(gs.float32)
    assert y.dtype == gs.float32
    (y * y).sum().backward()
    assert x.grad.dtype == gs.float64 and x.grad.tolist() == [2.0, 4.0]


def test_to_another_device_and_back():
    x = gs.tensor([1.0, 2.0], requires_grad=True)
    y = x.to("array-api-strict")
    assert y.device == "array-api-strict"
    (y * y).sum().backward()
    assert x.grad.device == "cpu" and x.grad.tolist() == [2.0, 4.0]
    np.testing.assert_array_equal(y.numpy(), [1.0, 2.0])


def test_functional_forms():
    x = gs.tensor([0.5, 1.5])
    assert gs.exp(x).tolist() == np.exp([0.5, 1.5]).tolist()
    assert gs.add(x, x).tolist() == [1.0, 3.0]
    assert gs.max(x).item() == 1.5 and gs.max(x, gs.tensor([1.0, 1.0])).tolist() == [1.0, 1.5]
    assert gs.clamp(x, max=1.0).tolist() == [0.5, 1.0]


def test_in_place_methods(device):
    t = gs.tensor([1.0, 2.0], device=device)
    t.add_(1.0).mul_(2.0).sub_(gs.tensor([1.0, 1.0], device=device), alpha=2.0).div_(2.0)
    assert t.tolist() == [1.0, 2.0]
    t.fill_(3.0)
    assert t.tolist() == [3.0, 3.0]
    t.copy_(gs.tensor([4.0, 5.0], device=device))
    assert t.tolist() == [4.0, 5.0]
    t.clamp_(max=4.5).zero_()
    assert t.tolist() == [0.0, 0.0]
