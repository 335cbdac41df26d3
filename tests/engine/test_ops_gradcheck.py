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


# Written for any number of dims (0-d included: PyTorch lets dim 0 / -1 name a scalar's only "dim").
REDUCTIONS = {
    "sum": lambda t: t.sum(),
    "sum_last": lambda t: t.sum(dim=-1),
    "sum_first_keepdim": lambda t: t.sum(dim=0, keepdim=True),
    "sum_all_dims_keepdim": lambda t: t.sum(dim=tuple(range(t.ndim)), keepdim=True),
    "mean": lambda t: t.mean(),
    "mean_dim": lambda t: t.mean(dim=0, keepdim=True),
    "prod": lambda t: t.prod(),
    "prod_dim": lambda t: t.prod(dim=-1),
    "max": lambda t: t.max(),
    "min": lambda t: t.min(),
    "max_dim": lambda t: t.max(dim=-1).values,
    "min_dim_keepdim": lambda t: t.min(dim=0, keepdim=True).values,
    "amax_dims": lambda t: t.amax(dim=tuple(range(1, t.ndim))) if t.ndim > 1 else t.amax(),
    "amin_dim": lambda t: t.amin(dim=-1),
    "norm": lambda t: t.norm(),
    "norm_dim": lambda t: t.norm(dim=-1),
    "norm_1": lambda t: t.norm(p=1),
    "norm_3": lambda t: t.norm(p=3),
    "norm_3_dim": lambda t: t.norm(p=3, dim=0, keepdim=True),
    "norm_1_5": lambda t: t.norm(p=1.5),
    "norm_inf": lambda t: t.norm(p=float("inf")),
}
REDUCTION_SHAPES = [(), (5,), (2, 3), (2, 1, 3), (1, 4), (2, 3, 4)]


def _distinct(rng, shape):
    """Distinct magnitudes away from zero: no ties for max, no kinks for abs."""
    n = int(np.prod(shape))
    values = rng.permutation(np.linspace(0.3, 2.0, n)) * rng.choice([-1.0, 1.0], n)
    return values.reshape(shape)


@pytest.mark.parametrize("shape", REDUCTION_SHAPES, ids=str)
@pytest.mark.parametrize("name", list(REDUCTIONS))
def test_reductions(name, shape, device):
    rng = np.random.default_rng(abs(hash((name, shape))) % 2**32)
    x = make(_distinct(rng, shape), device)
    assert gradcheck(REDUCTIONS[name], (x,))


@pytest.mark.parametrize("shapes", BROADCAST_PAIRS, ids=str)
@pytest.mark.parametrize("name", ["sum_last", "mean_dim", "prod_dim", "max_dim", "norm_3_dim", "amax_dims"])
def test_reductions_of_broadcast_products(name, shapes, device):
    rng = np.random.default_rng(abs(hash((name, shapes))) % 2**32)
    a = make(_distinct(rng, shapes[0]), device)
    b = make(rng.uniform(0.5, 1.5, shapes[1]), device)  # positive: the product keeps a's distinct magnitudes
    assert gradcheck(lambda p, q: REDUCTIONS[name](p * q), (a, b))


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
    result = x.min(1, keepdim=True)
    assert result.values is result[0] and result.indices is result[1] and len(result) == 2
    assert result.values.shape == (2, 1) and result.indices.tolist() == [[0], [1]]
    assert result.indices.dtype == gs.int64 and not result.indices.requires_grad
    assert result.values.grad_fn.name() == "MinBackward0"
    assert repr(x.max(dim=0)).startswith("gradsolve.return_types.max(\nvalues=tensor([7., 5., 2.]")
    assert gs.max(x, dim=1).indices.tolist() == [1, 0]
    assert x.argmax(dim=1).tolist() == [1, 0]


