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


def test_manual_seed_is_reproducible(device):
    gs.manual_seed(42)
    a = gs.randn(5, device=device).tolist()
    gs.manual_seed(42)
    assert gs.randn(5, device=device).tolist() == a


def test_from_numpy_shares_memory(device):
    if device != "cpu":
        pytest.skip(f"{device}: from_numpy makes CPU tensors on NumPy's memory only (as in PyTorch)")
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


def test_repr_like_pytorch(device):
    suffix = "" if device == "cpu" else f", device='{device}'"
    assert repr(gs.tensor([1.0, 2.0], requires_grad=True, device=device)) == (
        f"tensor([1., 2.]{suffix}, requires_grad=True)")
    x = gs.tensor(2.0, requires_grad=True, device=device)
    assert repr(x + 1) == f"tensor(3.{suffix}, grad_fn=<AddBackward0>)"
    assert repr(gs.tensor([1.0], dtype=gs.float32, device=device)) == f"tensor([1.]{suffix}, dtype=gradsolve.float32)"


REPRS = [  # PyTorch's output for the same values (its default dtype set to float64, like ours)
    (3.6 * 2, "tensor(7.2000)"),
    ([1.5, 2.25], "tensor([1.5000, 2.2500])"),
    ([1.0, 2.0], "tensor([1., 2.])"),
    ([-1.5, 0.0, 3.0], "tensor([-1.5000,  0.0000,  3.0000])"),
    ([0.0, 0.0], "tensor([0., 0.])"),
    ([1e-5, 1.0], "tensor([1.0000e-05, 1.0000e+00])"),
    ([1e9, 2.0], "tensor([1.0000e+09, 2.0000e+00])"),
    ([1.0, 1e4], "tensor([1.0000e+00, 1.0000e+04])"),
    ([float("nan"), 1.5], "tensor([   nan, 1.5000])"),
    ([float("inf"), 2.0], "tensor([inf, 2.])"),
    ([[1.0, 2.5], [30.0, 4.0]], "tensor([[ 1.0000,  2.5000],\n        [30.0000,  4.0000]])"),
    ([1, -20, 3], "tensor([  1, -20,   3])"),
    ([True, False], "tensor([ True, False])"),
]


@pytest.mark.parametrize("values, expected", REPRS, ids=[r[1] for r in REPRS])
def test_repr_formats_numbers_like_pytorch(values, expected, device):
    suffix = "" if device == "cpu" else f", device='{device}'"
    assert repr(gs.tensor(values, device=device)) == expected[:-1] + suffix + ")"


def test_repr_suffixes_wrapping_and_summaries():
    x = gs.tensor([1.5, 2.0], requires_grad=True)
    assert repr(x * 2) == "tensor([3., 4.], grad_fn=<MulBackward0>)"
    assert repr(gs.tensor([1.5, 2.0], dtype=gs.float32)) == "tensor([1.5000, 2.0000], dtype=gradsolve.float32)"
    assert repr(gs.tensor([])) == "tensor([])"
    assert repr(gs.zeros(0, 3)) == "tensor([], size=(0, 3))"
    assert repr(gs.tensor([], dtype=gs.int64)) == "tensor([], dtype=gradsolve.int64)"
    assert repr(gs.arange(30.0) * 1.5) == (
        "tensor([ 0.0000,  1.5000,  3.0000,  4.5000,  6.0000,  7.5000,  9.0000, 10.5000,\n"
        "        12.0000, 13.5000, 15.0000, 16.5000, 18.0000, 19.5000, 21.0000, 22.5000,\n"
        "        24.0000, 25.5000, 27.0000, 28.5000, 30.0000, 31.5000, 33.0000, 34.5000,\n"
        "        36.0000, 37.5000, 39.0000, 40.5000, 42.0000, 43.5000])")
    assert repr(gs.arange(2000)) == "tensor([   0,    1,    2,  ..., 1997, 1998, 1999])"
    assert repr(gs.arange(40.0) / 3 * x.sum()).endswith(  # a suffix that does not fit goes on its own line
        "        37.3333, 38.5000, 39.6667, 40.8333, 42.0000, 43.1667, 44.3333, 45.5000],\n"
        "       grad_fn=<MulBackward0>)")
    assert str(gs.tensor(1.0)) == "tensor(1.)"


def test_dtype_aliases_mean_what_they_mean_in_pytorch():
    assert gs.float is gs.float32 and gs.double is gs.float64
    assert gs.long is gs.int64 and gs.int is gs.int32 and gs.bool.name == "bool"
    t = gs.tensor([1.0])
    assert t.float().dtype is gs.float and t.to(gs.float).dtype is gs.float32
    assert t.double().dtype is gs.double and t.long().dtype is gs.long
    assert gs.tensor([1.0]).dtype is gs.float64  # the default float dtype stays float64


