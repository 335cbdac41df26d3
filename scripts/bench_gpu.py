"""GPU against CPU (and PyTorch CUDA when installed), in one run.

(1) a polynomial fit of a CSV with 10^7 rows (`gradsolve fit --degree 2`, end to end, in a subprocess);
(2) a batched multistart of problems/intersection.txt with 10^5 starts (Adam, fixed steps);
(3) one training step of a large two-layer network (float32).

Without a usable GPU the CUDA columns say so and the CPU figures are still printed.

    python scripts/bench_gpu.py [--rows 10000000] [--starts 100000] [--steps 200] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import gradsolve as gs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_csv(path, rows, seed=0):
    """y = x**2 + 2x + 3 + noise, written with pyarrow (fast, round-trip floats)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    x = rng.uniform(-5, 5, rows)
    y = x * x + 2 * x + 3 + rng.normal(0, 0.1, rows)
    pacsv.write_csv(pa.table({"x": x, "y": y}), path)


def time_fit(path, device):
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "gradsolve", "fit", path, "--degree", "2", "--device", device,
                           "--quiet", "--output", "json"], capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        return None, proc.stderr.strip().splitlines()[-1] if proc.stderr else f"exit {proc.returncode}"
    result = json.loads(proc.stdout)
    return elapsed, result["parameters"]


def time_multistart(device, starts, steps):
    problem = gs.Problem.from_file(os.path.join(ROOT, "problems", "intersection.txt"))
    start = time.perf_counter()
    result = gs.solve(problem, optimizer="adam", starts=starts, steps=steps, device=device)
    elapsed = time.perf_counter() - start
    return elapsed, len(result.to_dict().get("solutions") or [])


def network_step_time(lib, device, dtype, sizes, steps=10):
    n, d_in, h, d_out = sizes
    x = lib.randn(n, d_in, device=device, dtype=dtype)
    y = lib.randn(n, d_out, device=device, dtype=dtype)
    w1 = lib.randn(d_in, h, device=device, dtype=dtype, requires_grad=True)
    w2 = lib.randn(h, d_out, device=device, dtype=dtype, requires_grad=True)

    def step():
        loss = (x.mm(w1).clamp(min=0).mm(w2) - y).pow(2).sum()
        loss.backward()
        with lib.no_grad():
            w1.sub_(1e-9 * w1.grad)
            w2.sub_(1e-9 * w2.grad)
            w1.grad.zero_()
            w2.grad.zero_()
        return loss

    float(step().item())  # warm-up (and CUDA kernels compiled)
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    float(loss.item())  # waits for the device
    return (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--starts", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.starts, args.steps = 100_000, 1_000, 50
    has_cuda = gs.cuda_available()
    print(f"CUDA: {'available' if has_cuda else 'NOT available (CuPy with a GPU): cuda columns skipped'}")
    try:
        import torch

        torch_cuda = torch.cuda.is_available()
    except ImportError:
        torch, torch_cuda = None, False
    devices = ["cpu"] + (["cuda"] if has_cuda else [])

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "big.csv")
        write_csv(path, args.rows)
        print(f"\n(1) fit --degree 2, {args.rows:,} rows, end to end")
        for device in devices:
            elapsed, params = time_fit(path, device)
            print(f"  {device:5} {elapsed:8.2f} s  {params}" if elapsed is not None else f"  {device:5} failed: {params}")

    print(f"\n(2) multistart intersection.txt, {args.starts:,} starts x {args.steps} Adam steps")
    ms = {}
    for device in devices:
        elapsed, found = time_multistart(device, args.starts, args.steps)
        ms[device] = elapsed
        print(f"  {device:5} {elapsed:8.2f} s  {args.starts * args.steps / elapsed:12.3e} starts*steps/s  "
              f"{found} distinct solutions")
    if "cuda" in ms:
        print(f"  cuda speed-up: {ms['cpu'] / ms['cuda']:.1f}x")

    sizes = (1024, 1024, 1024, 256) if args.quick else (8192, 4096, 4096, 1024)
    print(f"\n(3) two-layer network step {sizes}, float32, ms per step")
    for device in devices:
        t = network_step_time(gs, device, gs.float32, sizes)
        line = f"  gradsolve {device:5} {t * 1e3:9.2f}"
        if torch is not None and (device == "cpu" or torch_cuda):
            tt = network_step_time(torch, device, torch.float32, sizes)
            line += f"   pytorch {tt * 1e3:9.2f}   ratio gs/pt {t / tt:5.2f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
