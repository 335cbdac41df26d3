"""retain_grad(): gradients of intermediate results, as PyTorch keeps them."""
from __future__ import annotations

import gc

import pytest

import gradsolve as gs

from engine_helpers import make


def test_retain_grad_fills_a_non_leaf_and_accumulates(device):
    x = make([1.0, 2.0, 3.0], device)
    y = x * 2.0
    assert not y.retains_grad
    y.retain_grad()
    assert y.retains_grad and not y.is_leaf
    z = (y * y).sum()
    z.backward(retain_graph=True)
    assert y.grad.tolist() == [4.0, 8.0, 12.0]  # dz/dy = 2y
    assert x.grad.tolist() == [8.0, 16.0, 24.0]
    z.backward()
    assert y.grad.tolist() == [8.0, 16.0, 24.0]  # accumulates like a leaf's


def test_retain_grad_sees_every_path_into_the_tensor(device):
    x = make([1.0, 2.0], device)
    y = x.exp()
    y.retain_grad()
    (y * 3.0 + y.sin()).sum().backward()
    expected = [3.0 + c for c in y.detach().cos().tolist()]
    assert y.grad.tolist() == pytest.approx(expected, rel=1e-15)


def test_retained_grad_does_not_alias_the_flowing_gradient(device):
    x = make([1.0, 2.0], device)
    y = x + 0.0
    y.retain_grad()
    y.sum().backward()
    y.grad.zero_()  # the pass-through gradient also reached x: it must be a separate array
    assert x.grad.tolist() == [1.0, 1.0]


def test_retain_grad_on_the_root_gets_the_seed(device):
    x = make([1.0, 2.0], device)
    y = x * 3.0
    y.retain_grad()
    y.backward(gs.tensor([0.5, -1.0], device=device))
    assert y.grad.tolist() == [0.5, -1.0]
    assert x.grad.tolist() == [1.5, -3.0]


def test_retain_grad_on_an_output_of_a_multi_output_function(device):
    class Split(gs.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2.0, x * 3.0

        @staticmethod
        def backward(ctx, ga, gb):
            return ga * 2.0 + gb * 3.0

    x = make([1.0], device)
    a, b = Split.apply(x)
    b.retain_grad()
    (a * 5.0 + b * 7.0).sum().backward()
    assert b.grad.tolist() == [7.0]
    assert a.grad is None  # not retained: a non-leaf keeps no .grad
    assert x.grad.tolist() == [31.0]


def test_retain_grad_with_create_graph_keeps_a_differentiable_grad(device):
    x = make([1.0, 2.0], device)
    y = x * x
    y.retain_grad()
    (y * y).sum().backward(create_graph=True)
    assert y.grad.tolist() == [2.0, 8.0]  # 2y
    assert y.grad.requires_grad
    x.grad = None
    y.grad.sum().backward()  # d(sum 2 x^2)/dx = 4x
    assert x.grad.tolist() == [4.0, 8.0]


def test_retain_grad_on_a_leaf_is_a_no_op(device):
    x = make([1.0, 2.0], device)
    x.retain_grad()
    assert not x.retains_grad  # PyTorch: retains_grad is only ever True on a non-leaf
    (x * x).sum().backward()
    assert x.grad.tolist() == [2.0, 4.0]


def test_retain_grad_refuses_a_tensor_that_does_not_require_grad(device):
    with pytest.raises(RuntimeError, match="does not require grad"):
        gs.tensor([1.0], device=device).retain_grad()
    x = make([1.0], device)
    with gs.no_grad():
        y = x * 2.0
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.retain_grad()


def test_non_leaf_without_retain_grad_keeps_no_grad(device):
    x = make([1.0, 2.0], device)
    y = x * 2.0
    (y * y).sum().backward()
    assert y.grad is None


def test_autograd_grad_fills_retained_grads_on_the_nodes_it_needs(device):
    # PyTorch's rule: autograd.grad fills .grad of retained tensors it differentiates through.
    x = make([1.0, 2.0], device)
    w = make([3.0, 4.0], device)
    y = x * 2.0
    y.retain_grad()
    z = (y * w).sum()
    gs.autograd.grad(z, w, retain_graph=True)
    assert y.grad is None  # the gradient w.r.t. w never goes through y
    (gx,) = gs.autograd.grad(z, x, retain_graph=True)
    assert gx.tolist() == [6.0, 8.0]
    assert y.grad.tolist() == [3.0, 4.0]
    gs.autograd.grad(z, y)
    assert y.grad.tolist() == [6.0, 8.0]


def test_retain_grad_does_not_keep_the_tensor_alive(device):
    import weakref

    x = make([1.0], device)
    y = x * 2.0
    y.retain_grad()
    z = y + 3.0  # the graph holds y's node, not y (addition saves no inputs)
    ref = weakref.ref(y)
    del y
    gc.collect()
    assert ref() is None
    z.sum().backward()
    assert x.grad.tolist() == [2.0]
