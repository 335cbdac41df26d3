"""Every primitive against central finite differences, over a sweep of shapes and devices."""
from __future__ import annotations

import numpy as np
import pytest

import gradsolve as gs
from gradsolve.autograd import gradcheck

from engine_helpers import make, rand

SHAPES = [(), (3,), (2, 3), (2, 1, 3)]
BROADCAST_PAIRS = [((2, 3), (3,)), ((2, 1), (1, 3)), ((), (2, 3)), ((4, 1, 3), (2, 1))]

# name -> (function, input range): ranges keep each function inside its domain and away from kinks
UNARY = {
    "neg": (lambda t: -t, (-2, 2)),
    "exp": (lambda t: t.exp(), (-2, 2)),
    "log": (lambda t: t.log(), (0.2, 3)),
    "log1p": (lambda t: t.log1p(), (-0.5, 2)),
    "expm1": (lambda t: t.expm1(), (-2, 2)),
    "sqrt": (lambda t: t.sqrt(), (0.2, 3)),
    "sin": (lambda t: t.sin(), (-3, 3)),
    "cos": (lambda t: t.cos(), (-3, 3)),
    "tan": (lambda t: t.tan(), (-1.2, 1.2)),
    "asin": (lambda t: t.asin(), (-0.9, 0.9)),
    "acos": (lambda t: t.acos(), (-0.9, 0.9)),
    "atan": (lambda t: t.atan(), (-3, 3)),
    "sinh": (lambda t: t.sinh(), (-2, 2)),
    "cosh": (lambda t: t.cosh(), (-2, 2)),
    "tanh": (lambda t: t.tanh(), (-2, 2)),
    "asinh": (lambda t: t.asinh(), (-2, 2)),
    "acosh": (lambda t: t.acosh(), (1.2, 3)),
    "atanh": (lambda t: t.atanh(), (-0.9, 0.9)),
    "sigmoid": (lambda t: t.sigmoid(), (-4, 4)),
    "relu": (lambda t: t.relu(), (0.1, 2)),
    "relu_negative": (lambda t: t.relu(), (-2, -0.1)),
    "abs": (lambda t: t.abs(), (0.1, 2)),
    "abs_negative": (lambda t: t.abs(), (-2, -0.1)),
    "clamp": (lambda t: t.clamp(min=-0.5, max=0.5), (-0.45, 0.45)),
    "clamp_outside": (lambda t: t.clamp(min=-0.5, max=0.5), (0.6, 2)),
    "clamp_min": (lambda t: t.clamp(min=0), (0.1, 2)),
    "pow_int": (lambda t: t ** 3, (-2, 2)),
    "pow_two": (lambda t: t ** 2, (-2, 2)),
    "pow_half": (lambda t: t ** 0.5, (0.2, 2)),
    "pow_negative": (lambda t: t ** -2, (0.5, 2)),
    "rpow": (lambda t: 2.0 ** t, (-2, 2)),
    "scalar_ops": (lambda t: (3.0 - t) * 2.0 / (t + 4.0) - 1.0 / (t + 5.0), (-1, 1)),
    "square": (lambda t: t.square(), (-2, 2)),
    "clone": (lambda t: t.clone() * t, (-2, 2)),
}

BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / (b * b + 1.0),
    "pow": lambda a, b: (a * a + 1.0) ** b,
    "maximum": lambda a, b: gs.maximum(a, b),
    "minimum": lambda a, b: gs.minimum(a, b),
    "atan2": lambda a, b: gs.atan2(a, b),
    "where": lambda a, b: gs.where(a > 0, a * 2.0, b * 3.0),
}


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", list(UNARY))
def test_unary(name, shape, device):
    fn, (low, high) = UNARY[name]
    rng = np.random.default_rng(abs(hash((name, shape))) % 2**32)
    x = rand(rng, shape, device, low, high)
    assert gradcheck(fn, (x,))


@pytest.mark.parametrize("shapes", BROADCAST_PAIRS + [((3,), (3,))], ids=str)
@pytest.mark.parametrize("name", list(BINARY))
def test_binary_broadcasting(name, shapes, device):
    rng = np.random.default_rng(abs(hash((name, shapes))) % 2**32)
    a = rand(rng, shapes[0], device)
    b = rand(rng, shapes[1], device, 0.3, 1.5)
    assert gradcheck(BINARY[name], (a, b))


def test_binary_gradient_has_input_shape(device):
    a = make(np.ones((2, 3)), device)
    b = make(np.ones((3,)), device)
    (a * b).sum().backward()
    assert a.grad.shape == (2, 3) and b.grad.shape == (3,)
    assert b.grad.tolist() == [2.0, 2.0, 2.0]


def test_maximum_ties_split_gradient(device):
    a = make([1.0, 2.0], device)
    b = make([1.0, 3.0], device)
    gs.maximum(a, b).sum().backward()
    assert a.grad.tolist() == [0.5, 0.0]
    assert b.grad.tolist() == [0.5, 1.0]