def test_max_and_min_along_a_dim_give_ties_gradient_to_the_returned_index(device):
    # PyTorch's rule: max(dim)/min(dim) route the whole gradient to the index they return ...
    x = make([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]], device)
    result = x.max(dim=1)
    assert result.indices.tolist() == [1, 0]
    result.values.sum().backward()
    assert x.grad.tolist() == [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
    y = make([[1.0, 1.0, 3.0], [0.0, 2.0, 0.0]], device)
    y.min(dim=1).values.sum().backward()
    assert y.grad.tolist() == [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    # ... while the full max()/min() and amax/amin split it evenly among ties.
    z = make([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]], device)
    z.amax(dim=1).sum().backward()
    assert z.grad.tolist() == [[0.0, 0.5, 0.5], [0.5, 0.5, 0.0]]


@pytest.mark.parametrize("p", [2, 3, 1.5, 1, float("inf")], ids=str)
def test_norm_gradient_at_zero_is_zero(p, device):
    x = make([0.0, 0.0], device)
    x.norm(p=p).backward()
    assert x.grad.tolist() == [0.0, 0.0]
    y = make([[0.0, 0.0], [3.0, -4.0]], device)
    y.norm(p=p, dim=1).sum().backward()  # a zero row among others
    assert y.grad[0].tolist() == [0.0, 0.0] and all(np.isfinite(y.grad.numpy().ravel()))


def test_prod_with_zeros_keeps_its_graph_for_second_derivatives(device):
    x = make([0.0, 2.0, 3.0], device)
    (g,) = gs.autograd.grad(x.prod(), x, create_graph=True)
    assert g.requires_grad and g.tolist() == [6.0, 0.0, 0.0]
    hessian = [gs.autograd.grad(g[i], x, retain_graph=True)[0].tolist() for i in range(3)]
    assert hessian == [[0.0, 3.0, 2.0], [3.0, 0.0, 0.0], [2.0, 0.0, 0.0]]  # PyTorch's Hessian of prod there


@pytest.mark.parametrize("values", [[[0.0, 2.0, 3.0], [1.5, 0.0, 0.0]], [[0.0, 0.0, 2.0], [1.0, 0.5, -1.0]]], ids=str)
@pytest.mark.parametrize("dim", [None, 0, 1], ids=str)
def test_prod_with_zeros_passes_gradgradcheck(values, dim, device):
    x = make(values, device)
    assert gs.autograd.gradgradcheck(lambda t: t.prod() if dim is None else t.prod(dim=dim), (x,))


def test_power_gradient_at_zero_to_the_zero_is_zero(device):
    a = make([0.0, 0.0, 2.0], device)
    b = make([0.0, 1.0, 0.0], device)
    (a ** b).sum().backward()
    assert a.grad.tolist() == [0.0, 1.0, 0.0]  # d/da a^b = b a^(b-1): 0 at 0^0, as in PyTorch
    assert b.grad.tolist() == [0.0, 0.0, float(np.log(2.0))]


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


def _at_least_1d(t):
    return t if t.ndim else t.reshape(1)


# Written for any number of dims.
SHAPE_OPS = {
    "reshape": lambda t: t.reshape(-1) * 1.5,
    "view_infer": lambda t: t.view(-1, 1).sin(),
    "transpose": lambda t: t.transpose(0, -1).exp(),
    "T": lambda t: t.T.sin(),
    "permute": lambda t: t.permute(*reversed(range(t.ndim))).cos(),
    "squeeze_unsqueeze": lambda t: t.unsqueeze(0).squeeze(0).unsqueeze(-1).tanh(),
    "squeeze_all": lambda t: t.squeeze() * 2.0,
    "flatten": lambda t: t.flatten().sin(),
    "flatten_tail": lambda t: t.flatten(1).sin() if t.ndim > 1 else t.flatten(),
    "expand": lambda t: t.unsqueeze(0).expand(3, *t.shape) * t,
    "slice": lambda t: _at_least_1d(t)[..., ::2] * 2.0,
    "slice_first": lambda t: _at_least_1d(t)[1:] * 3.0,
    "integer": lambda t: _at_least_1d(t)[0],
    "negative_integer": lambda t: _at_least_1d(t)[..., -1],
    "int_array_repeats": lambda t: t.reshape(-1)[gs.tensor([0, 0, t.numel() - 1, t.numel() - 1, 0], device=t.device)],
    "bool_mask": lambda t: t[t > 0.0],
    "cat": lambda t: gs.cat([_at_least_1d(t), _at_least_1d(t) * 2.0], dim=0),
    "cat_last": lambda t: gs.cat([_at_least_1d(t)[..., :1], _at_least_1d(t).sin()], dim=-1),
    "stack": lambda t: gs.stack([t, t * 3.0], dim=-1),
}
SHAPE_OP_SHAPES = [(), (4,), (2, 3), (1, 3, 1), (2, 3, 4)]


@pytest.mark.parametrize("shape", SHAPE_OP_SHAPES, ids=str)
@pytest.mark.parametrize("name", list(SHAPE_OPS))
def test_shape_ops(name, shape, device):
    rng = np.random.default_rng(abs(hash((name, shape))) % 2**32)
    x = rand(rng, shape, device)
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
