"""The result of a solve and its JSON form, a versioned contract (README: "JSON result").

Floats are written round-trip (Python's repr); NaN and infinity become null,
never bare NaN, which jq and strict JSON parsers reject.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

SCHEMA = 1
EXIT_CODES = {"converged": 0, "inconsistent": 1, "stalled": 1, "max_steps": 1, "diverged": 1, "interrupted": 130}


def finite_or_none(value):
    """A JSON-safe float: None for NaN and infinities."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass
class Result:
    """What a solve found; `to_dict()` is exactly the CLI's `--output json`."""

    problem: str
    status: str
    stop_reason: str
    optimizer: str
    steps: int
    loss: float
    gradient_norm: float | None
    parameters: dict
    residuals: list
    solution_set: dict | None
    seed: int
    device: str
    dtype: str
    elapsed_s: float
    at_bounds: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    loss_history: list = field(default_factory=list, repr=False)
    kind: str = "equations"
    extra: dict = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    @property
    def converged(self) -> bool:
        return self.status == "converged"

    def to_dict(self) -> dict:
        out = {
            "schema": SCHEMA,
            "problem": self.problem,
            "status": self.status,
            "stop_reason": self.stop_reason,
            "optimizer": self.optimizer,
            "steps": self.steps,
            "loss": finite_or_none(self.loss),
            "gradient_norm": finite_or_none(self.gradient_norm),
            "parameters": {k: finite_or_none(v) for k, v in self.parameters.items()},
            "residuals": [_clean(r) for r in self.residuals],
            "solution_set": _clean(self.solution_set),
            "at_bounds": list(self.at_bounds),
            "seed": self.seed,
            "device": self.device,
            "dtype": self.dtype,
            "elapsed_s": finite_or_none(self.elapsed_s),
            "warnings": [str(w) for w in self.warnings],
        }
        for key, value in self.extra.items():
            out[key] = _clean(value)
        return out

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)


def _clean(value):
    """Recursively replace non-finite floats by None."""
    if isinstance(value, float):
        return finite_or_none(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return _clean(value.item())
    return value
