"""Learning-rate schedulers: PyTorch's formulas (the trajectories are in test_reference_trajectories)."""

from __future__ import annotations

import math

import pytest

import gradsolve as gs
import gradsolve.optim as optim
from gradsolve.optim.lr_scheduler import CosineAnnealingLR, ExponentialLR, ReduceLROnPlateau, StepLR


def make_opt(lr=1.0):
    return optim.SGD([gs.tensor(1.0, requires_grad=True)], lr=lr)


def lrs(sched, n):
    out = []
    for _ in range(n):
        sched.optimizer.step()
        sched.step()
        out.append(sched.get_last_lr()[0])
    return out


def test_construction_records_initial_lr_and_keeps_lr():
    opt = make_opt(0.3)
    sched = StepLR(opt, step_size=2)
    assert opt.param_groups[0]["initial_lr"] == 0.3 and sched.get_last_lr() == [0.3]
    assert sched.last_epoch == 0


def test_steplr_and_exponentiallr():
    assert lrs(StepLR(make_opt(1.0), step_size=2, gamma=0.5), 6) == [1.0, 0.5, 0.5, 0.25, 0.25, 0.125]
    got = lrs(ExponentialLR(make_opt(2.0), gamma=0.9), 5)
    want, lr = [], 2.0
    for _ in range(5):
        lr = lr * 0.9
        want.append(lr)
    assert got == want


@pytest.mark.parametrize("T_max, eta_min", [(10, 0.0), (7, 0.01), (30, 1e-3)])
def test_cosine_recursive_form_tracks_closed_form(T_max, eta_min):
    base = 0.1
    sched = CosineAnnealingLR(make_opt(base), T_max=T_max, eta_min=eta_min)
    for t, lr in enumerate(lrs(sched, 3 * T_max), start=1):
        closed = eta_min + (base - eta_min) * (1 + math.cos(math.pi * t / T_max)) / 2
        assert abs(lr - closed) <= 1e-10


def test_cosine_is_recursive_it_scales_an_externally_changed_lr():
    opt = make_opt(1.0)
    sched = CosineAnnealingLR(opt, T_max=10)
    lrs(sched, 2)
    opt.param_groups[0]["lr"] *= 0.5  # a recursive schedule carries this on
    t = 3
    expected = (1 + math.cos(math.pi * t / 10)) / (1 + math.cos(math.pi * (t - 1) / 10)) * opt.param_groups[0]["lr"]
    assert lrs(sched, 1)[0] == expected


def test_reduce_on_plateau_min_rel_patience_cooldown():
    opt = make_opt(1.0)
    sched = ReduceLROnPlateau(opt, factor=0.5, patience=1, cooldown=1, threshold=0.1)
    metrics = [10.0, 9.5, 9.4, 9.3, 9.2, 9.1, 9.0, 5.0]
    got = []
    for m in metrics:
        sched.step(m)
        got.append(sched.get_last_lr()[0])
    # 9.5 is not 10% better than 10 -> bad epochs; after 2 bad epochs halve, then 1 cooldown
    assert got == [1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25]


def test_reduce_on_plateau_max_abs_and_min_lr():
    opt = make_opt(1.0)
    sched = ReduceLROnPlateau(opt, mode="max", threshold_mode="abs", threshold=1.0, patience=0,
                              factor=0.1, min_lr=0.05)
    for m in [1.0, 1.5, 3.0, 3.5, 3.9]:
        sched.step(m)
    assert opt.param_groups[0]["lr"] == 0.05  # 1.0 -> 0.1 -> 0.05 (min_lr)


def test_reduce_on_plateau_validation():
    with pytest.raises(ValueError):
        ReduceLROnPlateau(make_opt(), factor=1.0)
    with pytest.raises(ValueError):
        ReduceLROnPlateau(make_opt(), mode="up")
    with pytest.raises(ValueError):
        ReduceLROnPlateau(make_opt(), threshold_mode="pct")
    with pytest.raises(TypeError):
        StepLR(object(), step_size=1)