def test_typed_factories_and_type(device):
    t = gs.randn(2, 2, device=device).type(gs.FloatTensor)
    assert t.dtype == gs.float32 and t.type() == "gradsolve.FloatTensor"
    assert gs.DoubleTensor([1.0, 2.0]).dtype == gs.float64
    assert gs.LongTensor([1, 2]).dtype == gs.int64
    assert isinstance(t, gs.FloatTensor)


def test_to_dtype_is_differentiable(device):
    x = gs.tensor([1.0, 2.0], requires_grad=True, device=device)
    y = x.to(gs.float32)
    assert y.dtype == gs.float32
    (y * y).sum().backward()
    assert x.grad.dtype == gs.float64 and x.grad.tolist() == [2.0, 4.0]


def test_to_another_device_and_back(device):
    other = "array-api-strict" if device == "cpu" else "cpu"
    x = gs.tensor([1.0, 2.0], requires_grad=True, device=device)
    y = x.to(other)
    assert y.device == other
    (y * y).sum().backward()
    assert x.grad.device == device and x.grad.tolist() == [2.0, 4.0]
    np.testing.assert_array_equal(y.numpy(), [1.0, 2.0])


def test_functional_forms(device):
    x = gs.tensor([0.5, 1.5], device=device)
    assert gs.exp(x).tolist() == np.exp([0.5, 1.5]).tolist()
    assert gs.add(x, x).tolist() == [1.0, 3.0]
    other = gs.tensor([1.0, 1.0], device=device)
    assert gs.max(x).item() == 1.5 and gs.max(x, other).tolist() == [1.0, 1.5]
    assert gs.clamp(x, max=1.0).tolist() == [0.5, 1.0]


def test_sums_of_bools_count_as_int64(device):
    mask = gs.tensor([1.0, 2.0, -1.0], device=device) > 0
    total = mask.sum()
    assert total.item() == 2 and total.dtype == gs.int64
    assert mask.sum(dim=0).item() == 2 and mask.prod().item() == 0
    assert gs.tensor([1, 2], dtype=gs.int32, device=device).sum().dtype == gs.int64


def test_fill_with_a_zero_dim_tensor(device):
    t = gs.zeros(2, device=device)
    t.fill_(gs.tensor(3.0, device=device))
    assert t.tolist() == [3.0, 3.0]
    f32 = gs.zeros(2, dtype=gs.float32, device=device).fill_(gs.tensor(0.5, device=device))
    assert f32.dtype == gs.float32 and f32.tolist() == [0.5, 0.5]
    with pytest.raises(RuntimeError, match="0-dimension"):
        t.fill_(gs.tensor([1.0, 2.0], device=device))


def test_matmul_refuses_mismatched_shapes(device):
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        gs.tensor([1.0, 2.0, 3.0], device=device) @ gs.tensor([1.0], device=device)
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        gs.ones(2, 3, device=device) @ gs.ones(4, 5, device=device)
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        gs.ones(2, 3, device=device) @ gs.ones(4, device=device)
    assert (gs.ones(2, 3, device=device) @ gs.ones(3, device=device)).tolist() == [3.0, 3.0]
    with pytest.raises(RuntimeError, match=r"batch dimensions \(2,\) and \(5,\) do not broadcast"):
        gs.ones(2, 3, 4, device=device) @ gs.ones(5, 4, 2, device=device)
    assert (gs.ones(6, 1, 3, 4, device=device) @ gs.ones(5, 4, 2, device=device)).shape == (6, 5, 3, 2)


def test_raw_array_from_another_device_is_a_clear_error(device):
    if device == "cpu":
        pytest.skip("cpu: a raw NumPy array is on the cpu device already")
    t = gs.tensor([1.0, 2.0], device=device)
    with pytest.raises(RuntimeError, match="expected all tensors on the same device"):
        t + np.array([1.0, 2.0])
    with pytest.raises(RuntimeError, match="expected all tensors on the same device"):
        t > np.array([1.0, 2.0])


def test_tensor_from_another_backends_array_copies_it(device):
    import array_api_strict as xs

    if device == "cuda":  # pragma: no cover - needs a GPU
        import cupy

        source = cupy.asarray([1.0, 2.0])
    else:
        source = xs.asarray([1.0, 2.0])
    t = gs.tensor(source)  # default device: cpu, copied over explicitly
    assert t.device == "cpu" and t.dtype == gs.float64 and t.tolist() == [1.0, 2.0]
    back = gs.tensor(t, device=device)
    assert back.device == device and back.tolist() == [1.0, 2.0]


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
