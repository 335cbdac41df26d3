"""Batched multistart: starts, one batch through the traced graph and the optimizer, every solution found."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gradsolve.cli.main import cli
from gradsolve.problem.files import from_file
from gradsolve.problem.lower import lower
from gradsolve.solve.loop import SolveOptions
from gradsolve.solve.multistart import EagerBatch, cluster, draw_starts, run_batch
from gradsolve.solve.solver import merged_options, solve_spec
from gradsolve.solve.trace import trace_problem

ROOT = Path(__file__).resolve().parents[2]


def spec_of(name):
    return from_file(str(ROOT / "problems" / name))


def cli_json(*args):
    out = CliRunner().invoke(cli, [*args, "--output", "json", "--quiet"])  # --quiet: nothing on stderr
    return out.exit_code, json.loads(out.stdout)


def has_point(solutions, point):
    return any(all(abs(s["parameters"][k] - v) < 1e-6 for k, v in point.items()) for s in solutions)


@pytest.mark.parametrize("optimizer", ["auto", "adam"])
def test_intersection_with_64_starts_reports_both_solutions(optimizer):
    code, doc = cli_json("puzzle", str(ROOT / "problems/intersection.txt"), "--starts", "64",
                         "--optimizer", optimizer)
    assert code == 0 and doc["status"] == "converged"
    solutions = doc["solutions"]
    assert has_point(solutions, {"x": 3, "y": 4}) and has_point(solutions, {"x": 4, "y": 3})
    assert len(solutions) == 2
    assert sum(s["starts"] for s in solutions) <= 64
    assert solutions[0]["loss"] <= solutions[1]["loss"]
    assert doc["parameters"] == solutions[0]["parameters"]


def test_a_continuum_is_reported_once_with_its_solution_set():
    code, doc = cli_json("puzzle", str(ROOT / "problems/four-unknowns.yaml"), "--starts", "16")
    assert code == 0
    assert len(doc["solutions"]) == 1 and doc["solutions"][0]["starts"] == 16
    assert doc["solution_set"]["rank"] == 3


def test_table_lists_every_solution():
    out = CliRunner().invoke(cli, ["puzzle", str(ROOT / "problems/intersection.txt"), "--starts", "16", "--quiet"])
    assert out.exit_code == 0
    assert "distinct solutions" in out.output


def test_starts_are_drawn_from_the_seed_within_bounds():
    spec = spec_of("circuit.yaml")  # B has min 0
    a, b = draw_starts(spec, 50, seed=3), draw_starts(spec, 50, seed=3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[0], spec.initial_values())
    assert np.all(a[:, 1] >= 0) and not np.array_equal(a, draw_starts(spec, 50, seed=4))
    bounded = from_file(str(ROOT / "problems/intersection.txt"))
    for u in bounded.unknowns:
        u.min, u.max = -2.0, 5.0
    starts = draw_starts(bounded, 2000, seed=0)
    assert starts.min() >= -2.0 and starts.max() <= 5.0 and starts[1:].std() > 1.5  # uniform, not N(init, 1)


def test_the_batch_follows_the_single_start_trajectory():
    spec = spec_of("intersection.txt")
    options = SolveOptions(optimizer="nadam", steps=60, tol=math.nan, atol=-1.0)
    starts = draw_starts(spec, 5, seed=1)
    trace = trace_problem(lower(spec))
    batch = run_batch(trace, starts, options, method="nadam", lr=0.1)
    eager = run_batch(EagerBatch(spec, lower(spec), 5), starts, options, method="nadam", lr=0.1)
    np.testing.assert_allclose(batch["values"], eager["values"], rtol=1e-12, atol=1e-12)
    for k in (0, 3):
        single = from_file(str(ROOT / "problems/intersection.txt"),
                           init={"x": starts[k, 0], "y": starts[k, 1]})
        merged = merged_options(single, {"optimizer": "nadam", "steps": 60})
        merged.tol, merged.atol = math.nan, -1.0
        result = solve_spec(single, merged)
        np.testing.assert_allclose(batch["values"][k], list(result.parameters.values()), rtol=1e-12, atol=1e-12)
        assert batch["steps"][k] == 60


def test_converged_starts_are_frozen_and_counted():
    spec = spec_of("intersection.txt")
    out = run_batch(trace_problem(lower(spec)), draw_starts(spec, 32, seed=0),
                    SolveOptions(optimizer="adam", steps=9000), method="adam", lr=0.1)
    converged = out["status"] == "converged"
    assert converged.sum() >= 16
    assert out["steps"][converged].max() < 9000  # stopped early, then frozen
    still = out["status"] == "max_steps"
    assert (out["steps"][still] == 9000).all()
    # the rest stopped moving on a slope (the plateau rule shrank their rate): stalled, not converged
    assert set(out["status"][~converged & ~still]) <= {"stalled"}


def test_a_start_that_stops_moving_on_a_slope_is_stalled_not_converged():
    # Rosenbrock from (-1.2, 1) with NAdam: the plateau rule halves the rate to nothing in the curved
    # valley and the steps fall below xtol with the loss still at 0.125 and a visible gradient.
    spec = from_file(ROOT / "problems/rosenbrock.yaml")
    out = run_batch(trace_problem(lower(spec)), np.array([[-1.2, 1.0]]), SolveOptions(optimizer="nadam"),
                    method="nadam", lr=0.1)
    assert out["status"][0] == "stalled" and out["loss"][0] > 1e-3
    result = solve_spec(spec, merged_options(spec, {"optimizer": "nadam"}))
    assert result.status == "stalled" and result.exit_code == 1 and "not a minimum" in result.stop_reason


def test_cluster_groups_by_scale_and_orders_by_loss():
    values = np.array([[3.0, 4.0], [4.0, 3.0], [3.0 + 1e-9, 4.0], [1000.0, 0.0], [1000.0 + 1e-4, 0.0]])
    losses = np.array([1e-3, 1e-9, 1e-12, 0.5, 0.4])
    assert cluster(values, losses) == [(2, 2), (1, 1), (4, 2)]


def test_no_trace_multistart_uses_the_engine_batch():
    code, doc = cli_json("puzzle", str(ROOT / "problems/intersection.txt"), "--starts", "8", "--no-trace",
                         "--optimizer", "adam")
    assert code == 0 and doc["solutions"]


def test_starts_must_be_positive():
    out = CliRunner().invoke(cli, ["puzzle", str(ROOT / "problems/intersection.txt"), "--starts", "0"])
    assert out.exit_code == 2
