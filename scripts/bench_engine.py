"""Forward + backward timings of the engine, side by side with PyTorch eager when installed.

(a) the four-unknown puzzle's loss on scalar tensors; (b) one training step of the
64x1000x100x10 two-layer network (forward, backward, SGD update, zeroing), float64
and float32. Prints microseconds per step and the ratio gradsolve / PyTorch.

    python scripts/bench_engine.py [--repeat 15]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import gradsolve as gs


def best_of(fns, steps, repeat):
    """Best time per step of each function; rounds alternate between them, so a burst of load
    from elsewhere on a shared machine hits every contender rather than one."""
    for fn in fns:
        for _ in range(max(steps // 10, 5)):
            fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            best[i] = min(best[i], (time.perf_counter() - start) / steps)
    return best


def puzzle_step(lib, dtype):
    A, B, C, D = [lib.tensor(v, dtype=dtype, requires_grad=True) for v in (1.0, 2.0, 3.0, 4.0)]

    def step():
        y1 = A + B - 9
        y2 = C - D - 1
        y3 = A + C - 8
        y4 = B - D - 2
        sqerr = y1 * y1 + y2 * y2 + y3 * y3 + y4 * y4
        sqerr.backward()

    return step


def network_step(lib, dtype):
    rng = np.random.default_rng(0)
    x = lib.tensor(rng.standard_normal((64, 1000)), dtype=dtype)
    y = lib.tensor(rng.standard_normal((64, 10)), dtype=dtype)
    w1 = lib.tensor(rng.standard_normal((1000, 100)), dtype=dtype, requires_grad=True)
    w2 = lib.tensor(rng.standard_normal((100, 10)), dtype=dtype, requires_grad=True)

    def step():
        loss = (x.mm(w1).clamp(min=0).mm(w2) - y).pow(2).sum()
        loss.backward()
        with lib.no_grad():
            w1.sub_(1e-6 * w1.grad)
            w2.sub_(1e-6 * w2.grad)
            w1.grad.zero_()
            w2.grad.zero_()

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    try:
        import torch

        torch.set_num_threads(max(1, torch.get_num_threads()))
    except ImportError:
        torch = None
        print("PyTorch is not installed: gradsolve figures only (pip install torch==2.13.0 to compare)")
    cases = [
        ("puzzle loss fwd+bwd, float64", puzzle_step, "float64", 2000),
        ("puzzle loss fwd+bwd, float32", puzzle_step, "float32", 2000),
        ("2-layer net step, float64", network_step, "float64", 100),
        ("2-layer net step, float32", network_step, "float32", 100),
    ]
    print(f"{'case':34} {'gradsolve us':>13} {'pytorch us':>11} {'ratio gs/pt':>11}")
    for name, make, dtype_name, steps in cases:
        fns = [make(gs, getattr(gs, dtype_name))]
        if torch is not None:
            fns.append(make(torch, getattr(torch, dtype_name)))
        times = best_of(fns, steps, args.repeat)
        line = f"{name:34} {times[0] * 1e6:13.1f}"
        if torch is not None:
            line += f" {times[1] * 1e6:11.1f} {times[0] / times[1]:11.2f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
