"""Solve speed: eager vs traced gradsolve vs PyTorch eager, and batched multistart throughput.

(a) The four-unknown puzzle (problems/four-unknowns.yaml), Adam and NAdam, 2000
    steps from the file's start, lr 0.1, no stopping test.  A step is: loss and gradient, then the
    optimizer update.
    * gradsolve eager: the lowered problem's loss() on the engine, backward(), gs.optim step;
    * gradsolve traced: the solve loop itself (`solve_spec` with no stopping test, so all 2000
      steps run), traced code + gs.optim's update rule on floats + stopping tests,
      plateau scheduler and best-point bookkeeping -- more work than the others do;
    * PyTorch eager (when installed): the same residuals as torch ops, torch.optim.
(b) Multistart throughput on the batched path (traced NumPy code, Adam over a (K, p)
    batch with per-start stopping tests): starts x steps per second for K = 1, 100,
    10,000 on problems/intersection.txt, and the cost of one step at K = 10,000
    relative to K = 1 (target: under 20x).

Timings are best of --repeat runs.

    python scripts/bench_solve.py [--repeat 5] [--steps 2000]
"""
from __future__ import annotations

import argparse
import math
import pathlib
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def best_of(fn, repeat):
    fn()  # warm up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def gradsolve_eager(method, steps):
    import gradsolve as gs
    from gradsolve.problem.files import from_file
    from gradsolve.problem.lowering import lower

    def go():
        lowered = lower(from_file(str(ROOT / "problems/four-unknowns.yaml")))
        opt = {"adam": gs.optim.Adam, "nadam": gs.optim.NAdam}[method](lowered.params, lr=0.1)
        for _ in range(steps):
            opt.zero_grad()
            lowered.loss().backward()
            opt.step()

    return go


def gradsolve_traced(method, steps):
    from gradsolve.problem.files import from_file
    from gradsolve.solve.solver import merged_options, solve_spec

    def go():
        spec = from_file(str(ROOT / "problems/four-unknowns.yaml"))
        options = merged_options(spec, {"optimizer": method, "steps": steps, "lr": 0.1})
        options.tol, options.atol = math.nan, -1.0  # every stopping test compares false: all steps run
        result = solve_spec(spec, options)
        assert result.steps == steps, result.stop_reason
        go.per_step = result.elapsed_s / result.steps  # the loop alone, not lowering and tracing

    return go


def torch_eager(torch, method, steps):
    def go():
        A, B, C, D = [torch.tensor(0.0, dtype=torch.float64, requires_grad=True) for _ in range(4)]
        opt = {"adam": torch.optim.Adam, "nadam": torch.optim.NAdam}[method]([A, B, C, D], lr=0.1)
        for _ in range(steps):
            opt.zero_grad()
            r = torch.stack([A + B - 9, C - D - 1, A + C - 8, B - D - 2])
            (r * r).sum().backward()
            opt.step()

    return go


def batch_step_seconds(K, steps, repeat):
    from gradsolve.problem.files import from_file
    from gradsolve.problem.lowering import lower
    from gradsolve.solve.options import SolveOptions
    from gradsolve.solve.multistart import draw_starts, run_batch
    from gradsolve.solve.trace import trace_problem

    spec = from_file(str(ROOT / "problems/intersection.txt"))
    trace = trace_problem(lower(spec))
    starts = draw_starts(spec, K, seed=0)
    options = SolveOptions(steps=steps, tol=math.nan, atol=-1.0)  # every start runs every step

    def go():
        out = run_batch(trace, starts, options, method="adam", lr=0.1)
        assert int(out["steps"].max()) == steps

    return best_of(go, repeat) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        torch = None
        print("PyTorch is not installed: gradsolve figures only (pip install torch==2.13.0 to compare)")

    steps = args.steps
    print(f"(a) four-unknown puzzle, {steps} steps, microseconds per step (best of {args.repeat})")
    print(f"{'method':8} {'gs eager':>10} {'gs traced':>10} {'torch':>10} {'traced/torch':>13} "
          f"{'eager/torch':>12} {'traced vs eager':>16}")
    for method in ("adam", "nadam"):
        eager = best_of(gradsolve_eager(method, steps), args.repeat) / steps
        traced_fn = gradsolve_traced(method, steps)
        loop_times = []
        for _ in range(args.repeat + 1):
            traced_fn()
            loop_times.append(traced_fn.per_step)
        traced = min(loop_times[1:])
        pt = best_of(torch_eager(torch, method, steps), args.repeat) / steps if torch else None
        speed = (f"{pt / traced:12.1f}x {pt / eager:11.2f}x" if pt else f"{'-':>13} {'-':>12}")
        print(f"{method:8} {eager * 1e6:10.1f} {traced * 1e6:10.1f} {(pt or 0) * 1e6:10.1f} {speed} "
              f"{eager / traced:15.1f}x")
    print("    ratios: steps per second relative to PyTorch eager (traced/torch >= 10x is the target)")

    print(f"\n(b) batched multistart, intersection.txt, adam, traced NumPy path (best of {args.repeat})")
    print(f"{'K':>7} {'us/step':>10} {'starts*steps/s':>15} {'step cost vs K=1':>17}")
    base = None
    for K, n in ((1, 500), (100, 500), (10_000, 100)):
        seconds = batch_step_seconds(K, n, args.repeat)
        base = base or seconds
        print(f"{K:7d} {seconds * 1e6:10.1f} {K / seconds:15.3g} {seconds / base:16.1f}x")
    print("    target: a step at K = 10,000 costs under 20x a step at K = 1")


if __name__ == "__main__":
    main()
