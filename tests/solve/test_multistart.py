"""Batched multistart: starts, one batch through the traced graph and the optimizer, every solution found.

Tests that take the `device` fixture (tests/conftest.py) run on cpu, the Array API strict backend and cuda
when present; the strict backend's engine is slow, so those runs are kept to a few hundred steps.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import gradsolve as gs
from gradsolve.cli.main import cli
from gradsolve.problem.files import from_file, from_text
from gradsolve.problem.lowering import lower
from gradsolve.solve.options import SolveOptions
from gradsolve.solve.multistart import EagerBatch, cluster, draw_starts, run_batch
from gradsolve.solve.solver import merged_options, solve_spec
from gradsolve.solve.trace import trace_problem

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p.name for p in (ROOT / "problems").iterdir() if p.suffix in (".yaml", ".txt"))


def device_tol(device):
    """The trace and the engine agree to an ulp or so on NumPy-backed namespaces (cpu, strict); a GPU's math
    library and fused multiply-adds move the last digits more."""
    return dict(rtol=1e-9, atol=1e-12) if device == "cuda" else dict(rtol=1e-12, atol=1e-12)


def spec_of(name):
    return from_file(str(ROOT / "problems" / name))


def cli_json(*args):
    out = CliRunner().invoke(cli, [*args, "--output", "json", "--quiet"])  # --quiet: nothing on stderr
    return out.exit_code, json.loads(out.stdout)


def has_point(solutions, point):
    return any(all(abs(s["parameters"][k] - v) < 1e-6 for k, v in point.items()) for s in solutions)


@pytest.mark.parametrize("optimizer", ["auto", "adam"])
def test_intersection_with_64_starts_reports_both_solutions(optimizer):
    # adam's last steps stay above rounding: its starts count as solutions under an explicit --atol
    atol = ["--atol", "1e-20"] if optimizer == "adam" else []
    code, doc = cli_json("puzzle", str(ROOT / "problems/intersection.txt"), "--starts", "64",
                         "--optimizer", optimizer, *atol)
    assert code == 0 and doc["status"] == "converged"
    solutions = doc["solutions"]
    assert has_point(solutions, {"x": 3, "y": 4}) and has_point(solutions, {"x": 4, "y": 3})
    assert len(solutions) == 2
    assert sum(s["starts"] for s in solutions) <= 64
    assert solutions[0]["loss"] <= solutions[1]["loss"]
    assert doc["parameters"] == solutions[0]["parameters"]


@pytest.mark.parametrize("starts", [16, 64])
def test_a_continuum_is_reported_once_with_its_solution_set(starts):
    code, doc = cli_json("puzzle", str(ROOT / "problems/four-unknowns.yaml"), "--starts", str(starts),
                         "--optimizer", "lm")
    assert code == 0
    assert len(doc["solutions"]) == 1 and doc["solutions"][0]["starts"] == starts
    assert doc["solution_set"]["rank"] == 3


def test_starts_add_nothing_to_a_linear_system_solved_directly():
    code, doc = cli_json("puzzle", str(ROOT / "problems/four-unknowns.yaml"), "--starts", "16")
    assert code == 0 and doc["optimizer"] == "qr" and doc["solution_set"]["rank"] == 3
    assert "--starts 16 adds nothing" in doc["stop_reason"]


def test_every_device_finds_both_intersections(device):
    result = gs.solve(ROOT / "problems/intersection.txt", starts=64, device=device)
    doc = result.to_dict()
    assert result.status == "converged" and doc["device"] == device
    assert has_point(doc["solutions"], {"x": 3, "y": 4}) and has_point(doc["solutions"], {"x": 4, "y": 3})


def test_batched_multistart_runs_on_every_device(device):
    # adam runs the starts as one batch: on a device through the engine's (K, 1) leaves there
    # (it raised "expected all tensors on the same device" when they were created on the cpu)
    got = gs.solve(ROOT / "problems/intersection.txt", optimizer="adam", starts=16, steps=20, device=device)
    want = gs.solve(ROOT / "problems/intersection.txt", optimizer="adam", starts=16, steps=20)
    assert got.to_dict()["device"] == device and got.steps == 20
    got_solutions, want_solutions = got.to_dict()["solutions"], want.to_dict()["solutions"]
    assert [s["starts"] for s in got_solutions] == [s["starts"] for s in want_solutions]
    np.testing.assert_allclose([list(s["parameters"].values()) for s in got_solutions],
                               [list(s["parameters"].values()) for s in want_solutions], **device_tol(device))


def test_table_lists_every_solution():
    out = CliRunner().invoke(cli, ["puzzle", str(ROOT / "problems/intersection.txt"), "--starts", "16", "--quiet"])
    assert out.exit_code == 0
    assert "distinct solutions" in out.output


def test_starts_are_independent_of_the_problems_random_init():
    # intersection.txt gives no starting values: x and y start at default_rng(seed) draws. The starts used
    # to come from that same stream, so start 1 was init + (the same deviates) = exactly 2 x start 0.
    spec = spec_of("intersection.txt")
    init = spec.initial_values()
    np.testing.assert_array_equal(init, np.random.default_rng(0).standard_normal(2))
    starts = draw_starts(spec, 4, seed=0)
    assert not np.allclose(starts[1], 2 * starts[0])
    assert not np.any(np.isclose(starts[1:] - init, init))
    # over many seeds the first deviate is uncorrelated with the init (it was the same number)
    pairs = []
    for seed in range(200):
        spec = from_file(str(ROOT / "problems" / "intersection.txt"), seed=seed)
        init = spec.initial_values()
        pairs.append((init[0], draw_starts(spec, 2, seed=seed)[1, 0] - init[0]))
    assert abs(np.corrcoef(np.array(pairs).T)[0, 1]) < 0.3


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


def test_the_batch_follows_the_single_start_trajectory(device):
    spec = spec_of("intersection.txt")
    options = SolveOptions(optimizer="nadam", steps=60, tol=math.nan, atol=-1.0)
    starts = draw_starts(spec, 5, seed=1)
    trace = trace_problem(lower(spec))
    batch = run_batch(trace, starts, options, method="nadam", lr=0.1)
    eager = run_batch(EagerBatch(spec, lower(spec, device=device), 5), starts, options, method="nadam", lr=0.1)
    np.testing.assert_allclose(batch["values"], eager["values"], rtol=1e-12, atol=1e-12)
    for k in (0, 3):
        single = from_file(str(ROOT / "problems/intersection.txt"),
                           init={"x": starts[k, 0], "y": starts[k, 1]})
        merged = merged_options(single, {"optimizer": "nadam", "steps": 60, "device": device})
        merged.tol, merged.atol = math.nan, -1.0
        result = solve_spec(single, merged)
        np.testing.assert_allclose(batch["values"][k], list(result.parameters.values()), rtol=1e-12, atol=1e-12)
        assert batch["steps"][k] == 60


class Recording:
    """An evaluator that notes the type of every batch it is handed."""

    def __init__(self, evaluator):
        self.evaluator, self.backend, self.seen = evaluator, evaluator.backend, set()

    def batch_loss_grad(self, X):
        self.seen.add(type(X))
        return self.evaluator.batch_loss_grad(X)


#: Per example, methods whose 120 steps from draw_starts(seed=2) end in more than one way: converged and
#: max_steps everywhere, stalled (circuit with adam), diverged (sgd at lr 0.01 on circuit and rosenbrock).
BATCH_METHODS = {"circuit.yaml": ("adam", "sgd"), "rosenbrock.yaml": ("nadam", "sgd")}


@pytest.mark.parametrize("path", EXAMPLES)
def test_the_batch_stays_on_the_device_and_stops_as_on_the_cpu(path, device):
    # Points, optimizer state, rates and stopping state stay on the device for the whole run (they were
    # NumPy arrays, with (K, 1) columns copied to the device and back every step), and every start stops
    # where, when and why it stops on the cpu: the masked updates on a device equal the cpu's.
    spec = spec_of(path)
    lo, hi = spec.bounds()
    bounds = dict(lower=[None if math.isinf(v) else float(v) for v in lo],
                  upper=[None if math.isinf(v) else float(v) for v in hi])
    options = SolveOptions(steps=120, tol=1e-4, atol=1e-2)
    starts = draw_starts(spec, 6, seed=2)
    for method in BATCH_METHODS.get(path, ("nadam",)):
        lr = 0.01 if method == "sgd" else 0.1
        want = run_batch(trace_problem(lower(spec)), starts, options, method=method, lr=lr, **bounds)
        assert set(want["status"]) - {"max_steps"}, "some starts should stop within the steps"
        evaluators = [trace_problem(lower(spec, device=device))]  # array code on the device (see test_trace.py)
        if path in ("intersection.txt", "circuit.yaml", "polynomial.yaml"):  # the engine: slow on strict
            evaluators.append(EagerBatch(spec, lower(spec, device=device), 6))
        for evaluator in evaluators:
            recording = Recording(evaluator)
            got = run_batch(recording, starts, options, method=method, lr=lr, **bounds)
            if device == "cpu":
                assert recording.seen == {np.ndarray}
            else:
                assert np.ndarray not in recording.seen and len(recording.seen) == 1
            for key in ("status", "reason", "steps"):
                assert got[key].tolist() == want[key].tolist(), (method, key)
            for key in ("values", "loss", "history"):
                np.testing.assert_allclose(got[key], want[key], **device_tol(device), err_msg=f"{method} {key}")


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
    # ftol (relative change <= 1e-4 for 5 steps) fires at once on a loss of 1e8 falling by 2e3 a step:
    # the batch says stalled, as the single-start loop does
    text_spec = from_text("minimize: (x - 10000)^2\n", "slope.txt", init={"x": 0.0})
    options = SolveOptions(optimizer="adam", tol=1e-4)
    out = run_batch(trace_problem(lower(text_spec)), np.array([[0.0], [1.0]]), options, method="adam", lr=0.1)
    assert list(out["status"]) == ["stalled", "stalled"] and np.all(out["loss"] > 1e7)
    result = solve_spec(text_spec, merged_options(text_spec, {"optimizer": "adam", "tol": 1e-4}))
    assert result.status == "stalled" and result.exit_code == 1 and "not a minimum" in result.stop_reason


@pytest.mark.parametrize("tol", [1e-12, 1e-8])
def test_the_batch_stops_where_the_single_start_loop_stops(tol):
    # the stopping tests themselves (atol, gtol, xtol and ftol with their patience), not a fixed budget
    from gradsolve.methods import DEFAULT_LR

    spec = spec_of("four-unknowns.yaml")
    for method in ("adam", "nadam", "rmsprop", "adagrad", "adadelta"):
        options = merged_options(spec, {"optimizer": method, "tol": tol})
        out = run_batch(trace_problem(lower(spec)), np.array([spec.initial_values()]), options, method=method,
                        lr=DEFAULT_LR[method])
        single = solve_spec(spec, merged_options(spec, {"optimizer": method, "tol": tol}))
        assert out["steps"][0] == single.steps, method
        np.testing.assert_allclose(out["values"][0], list(single.parameters.values()), rtol=1e-12, atol=1e-12)


def test_a_loss_without_a_minimum_is_not_converged_under_multistart():
    # -log(x): L-BFGS reaches x ~ 1e12 where the gradient is below tol; one start said stalled, 4 starts converged
    code, doc = cli_json("minimize", "(-log(x))", "--init", "x=1", "--starts", "4")
    assert code == 1 and doc["status"] == "stalled"
    assert "the loss seems unbounded below" in doc["stop_reason"]
    # the batched first-order path says so too, as a single start does (it said only "reached the step limit")
    for optimizer in ("adam", "sgd"):
        code, doc = cli_json("minimize", "x", "--init", "x=0.5", "--optimizer", optimizer, "--starts", "4")
        assert code == 1 and doc["status"] == "max_steps"
        assert "the loss seems unbounded below" in doc["stop_reason"], doc["stop_reason"]


def test_the_batch_changes_its_rates_as_the_single_start_loop_does():
    # 800 NAdam steps on Rosenbrock: the rate is halved on plateaus and doubled on steady falls
    # (stopping.RateRule); the batch's per-start copy of the rule must follow the same trajectory
    spec = from_file(str(ROOT / "problems/rosenbrock.yaml"))
    options = SolveOptions(optimizer="nadam", steps=800, tol=math.nan, atol=-1.0)
    starts = np.array([[-1.2, 1.0], [2.0, -1.0]])
    batch = run_batch(trace_problem(lower(spec)), starts, options, method="nadam", lr=0.1)
    for k in range(2):
        single = from_file(str(ROOT / "problems/rosenbrock.yaml"), init={"x": starts[k, 0], "y": starts[k, 1]})
        merged = merged_options(single, {"optimizer": "nadam", "steps": 800, "lr": 0.1})
        merged.tol, merged.atol = math.nan, -1.0
        result = solve_spec(single, merged)
        np.testing.assert_allclose(batch["values"][k], list(result.parameters.values()), rtol=1e-9, atol=1e-12)


def test_a_distant_kink_is_reached_by_every_start():
    # abs(x - 100000) from 0 falls 0.1 a step: the rate must grow, not be halved to nothing
    code, doc = cli_json("minimize", "abs(x - 100000)", "--init", "x=0", "--starts", "4")
    assert code == 0 and doc["status"] == "converged"
    assert abs(doc["parameters"]["x"] - 100000) < 1e-3


def test_batched_starts_that_stop_in_a_kinked_valley_are_probed_not_trusted():
    # 100*|y - x^2| + |1 - x|: Adam's steps shrink to nothing in the valley short of (1, 1); the
    # gradient there says nothing (a kink), so each distinct stop is probed as a single start's is
    code, doc = cli_json("minimize", "100*abs(y - x^2) + abs(1 - x)", "--init", "x=-1", "--init", "y=1",
                         "--optimizer", "adam", "--starts", "8")
    converged_away = doc["status"] == "converged" and max(abs(doc["parameters"]["x"] - 1),
                                                          abs(doc["parameters"]["y"] - 1)) > 1e-3
    assert not converged_away
    if doc["status"] != "converged":
        assert code == 1 and "still falls" in doc["stop_reason"]


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_starts_that_end_at_a_saddle_are_not_solutions(optimizer):
    # x^4 - 2x^2 + y^2 from (0, 1): x's gradient is 0 all the way, so start 0 runs to the saddle (0, 0), gradient 0;
    # it used to be listed as a converged solution of loss 0. The batch (adam) and the one-after-another starts
    # (lbfgs) are both checked once per distinct point
    code, doc = cli_json("minimize", "x^4 - 2*x^2 + y^2", "--init", "x=0", "--init", "y=1", "--starts", "16",
                         "--optimizer", optimizer)
    assert code == 0 and doc["status"] == "converged"
    assert all(abs(abs(s["parameters"]["x"]) - 1) < 1e-4 for s in doc["solutions"]), doc["solutions"]
    assert sum(s["starts"] for s in doc["solutions"]) < 16  # the saddle's start is not counted


@pytest.mark.parametrize("trace", [True, False])
def test_a_piecewise_constant_loss_in_a_batch_is_stalled_not_a_crash(trace):
    # sign(x): the trace's check against the engine's gradient crashed (no gradient); every start is flat
    spec = from_text("minimize: sign(x)\n", "s.txt", init={"x": 1.0})
    result = solve_spec(spec, merged_options(spec, {"starts": 8, "trace": trace}))
    assert result.status == "stalled" and result.exit_code == 1 and result.loss == -1.0
    assert "piecewise constant" in result.stop_reason


def test_batched_stops_are_judged_by_the_gradient_at_the_reported_point():
    # as a single start: Adam's ftol fires where the step's gradient is above sqrt(tol) * g0, at the best point below
    spec = from_text("minimize: x^2 - 2*x\n", "q.txt", init={"x": 0.0})
    result = solve_spec(spec, merged_options(spec, {"starts": 4, "optimizer": "adam"}))
    assert result.status == "converged" and result.parameters["x"] == pytest.approx(1.0, abs=1e-6)
    assert result.extra["solutions"][0]["starts"] == 4


def test_cluster_groups_by_scale_and_orders_by_loss():
    values = np.array([[3.0, 4.0], [4.0, 3.0], [3.0 + 1e-9, 4.0], [1000.0, 0.0], [1000.0 + 1e-4, 0.0]])
    losses = np.array([1e-3, 1e-9, 1e-12, 0.5, 0.4])
    assert cluster(values, losses) == [(2, 2), (1, 1), (4, 2)]


def test_no_trace_multistart_uses_the_engine_batch():
    code, doc = cli_json("puzzle", str(ROOT / "problems/intersection.txt"), "--starts", "8", "--no-trace",
                         "--optimizer", "adam", "--atol", "1e-20")
    assert code == 0 and doc["solutions"]


def test_an_interrupted_batch_reports_the_best_points_so_far():
    spec = spec_of("intersection.txt")
    trace = trace_problem(lower(spec))
    calls = []

    class Interrupting:
        backend = trace.backend

        def batch_loss_grad(self, X):
            calls.append(1)
            if len(calls) == 30:
                raise KeyboardInterrupt
            return trace.batch_loss_grad(X)

    out = run_batch(Interrupting(), draw_starts(spec, 4, seed=0), SolveOptions(steps=1000), method="adam", lr=0.1)
    assert set(out["status"]) == {"interrupted"} and set(out["reason"]) == {"interrupted at step 29"}
    assert out["steps"].tolist() == [29] * 4 and len(out["history"]) == 28 and np.isfinite(out["loss"]).all()


def test_starts_must_be_positive():
    out = CliRunner().invoke(cli, ["puzzle", str(ROOT / "problems/intersection.txt"), "--starts", "0"])
    assert out.exit_code == 2
