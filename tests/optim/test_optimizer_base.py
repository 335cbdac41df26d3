"""The Optimizer contract: groups, defaults, validation, zero_grad, step/closure, the seed example."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gradsolve as gs
import gradsolve.optim as optim

ALL = [optim.SGD, optim.Adadelta, optim.Adam, optim.AdamW, optim.NAdam, optim.RMSprop,
       optim.Adagrad, optim.LBFGS]


def scalar(v):
    return gs.tensor(v, requires_grad=True)


def test_seed_example_without_zero_grad_ends_at_4_2_step_for_step():
    """SGD on |x - y| with accumulating gradients: PyTorch ends at x = 4, y = 2."""
    x, y = scalar(5.0), scalar(1.0)
    opt = optim.SGD([x, y], lr=0.1)
    gx = gy = 0.0  # the same arithmetic by hand: gradients accumulate, sign(0) = 0
    px, py = 5.0, 1.0
    for _ in range(100):
        loss = (x - y).abs()
        loss.backward()
        opt.step()
        s = float(np.sign(px - py))
        gx, gy = gx + s, gy - s
        px, py = px + (-0.1) * gx, py + (-0.1) * gy
        assert (x.item(), y.item()) == (px, py)
    assert (x.item(), y.item()) == (4.0, 2.0)


def test_seed_example_with_zero_grad_converges():
    x, y = scalar(5.0), scalar(1.0)
    opt = optim.SGD([x, y], lr=0.1)
    for _ in range(100):
        opt.zero_grad()
        (x - y).abs().backward()
        opt.step()
    assert abs(x.item() - y.item()) <= 0.2 + 1e-12
    assert abs(x.item() - 3.0) < 0.2 and abs(y.item() - 3.0) < 0.2


def test_adadelta_accepts_a_tuple_and_generators():
    x, y = scalar(5.0), scalar(1.0)
    opt = optim.Adadelta((x, y), lr=0.1)
    assert opt.param_groups[0]["params"][0] is x and opt.param_groups[0]["params"][1] is y
    opt2 = optim.Adam(p for p in [x, y])
    assert len(opt2.param_groups[0]["params"]) == 2


def test_param_groups_fill_defaults_and_keep_overrides():
    a, b = scalar(1.0), scalar(2.0)
    opt = optim.SGD([{"params": [a]}, {"params": b, "lr": 0.5, "momentum": 0.9}], lr=0.1)
    g0, g1 = opt.param_groups
    assert g0["lr"] == 0.1 and g0["momentum"] == 0 and g0["nesterov"] is False
    assert g1["lr"] == 0.5 and g1["momentum"] == 0.9 and g1["params"][0] is b
    (a * 1.0 + b * 1.0).backward()
    opt.step()
    assert a.item() == pytest.approx(0.9) and b.item() == pytest.approx(1.5)


def test_add_param_group_rejects_duplicates_and_uses_defaults():
    a, b = scalar(1.0), scalar(2.0)
    opt = optim.Adam([a], lr=0.01)
    opt.add_param_group({"params": [b], "betas": (0.5, 0.9)})
    assert opt.param_groups[1]["lr"] == 0.01 and opt.param_groups[1]["betas"] == (0.5, 0.9)
    with pytest.raises(ValueError):
        opt.add_param_group({"params": [a]})
    with pytest.raises(ValueError):
        optim.SGD([], lr=0.1)
    with pytest.raises(TypeError):
        optim.SGD({a}, lr=0.1)


@pytest.mark.parametrize("cls", ALL)
def test_negative_learning_rate_is_rejected(cls):
    with pytest.raises(ValueError, match="Invalid learning rate: -1"):
        cls([scalar(1.0)], lr=-1)


@pytest.mark.parametrize("cls, kwargs, message", [
    (optim.SGD, {"momentum": -0.1}, "Invalid momentum value"),
    (optim.SGD, {"weight_decay": -1.0}, "Invalid weight_decay value"),
    (optim.SGD, {"nesterov": True}, "Nesterov momentum requires a momentum and zero dampening"),
    (optim.SGD, {"nesterov": True, "momentum": 0.9, "dampening": 0.1}, "Nesterov"),
    (optim.Adadelta, {"rho": 1.5}, "Invalid rho value"),
    (optim.Adadelta, {"eps": -1e-6}, "Invalid epsilon value"),
    (optim.Adam, {"betas": (1.0, 0.999)}, "Invalid beta parameter at index 0"),
    (optim.Adam, {"betas": (0.9, -0.1)}, "Invalid beta parameter at index 1"),
    (optim.AdamW, {"weight_decay": -0.01}, "Invalid weight_decay value"),
    (optim.NAdam, {"momentum_decay": -1.0}, "Invalid momentum_decay value"),
    (optim.RMSprop, {"alpha": -0.5}, "Invalid alpha value"),
    (optim.RMSprop, {"momentum": -0.5}, "Invalid momentum value"),
    (optim.Adagrad, {"lr_decay": -1.0}, "Invalid lr_decay value"),
    (optim.Adagrad, {"initial_accumulator_value": -1.0}, "Invalid initial_accumulator_value"),
    (optim.LBFGS, {"line_search_fn": "armijo"}, "strong_wolfe"),
])
def test_invalid_hyperparameters(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls([scalar(1.0)], **kwargs)


def test_defaults_match_pytorch():
    p = [scalar(1.0)]
    assert optim.SGD(p).defaults["lr"] == 1e-3
    assert optim.Adadelta(p).defaults == dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, maximize=False)
    assert optim.Adam(p).defaults["lr"] == 1e-3 and optim.Adam(p).defaults["betas"] == (0.9, 0.999)
    assert optim.Adam(p).defaults["eps"] == 1e-8
    assert optim.AdamW(p).defaults["weight_decay"] == 1e-2
    assert optim.NAdam(p).defaults["lr"] == 2e-3 and optim.NAdam(p).defaults["momentum_decay"] == 4e-3
    assert optim.RMSprop(p).defaults["lr"] == 1e-2 and optim.RMSprop(p).defaults["alpha"] == 0.99
    assert optim.Adagrad(p).defaults["lr"] == 1e-2 and optim.Adagrad(p).defaults["eps"] == 1e-10
    lbfgs = optim.LBFGS(p).defaults
    assert (lbfgs["lr"], lbfgs["max_iter"], lbfgs["max_eval"], lbfgs["history_size"]) == (1, 20, 25, 100)
    assert optim.LBFGS(p, max_iter=7).defaults["max_eval"] == 8


def test_zero_grad_to_none_or_zeros():
    x = scalar(2.0)
    opt = optim.SGD([x], lr=0.1)
    (x * x).backward()
    opt.zero_grad(set_to_none=False)
    assert x.grad is not None and x.grad.item() == 0.0
    opt.zero_grad()
    assert x.grad is None


def test_zero_grad_to_zeros_detaches_a_gradient_with_a_graph_like_pytorch():
    # backward(create_graph=True) leaves x.grad = 3x^2 with a graph; torch detaches it, then zeroes it
    x = scalar(3.0)
    opt = optim.SGD([x], lr=0.1)
    (x**3).backward(create_graph=True)
    grad = x.grad
    assert grad.grad_fn is not None and grad.requires_grad and grad.item() == 27.0
    opt.zero_grad(set_to_none=False)
    assert x.grad is grad  # the same tensor, as in PyTorch
    assert x.grad.grad_fn is None and not x.grad.requires_grad and x.grad.item() == 0.0
    # the next backward accumulates into plain zeros: no graph carried over
    (x * x).backward()
    assert x.grad.item() == 6.0 and x.grad.grad_fn is None and not x.grad.requires_grad

    # a leaf gradient that requires grad loses requires_grad too
    y = scalar(2.0)
    y.grad = gs.tensor(5.0, requires_grad=True)
    optim.SGD([y], lr=0.1).zero_grad(set_to_none=False)
    assert y.grad.item() == 0.0 and not y.grad.requires_grad and y.grad.grad_fn is None


def test_step_returns_closure_loss_evaluated_with_grad_enabled():
    x = scalar(3.0)
    opt = optim.SGD([x], lr=0.1)

    def closure():
        assert gs.is_grad_enabled()
        opt.zero_grad()
        loss = x * x
        loss.backward()
        return loss

    with gs.no_grad():
        loss = opt.step(closure)
    assert loss.item() == 9.0 and x.item() == pytest.approx(3.0 - 0.1 * 6.0)
    assert opt.step() is None


def test_parameters_without_grad_are_skipped_and_updates_are_in_place():
    x, y = scalar(1.0), scalar(1.0)
    opt = optim.Adam([x, y], lr=0.1)
    (x * 2.0).backward()
    data_before = x._data
    opt.step()
    assert y.item() == 1.0 and y not in opt.state and x in opt.state
    assert x._data is data_before  # written in place
    assert x.item() == pytest.approx(0.9)
    assert not x.grad.requires_grad and x.grad_fn is None


def test_adadelta_uses_previous_acc_delta_and_applies_lr_last():
    rho, eps, lr, g = 0.9, 1e-6, 0.5, 2.0
    x = scalar(1.0)
    opt = optim.Adadelta([x], lr=lr, rho=rho, eps=eps)
    v = u = 0.0
    expected = 1.0
    for _ in range(3):
        opt.zero_grad()
        (x * g).backward()
        opt.step()
        v = rho * v + (1 - rho) * g * g
        dx = math.sqrt(u + eps) / math.sqrt(v + eps) * g  # u from the previous step
        u = rho * u + (1 - rho) * dx * dx
        expected = expected - lr * dx
        assert x.item() == pytest.approx(expected, rel=1e-14)
    # the first step is sqrt(eps)/sqrt(0.1 g^2 + eps) * g, tiny - not lr * g
    assert abs(1.0 - x.item()) < 0.01


def test_adam_counts_steps_from_one_and_adds_eps_outside_the_sqrt():
    g, lr, eps = 1e-6, 0.1, 1e-3
    x = scalar(0.0)
    opt = optim.Adam([x], lr=lr, eps=eps)
    (x * g).backward()
    opt.step()
    # step 1: m_hat = g, v_hat = g^2 (bias corrected with t = 1), p = -lr g / (|g| + eps)
    assert x.item() == pytest.approx(-lr * g / (g + eps), rel=1e-12)
    # eps inside the sqrt would give -lr g / sqrt(g^2 + eps): a very different number
    assert abs(x.item() + lr * g / math.sqrt(g * g + eps)) > 1e-6


def test_nadam_mu_product_accumulates_like_pytorch():
    beta1, beta2, psi, lr, eps = 0.9, 0.999, 4e-3, 0.01, 1e-8
    x = scalar(1.0)
    opt = optim.NAdam([x], lr=lr)
    m = v = 0.0
    mu_product = 1.0
    p = 1.0
    for t in range(1, 5):
        opt.zero_grad()
        (x * x).backward()
        opt.step()
        g = 2 * p
        mu = beta1 * (1 - 0.5 * 0.96 ** (t * psi))
        mu_next = beta1 * (1 - 0.5 * 0.96 ** ((t + 1) * psi))
        mu_product *= mu
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        denom = math.sqrt(v / (1 - beta2**t)) + eps
        p = p - lr * (1 - mu) / (1 - mu_product) * g / denom
        p = p - lr * mu_next / (1 - mu_product * mu_next) * m / denom
        assert opt.state[x]["mu_product"] == pytest.approx(mu_product, rel=1e-15)
        assert x.item() == pytest.approx(p, rel=1e-13)


def test_lbfgs_requires_a_closure_and_one_group():
    x = scalar(1.0)
    opt = optim.LBFGS([x])
    with pytest.raises(RuntimeError):
        opt.step()
    with pytest.raises(ValueError):
        optim.LBFGS([{"params": [x]}, {"params": [scalar(2.0)]}])


def test_a_subclass_written_to_the_old_update_contract_still_steps():
    # 0.1.0 documented `_update(p, grad, state, group)` as what a subclass implements; it is now apply_update
    import gradsolve as gs
    from gradsolve.optim import Optimizer

    class Halve(Optimizer):
        def __init__(self, params):
            super().__init__(params, {})

        def _update(self, p, grad, state, group):
            p._assign_(p._data - 0.5 * grad)

    x = gs.tensor(3.0, requires_grad=True)
    (x * x).backward()
    Halve([x]).step()
    assert x.item() == 0.0
