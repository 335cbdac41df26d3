"""The solver on every available device: cpu (NumPy), the Array API strict backend, cuda when present.

The strict backend refuses anything outside the Array API standard, so a
NumPy-only call anywhere in lowering, the optimizers or the loop fails here
without a GPU.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import gradsolve as gs

PROBLEMS = Path(__file__).resolve().parents[2] / "problems"
EXAMPLES = ["four-unknowns.yaml", "intersection.txt", "rosenbrock.yaml", "polynomial.yaml",
            "abs-difference.yaml", "circuit.yaml"]


@pytest.mark.parametrize("example", EXAMPLES)
def test_examples_converge_identically_on_each_device(example, device):
    reference = gs.solve(str(PROBLEMS / example))
    result = gs.solve(str(PROBLEMS / example), device=device)
    assert result.status == "converged", result.stop_reason
    assert result.device == device
    assert result.optimizer == reference.optimizer
    for name, value in reference.parameters.items():
        assert result.parameters[name] == pytest.approx(value, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "nadam", "rmsprop", "lbfgs"])
def test_first_order_methods_on_each_device(optimizer, device):
    problem = gs.Problem.from_text("minimize: (x - 2)^2 + (y + 1)^2 + x*y/10", init={"x": 0.5, "y": 0.5})
    cpu = gs.solve(problem, optimizer=optimizer, steps=300)
    other = gs.solve(problem, optimizer=optimizer, steps=300, device=device)
    np.testing.assert_allclose(list(other.parameters.values()), list(cpu.parameters.values()), rtol=1e-9)
    assert other.steps == cpu.steps


def test_float32_solves_to_float32_precision():
    result = gs.solve(str(PROBLEMS / "intersection.txt"), dtype="float32", atol=1e-10)
    assert result.dtype == "float32"
    x, y = result.parameters["x"], result.parameters["y"]
    assert abs(x * x + y * y - 25) < 1e-4 and abs(x + y - 7) < 1e-5
