"""Graph semantics: accumulation, retain_graph, create_graph, grad(), no_grad, custom Functions, version checks."""
from __future__ import annotations

import numpy as np
import pytest

import gradsolve as gs
from gradsolve.autograd import GradcheckError, gradcheck
from gradsolve.autograd.functional import hessian, hvp, jacobian, jvp

from engine_helpers import make


def test_gradients_accumulate_until_zeroed(device):
    x = make([1.0, 2.0], device)
    for _ in range(3):
        (x * x).sum().backward()
    assert x.grad.tolist() == [6.0, 12.0]
    x.grad.zero_()
    (x * 3.0).sum().backward()
    assert x.grad.tolist() == [3.0, 3.0]


def test_pass_through_gradients_do_not_alias(device):
    a = make([1.0], device)
    b = make([2.0], device)
    (a + b).sum().backward()
    a.grad.zero_()
    assert b.grad.tolist() == [1.0]


def test_second_backward_needs_retain_graph(device):
    x = make(2.0, device)
    y = x * x
    y.backward(retain_graph=True)
    y.backward()
    assert x.grad.item() == 8.0
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        y.backward()


def test_second_derivative_of_cube_is_6x(device):
    for value in (-1.5, 0.3, 2.0):
        x = make(value, device)
        (g,) = gs.autograd.grad(x ** 3, x, create_graph=True)
        (gg,) = gs.autograd.grad(g, x)
        assert g.item() == pytest.approx(3 * value ** 2, rel=1e-14)
        assert gg.item() == pytest.approx(6 * value, rel=1e-14)


def _rosenbrock(p):
    x, y = p[0], p[1]
    return (1.0 - x) ** 2 + 100.0 * (y - x * x) ** 2


def test_rosenbrock_hessian_vector_product_matches_analytic(device):
    point = np.array([-1.2, 1.0])
    p = make(point, device)
    v = make([0.3, -0.7], device, requires_grad=False)
    (hv,) = hvp(lambda: _rosenbrock(p), [p], [v])
    x, y = point
    analytic = np.array([[2 - 400 * (y - x * x) + 800 * x * x, -400 * x], [-400 * x, 200.0]])
    np.testing.assert_allclose(hv.numpy(), analytic @ np.array([0.3, -0.7]), rtol=1e-13)
    np.testing.assert_allclose(hessian(lambda: _rosenbrock(p), p).numpy(), analytic, rtol=1e-13)


def test_gradgradcheck_composite(device):
    x = make(np.random.default_rng(1).uniform(0.5, 1.5, (2, 3)), device)
    assert gs.autograd.gradgradcheck(lambda t: (t.sin() * t.exp() / (t * t + 1.0)).sum() + t.norm(), (x,))


def test_grad_returns_without_touching_dot_grad(device):
    x = make([1.0, 2.0], device)
    y = make([3.0, 4.0], device)
    gx, gy = gs.autograd.grad((x * y).sum(), [x, y])
    assert gx.tolist() == [3.0, 4.0] and gy.tolist() == [1.0, 2.0]
    assert x.grad is None and y.grad is None


def test_grad_with_non_leaf_input(device):
    x = make(2.0, device)
    h = x * 3.0
    out = h * h
    (gh,) = gs.autograd.grad(out, h)
    assert gh.item() == 12.0


def test_grad_allow_unused(device):
    x = make(1.0, device)
    unused = make(1.0, device)
    with pytest.raises(RuntimeError, match="allow_unused"):
        gs.autograd.grad(x * 2.0, [x, unused])
    gx, gu = gs.autograd.grad(x * 2.0, [x, unused], allow_unused=True)
    assert gx.item() == 2.0 and gu is None


