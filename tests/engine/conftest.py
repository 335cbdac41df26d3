"""Engine tests: each starts and ends with grad mode on, so one that fails inside `no_grad` (or a
grad-mode bug) cannot make every later test silently record nothing."""
from __future__ import annotations

import pytest

import gradsolve as gs


@pytest.fixture(autouse=True)
def _grad_mode_on():
    gs.set_grad_enabled(True)
    yield
    gs.set_grad_enabled(True)
