"""What a run reports: a progress row after a step, and the outcome at its end."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["ProgressRow", "Outcome"]


@dataclass
class ProgressRow:
    step: int
    loss: float
    loss_change: float | None
    gradient_norm: float | None
    step_norm: float | None
    rate: float | None  # learning rate, or the damping for Levenberg-Marquardt
    rate_name: str
    values: dict
    elapsed_s: float


@dataclass
class Outcome:
    status: str  # converged | stalled | max_steps | diverged | interrupted (inconsistent: decided by the caller)
    stop_reason: str
    optimizer: str
    steps: int
    loss: float
    gradient_norm: float | None
    values: np.ndarray
    elapsed_s: float
    loss_history: list = field(default_factory=list)
    at_bounds: list = field(default_factory=list)
    jacobian: np.ndarray | None = None
    atol_stop: bool = False  # converged because the loss reached atol (a proven minimum: nothing to confirm)
    not_minimum: bool = False  # stalled at a point confirm_minimum_stop refuted (a saddle, a maximum, a flat step)
