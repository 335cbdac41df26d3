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


def test_verdict_checks_run_on_each_device(device, tmp_path):
    # the checks behind a verdict (a kinked loss probed by gradient sampling; LM's cosines and, where a column
    # vanishes, the curvature along it by a Hessian-vector product) use the device's arrays, not NumPy's
    kink = gs.Problem.from_text("minimize: abs(x - 100000) + abs(y + 3)", init={"x": 0.0, "y": 0.0})
    cpu, other = gs.solve(kink), gs.solve(kink, device=device)
    assert other.status == cpu.status == "converged" and other.steps == cpu.steps
    valley = gs.Problem.from_text("minimize: 100*abs(y - x^2) + abs(1 - x)", init={"x": -1.2, "y": 1.0})
    assert gs.solve(valley, device=device).status == "stalled"
    x = np.linspace(0.0, 5.0, 30)
    y = 2 * x - 1 + 0.1 * np.random.default_rng(1).standard_normal(30)
    (tmp_path / "d.csv").write_text("x,y\n" + "".join(f"{a!r},{b!r}\n" for a, b in zip(x.tolist(), y.tolist())))
    (tmp_path / "p.yaml").write_text("data: d.csv\nunknowns: {a: 1, b: 1}\nresiduals:\n  - a*x + b^2 - y\n")
    result = gs.solve(str(tmp_path / "p.yaml"), device=device)
    assert result.status == "converged", result.stop_reason
    assert result.parameters["a"] == pytest.approx(float(np.sum(x * y) / np.sum(x * x)), rel=1e-6)
