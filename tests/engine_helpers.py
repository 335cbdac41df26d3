"""Helpers shared by the engine tests."""
from __future__ import annotations

import numpy as np

import gradsolve as gs


def make(values, device, requires_grad=True):
    """A float64 leaf on `device` from NumPy values."""
    return gs.tensor(np.asarray(values, dtype=np.float64), device=device, requires_grad=requires_grad)


def rand(rng, shape, device, low=-1.0, high=1.0):
    return make(rng.uniform(low, high, shape), device)