REDUCTIONS = {
    "sum": lambda t: t.sum(),
    "sum_dim": lambda t: t.sum(dim=1),
    "sum_dims_keepdim": lambda t: t.sum(dim=(0, 2), keepdim=True),
    "sum_negative_dim": lambda t: t.sum(dim=-1),
    "mean": lambda t: t.mean(),
    "mean_dim": lambda t: t.mean(dim=0, keepdim=True),
    "prod": lambda t: t.prod(),
    "prod_dim": lambda t: t.prod(dim=1),
    "max": lambda t: t.max(),
    "min": lambda t: t.min(),
    "max_dim": lambda t: t.max(dim=1).values,
    "min_dim_keepdim": lambda t: t.min(dim=2, keepdim=True).values,
    "amax_dims": lambda t: t.amax(dim=(1, 2)),
    "norm": lambda t: t.norm(),
    "norm_dim": lambda t: t.norm(dim=1),
    "norm_1": lambda t: t.norm(p=1),
    "norm_3": lambda t: t.norm(p=3),
    "norm_inf": lambda t: t.norm(p=float("inf")),
}


@pytest.mark.parametrize("name", list(REDUCTIONS))
def test_reductions(name, device):
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    # distinct magnitudes away from zero: no ties for max, no kinks for abs
    values = rng.permutation(np.linspace(0.3, 2.0, 24)) * rng.choice([-1.0, 1.0], 24)
    x = make(values.reshape(2, 3, 4), device)
    assert gradcheck(REDUCTIONS[name], (x,))


def test_prod_with_zeros(device):
    x = make([[2.0, 0.0, 3.0], [0.0, 0.0, 1.0], [1.0, 2.0, 4.0]], device)
    x.prod(dim=1).sum().backward()
    assert x.grad.tolist() == [[0.0, 6.0, 0.0], [0.0, 0.0, 0.0], [8.0, 4.0, 2.0]]


def test_max_ties_share_gradient(device):
    x = make([1.0, 3.0, 3.0], device)
    x.max().backward()
    assert x.grad.tolist() == [0.0, 0.5, 0.5]


def test_max_dim_returns_values_and_indices(device):
    x = make([[1.0, 5.0, 2.0], [7.0, 0.0, 1.0]], device)
    values, indices = x.max(dim=1)
    assert values.tolist() == [5.0, 7.0]
    assert indices.tolist() == [1, 0]


def test_norm_gradient_at_zero_is_zero(device):
    x = make([0.0, 0.0], device)
    x.norm().backward()
    assert x.grad.tolist() == [0.0, 0.0]


MATMUL_SHAPES = [((2, 3), (3, 4)), ((3,), (3, 2)), ((2, 3), (3,)), ((3,), (3,)), ((2, 2, 3), (3, 4)),
                 ((5, 2, 3), (5, 3, 2)), ((1, 2, 3), (4, 3, 2))]


@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
def test_matmul(shapes, device):
    rng = np.random.default_rng(7)
    a = rand(rng, shapes[0], device)
    b = rand(rng, shapes[1], device)
    assert gradcheck(lambda x, y: x @ y, (a, b))


def test_mm_refuses_vectors(device):
    a = make(np.ones((3,)), device)
    with pytest.raises(RuntimeError, match="mm needs two matrices"):
        a.mm(make(np.ones((3, 2)), device))


SHAPE_OPS = {
    "reshape": lambda t: t.reshape(4, 6) * 1.5,
    "view_infer": lambda t: t.view(-1, 2).sin(),
    "transpose": lambda t: t.transpose(0, 2).exp(),
    "T": lambda t: t.reshape(6, 4).T.sin(),
    "permute": lambda t: t.permute(2, 0, 1).cos(),
    "squeeze_unsqueeze": lambda t: t.unsqueeze(1).squeeze(1).unsqueeze(-1).tanh(),
    "flatten": lambda t: t.flatten(1).sin(),
    "expand": lambda t: t[:, :1, :].expand(2, 3, 4) * t,
    "slice": lambda t: t[1:, ::2, 1:3] * 2.0,
    "integer": lambda t: t[1, 2],
    "negative_slice": lambda t: t[..., -1],
    "int_array_repeats": lambda t: t.reshape(-1)[gs.tensor([0, 0, 5, 5, 5, 1], device=t.device)],
    "bool_mask": lambda t: t[t > 0.5],
    "cat": lambda t: gs.cat([t, t * 2.0], dim=1),
    "cat_last": lambda t: gs.cat([t[..., :1], t.sin()], dim=-1),
    "stack": lambda t: gs.stack([t[0], t[1] * 3.0], dim=1),
}


@pytest.mark.parametrize("name", list(SHAPE_OPS))
def test_shape_ops(name, device):
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    x = rand(rng, (2, 3, 4), device)
    assert gradcheck(SHAPE_OPS[name], (x,))


def test_repeated_indices_accumulate(device):
    x = make([1.0, 2.0, 3.0], device)
    idx = gs.tensor([0, 0, 2, 0], device=device)
    x[idx].sum().backward()
    assert x.grad.tolist() == [3.0, 0.0, 1.0]


def test_comparisons_are_bool_and_untracked(device):
    x = make([1.0, 2.0, 3.0], device)
    for mask in (x > 1.5, x >= 2.0, x < 2.0, x <= 1.0, x == 2.0, x != 2.0):
        assert mask.dtype == gs.bool
        assert not mask.requires_grad and mask.grad_fn is None
    assert (x > 1.5).tolist() == [False, True, True]