def test_shared_node_runs_backward_once(device):
    calls = []

    class Counted(gs.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            return t * 1.0

        @staticmethod
        def backward(ctx, g):
            calls.append(1)
            return g

    x = make(1.5, device)
    h = Counted.apply(x)
    out = h * h + h.sin() + h * 2.0  # three paths meet at h
    out.backward()
    assert len(calls) == 1
    assert x.grad.item() == pytest.approx(2 * 1.5 + np.cos(1.5) + 2.0, rel=1e-15)


def test_long_chain_without_recursion(device):
    if device == "array-api-strict":
        pytest.skip("array-api-strict: the 100,000-operation chain takes over 15 s there (each strict array op "
                    "is slow) and tests the engine's walk, which is the same on every backend")
    x = gs.tensor(1.0, requires_grad=True, device=device)
    y = x
    for _ in range(100_000):
        y = y * 1.0 + 0.0
    y.backward()
    assert x.grad.item() == 1.0


def test_in_place_change_of_saved_tensor_is_caught(device):
    a = make([1.0, 2.0], device, requires_grad=False)
    w = make([3.0, 4.0], device)
    out = (a * w).sum()
    a.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an in-place operation"):
        out.backward()


def test_in_place_change_of_saved_output_is_caught(device):
    w = make([0.5, 1.0], device)
    e = w.exp()
    out = e.sum()
    with gs.no_grad():
        e.mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an in-place operation"):
        out.backward()


def test_in_place_on_leaf_requiring_grad_is_refused(device):
    w = make([1.0], device)
    with pytest.raises(RuntimeError, match="in-place operation"):
        w.add_(1.0)
    with gs.no_grad():
        w.add_(1.0)
        w -= 0.5
    assert w.tolist() == [1.5] and w.requires_grad


def test_data_shares_storage_and_is_untracked(device):
    w = make([1.0, 2.0], device)
    d = w.data
    assert not d.requires_grad and d.grad_fn is None
    d.mul_(2.0)
    assert w.tolist() == [2.0, 4.0]
    mask_target = gs.tensor([1.0, -2.0, 3.0], device=device)
    mask_target[mask_target < 0] = 0
    assert mask_target.tolist() == [1.0, 0.0, 3.0]


def test_detach_and_requires_grad_rules(device):
    x = make([1.0], device)
    y = x * 2.0
    assert y.detach().grad_fn is None and not y.detach().requires_grad
    with pytest.raises(RuntimeError, match="floating point"):
        gs.tensor([1, 2], device=device).requires_grad_()
    leaf = gs.tensor([1.0], device=device)
    leaf.requires_grad = True
    assert leaf.requires_grad and leaf.is_leaf


def test_no_grad_enable_grad_set_grad_enabled(device):
    x = gs.tensor(1.0, requires_grad=True, device=device)
    with gs.no_grad():
        assert not (x * 2).requires_grad
        with gs.enable_grad():
            assert (x * 2).requires_grad

    @gs.no_grad()
    def untracked():
        return x * 2

    assert not untracked().requires_grad
    with gs.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    assert gs.is_grad_enabled()


def test_custom_function_ctx_and_multiple_outputs(device):
    class SplitScale(gs.autograd.Function):
        @staticmethod
        def forward(ctx, a, factor):
            ctx.save_for_backward(a)
            ctx.factor = factor
            return a * factor, a * a

        @staticmethod
        def backward(ctx, g_scaled, g_square):
            (a,) = ctx.saved_tensors
            assert ctx.needs_input_grad == (True, False)
            return g_scaled * ctx.factor + g_square * 2.0 * a, None

    a = make([1.0, 2.0], device)
    scaled, square = SplitScale.apply(a, 3.0)
    assert scaled.grad_fn is square.grad_fn
    assert repr(scaled.grad_fn) == "<SplitScaleBackward>"
    (scaled.sum() + square.sum()).backward()
    assert a.grad.tolist() == [5.0, 7.0]


def test_custom_function_create_graph(device):
    class Cube(gs.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x ** 3

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * 3.0 * x ** 2

    x = gs.tensor(2.0, requires_grad=True, device=device)
    (g,) = gs.autograd.grad(Cube.apply(x), x, create_graph=True)
    (gg,) = gs.autograd.grad(g, x)
    assert g.item() == 12.0 and gg.item() == 12.0


def test_jacobian_both_modes_agree(device):
    rng = np.random.default_rng(3)
    p = make(rng.standard_normal(3), device)
    data = make(rng.standard_normal(7), device, requires_grad=False)

    def tall():  # 7 residuals, 3 parameters: forward-mode columns
        return (p[0] * data.exp() + p[1] * data * data - p[2]).sin()

    def wide():  # 2 residuals, 3 parameters: reverse-mode rows
        return gs.stack([p[0] * p[1], p[2].exp() + p[0]])

    (j_tall,) = jacobian(tall, [p])
    x = data.numpy()
    inner = p.numpy()[0] * np.exp(x) + p.numpy()[1] * x * x - p.numpy()[2]
    expected = np.cos(inner)[:, None] * np.stack([np.exp(x), x * x, -np.ones_like(x)], axis=1)
    np.testing.assert_allclose(j_tall.numpy(), expected, rtol=1e-13)
    (j_wide,) = jacobian(wide, [p])
    pv = p.numpy()
    np.testing.assert_allclose(j_wide.numpy(), [[pv[1], pv[0], 0.0], [1.0, 0.0, np.exp(pv[2])]], rtol=1e-14)
    u = make([1.0, 0.0, 0.0], device, requires_grad=False)
    out = tall()
    np.testing.assert_allclose(jvp(out, [p], [u]).numpy(), expected[:, 0], rtol=1e-13)


def test_gradcheck_names_the_worst_element(device):
    class Wrong(gs.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * x

        @staticmethod
        def backward(ctx, g):
            return g * 3.0

    x = gs.tensor([1.0, 5.0], requires_grad=True, device=device)
    with pytest.raises(GradcheckError, match="output element 1, input element 1: analytic 3, numerical 10"):
        gradcheck(lambda t: Wrong.apply(t), (x,))
    assert gradcheck(lambda t: Wrong.apply(t), (x,), raise_exception=False) is False


def test_mixing_devices_is_a_clear_error(device):
    other = "array-api-strict" if device == "cpu" else "cpu"
    a = gs.tensor([1.0], device=device)
    b = gs.tensor([1.0], device=other)
    with pytest.raises(RuntimeError, match="same device"):
        a + b
    with pytest.raises(RuntimeError, match="same device"):
        b * a


def test_cuda_missing_is_a_clear_error():
    if gs.cuda_available():  # pragma: no cover - needs a GPU
        pytest.skip("a GPU is present")
    with pytest.raises(gs.DeviceError, match="cuda"):
        gs.tensor([1.0], device="cuda")


def test_custom_function_gradient_of_the_wrong_shape_is_refused(device):
    class WrongShape(gs.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2.0

        @staticmethod
        def backward(ctx, g):
            return gs.ones(5, device=device)

    x = make([1.0, 2.0], device)
    with pytest.raises(RuntimeError, match=r"Function WrongShapeBackward returned an invalid gradient at index 0 - "
                                           r"got \[5\] but expected shape compatible with \[2\]"):
        WrongShape.apply(x).sum().backward()
    assert x.grad is None


def test_custom_function_broadcast_gradient_is_summed_to_the_input(device):
    class Broadcasting(gs.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2.0

        @staticmethod
        def backward(ctx, g):
            return g * gs.ones(3, 2, device=device)  # shape (3, 2) for an input of shape (2,)

    x = make([1.0, 2.0], device)
    h = x * 1.0  # a non-leaf input: the engine, not the leaf, must sum the gradient down
    Broadcasting.apply(h).sum().backward()
    assert x.grad.tolist() == [3.0, 3.0]


def test_bare_decorators_and_generators(device):
    x = make(1.0, device)

    @gs.no_grad
    def untracked():
        return x * 2

    @gs.enable_grad
    def tracked():
        return x * 2

    assert not untracked().requires_grad and untracked.__name__ == "untracked"
    with gs.no_grad():
        assert tracked().requires_grad

    @gs.no_grad()
    def generate():
        for _ in range(2):
            yield (x * 2).requires_grad, gs.is_grad_enabled()
        return "done"

    steps = generate()
    assert next(steps) == (False, False)
    assert gs.is_grad_enabled()  # restored while the generator is suspended
    assert next(steps) == (False, False)
    with pytest.raises(StopIteration) as stop:
        next(steps)
    assert stop.value.value == "done" and gs.is_grad_enabled()


def test_set_grad_enabled_as_call_context_and_decorator(device):
    x = make(1.0, device)

    @gs.set_grad_enabled(False)
    def untracked():
        return x * 2

    assert gs.is_grad_enabled()  # decorating does not switch the mode
    assert not untracked().requires_grad and gs.is_grad_enabled()
    with gs.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    assert gs.is_grad_enabled()
    gs.set_grad_enabled(False)  # a plain call switches at once, as in PyTorch
    try:
        assert not gs.is_grad_enabled()
    finally:
        gs.set_grad_enabled(True)


def test_requires_grad_flag_rules(device):
    x = make([1.0, 2.0], device)
    y = x * 2.0
    for value in (False, True):
        with pytest.raises(RuntimeError, match="you can only change requires_grad flags of leaf variables"):
            y.requires_grad = value
    with pytest.raises(RuntimeError, match="var_no_grad = var.detach()"):
        y.requires_grad_(False)
    assert y.requires_grad_() is y and y.requires_grad
    ints = gs.tensor([1, 2], device=device)
    with pytest.raises(RuntimeError, match="only Tensors of floating point dtype can require gradients"):
        ints.requires_grad = True
    with pytest.raises(RuntimeError, match="only Tensors of floating point dtype can require gradients"):
        gs.tensor([1, 2], device=device, requires_grad=True)
    ints.requires_grad = False  # allowed: nothing changes
    x.requires_grad = False
    assert not x.requires_grad and not (x * 2.0).requires_grad


def test_backward_with_inputs_accumulates_only_into_them(device):
    a = make([1.0, 2.0], device)
    b = make([3.0, 4.0], device)
    h = a * b
    out = (h * h).sum()
    out.backward(inputs=[a], retain_graph=True)
    assert a.grad.tolist() == [18.0, 64.0]  # 2 h b
    assert b.grad is None
    out.backward(inputs=[h, b])  # a non-leaf input gets its gradient in .grad too
    assert h.grad.tolist() == [6.0, 16.0] and b.grad.tolist() == [6.0, 32.0]
    assert a.grad.tolist() == [18.0, 64.0]
    c = make(1.0, device)
    gs.autograd.backward([(c * 3.0)], inputs=[c])
    assert c.grad.item() == 3.0


def test_variable_returns_a_new_tensor_sharing_data(device):
    a = gs.tensor([1.0, 2.0], device=device)
    v = gs.autograd.Variable(a, requires_grad=True)
    assert v is not a and v.requires_grad and v.is_leaf and not a.requires_grad
    with gs.no_grad():
        v.mul_(2.0)
    assert a.tolist() == [2.0, 4.0]  # the same storage
    r = make([1.0], device) * 2.0
    leaf = gs.autograd.Variable(r, requires_grad=True)
    assert leaf.is_leaf and leaf.requires_grad and leaf is not r


def test_grad_accumulates_in_place(device):
    x = make([1.0, 2.0], device)
    (x * x).sum().backward()
    g = x.grad
    (x * 3.0).sum().backward()
    assert g is x.grad and g.tolist() == [5.0, 7.0]
    x.grad = None
    (x * x).sum().backward(create_graph=True)  # a differentiable .grad is replaced, not mutated
    first = x.grad
    (x * x).sum().backward(create_graph=True)
    assert first.tolist() == [2.0, 4.0] and x.grad.tolist() == [4.0, 8.0] and x.grad.requires_grad


def test_grad_of_several_outputs_that_are_leaves_or_share_a_leaf(device):
    # roots are told apart by identity: `in` on a list of tensors would compare them elementwise
    x = gs.tensor(2.0, requires_grad=True, device=device)
    y = gs.tensor(3.0, requires_grad=True, device=device)
    gx, gy = gs.autograd.grad([x, y], [x, y])
    assert (gx.item(), gy.item()) == (1.0, 1.0)
    (g,) = gs.autograd.grad([x * 2, x], [x])
    assert g.item() == 3.0
    v = gs.tensor([1.0, 2.0], requires_grad=True, device=device)
    (gv,) = gs.autograd.grad([v, v * v], [v], grad_outputs=[gs.ones(2, device=device), gs.ones(2, device=device)])
    assert gv.tolist() == [3.0, 5.0]
