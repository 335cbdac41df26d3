"""Benchmark `gradsolve fit --degree 2` against NumPy, pandas and a PyTorch Adam loop, end to end.

    python scripts/bench_fit.py                  # 10^6 rows
    python scripts/bench_fit.py --rows 10000000  # 10^7 rows (the PyTorch loop is skipped above 10^6)

Writes a CSV of y = x**2 + 2x + 3 + noise (x uniform in [-10, 10], noise N(0, 0.1)), then runs each
contender as its own process (interpreter start-up and imports count, as they do for a user) and prints
wall time, peak memory (max RSS of that process) and digits: the smallest, over the three coefficients,
number of digits that agree with the exact least-squares solution of the same parsed data (computed
here in extended precision from a centred basis). pandas and PyTorch are optional: rows for a missing
one say so. Timings belong in this script's output only, never in tests.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

NUMPY = """
import sys, json, numpy as np
d = np.loadtxt(sys.argv[1], delimiter=",", skiprows=1)
c = np.polyfit(d[:, 0], d[:, 1], 2)[::-1]
print(json.dumps(c.tolist()))
"""
PANDAS = """
import sys, json, numpy as np, pandas as pd
d = pd.read_csv(sys.argv[1], engine="c", float_precision="round_trip")
c = np.polyfit(d["x"].to_numpy(), d["y"].to_numpy(), 2)[::-1]
print(json.dumps(c.tolist()))
"""
TORCH = """
import sys, json, torch, pandas as pd
d = pd.read_csv(sys.argv[1], engine="c", float_precision="round_trip")
x = torch.tensor(d["x"].to_numpy(), dtype=torch.float64); y = torch.tensor(d["y"].to_numpy(), dtype=torch.float64)
c = torch.zeros(3, dtype=torch.float64, requires_grad=True)
opt = torch.optim.Adam([c], lr=0.1)
for _ in range(int(sys.argv[2])):
    opt.zero_grad()
    loss = ((c[0] + c[1] * x + c[2] * x * x - y) ** 2).mean()
    loss.backward()
    opt.step()
print(json.dumps(c.detach().tolist()))
"""


def write_data(path: str, rows: int, seed: int = 0) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    x = rng.uniform(-10.0, 10.0, rows)
    y = x * x + 2.0 * x + 3.0 + rng.normal(0.0, 0.1, rows)
    pacsv.write_csv(pa.table({"x": x, "y": y}), path)


def reference(path: str) -> np.ndarray:
    """Exact least squares of the parsed data: normal equations of a centred basis in long double."""
    import pyarrow.csv as pacsv

    t = pacsv.read_csv(path)
    x = t.column("x").to_numpy().astype(np.longdouble)
    y = t.column("y").to_numpy().astype(np.longdouble)
    c = (x.max() + x.min()) / 2
    s = (x.max() - x.min()) / 2
    u = (x - c) / s
    A = np.stack([np.ones_like(u), u, u * u], axis=1)
    G = A.T @ A
    g = A.T @ y
    # Gaussian elimination in long double (np.linalg does not take long double)
    n = 3
    M = np.concatenate([G, g[:, None]], axis=1)
    for i in range(n):
        for j in range(i + 1, n):
            M[j] -= M[i] * (M[j, i] / M[i, i])
    a = np.zeros(n, dtype=np.longdouble)
    for i in range(n - 1, -1, -1):
        a[i] = (M[i, n] - M[i, i + 1:n] @ a[i + 1:]) / M[i, i]
    # back to powers of x: a0 + a1 u + a2 u^2 with u = (x - c)/s
    b2 = a[2] / (s * s)
    b1 = a[1] / s - 2 * a[2] * c / (s * s)
    b0 = a[0] - a[1] * c / s + a[2] * c * c / (s * s)
    return np.array([b0, b1, b2], dtype=np.longdouble)


def digits(est, ref) -> float:
    worst = math.inf
    for e, r in zip(est, ref):
        err = abs(np.longdouble(e) - r) / abs(r)
        worst = min(worst, 16.0 if err == 0 else float(-np.log10(err)))
    return min(worst, 16.0)


# A small launcher times the contender and reads its peak RSS: the peak of a process survives exec, so
# forking the contender from this (large) script would report this script's peak instead.
LAUNCH = """
import json, os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as fh:
    json.dump([time.perf_counter() - start, usage.ru_maxrss / 1024.0, os.waitstatus_to_exitcode(status)], fh)
"""


def run(argv: list[str]) -> tuple[float, float, str, int]:
    """Wall seconds, peak RSS (MB) of the contender's process, its stdout, its exit code."""
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "report.json")
        proc = subprocess.run([sys.executable, "-c", LAUNCH, report, *argv], capture_output=True, text=True)
        with open(report) as fh:
            wall, peak, code = json.load(fh)
    if code != 0:
        sys.stderr.write(proc.stderr[-2000:])
    return wall, peak, proc.stdout, code


def available(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--torch-steps", type=int, default=1000)
    parser.add_argument("--keep", help="write the CSV here and keep it")
    args = parser.parse_args()
    path = args.keep or os.path.join(tempfile.mkdtemp(), f"bench_{args.rows}.csv")
    t0 = time.perf_counter()
    if not os.path.exists(path):
        write_data(path, args.rows)
    size = os.path.getsize(path) / 2**20
    ref = reference(path)
    print(f"{args.rows:,} rows, {size:.0f} MB CSV (made in {time.perf_counter() - t0:.1f}s); "
          f"least-squares solution {', '.join(f'{float(v):.15g}' for v in ref)}")
    print(f"{'contender':44s} {'time':>8s} {'peak MB':>8s} {'digits':>7s}  coefficients c0, c1, c2")
    contenders = [("gradsolve fit --degree 2 (auto: QR)",
                   [sys.executable, "-m", "gradsolve", "fit", path, "--degree", "2", "--output", "json", "--quiet"]),
                  ("gradsolve fit --degree 2 --optimizer adam",
                   [sys.executable, "-m", "gradsolve", "fit", path, "--degree", "2", "--optimizer", "adam",
                    "--output", "json", "--quiet"]),
                  ("numpy.loadtxt + numpy.polyfit", [sys.executable, "-c", NUMPY, path])]
    if available("pandas"):
        contenders.append(("pandas.read_csv (C engine) + numpy.polyfit", [sys.executable, "-c", PANDAS, path]))
    else:
        print(f"{'pandas.read_csv + numpy.polyfit':44s} skipped: pandas is not installed")
    if available("torch") and available("pandas") and args.rows <= 1_000_000:
        contenders.append((f"pandas + PyTorch Adam ({args.torch_steps} steps, lr 0.1)",
                           [sys.executable, "-c", TORCH, path, str(args.torch_steps)]))
    else:
        print(f"{'PyTorch Adam loop':44s} skipped: needs torch and pandas, and at most 10^6 rows")
    for label, argv in contenders:
        wall, peak, out, code = run(argv)
        if code != 0:
            print(f"{label:44s} failed with exit code {code}")
            continue
        data = json.loads(out)
        coef = [data["parameters"][f"c{k}"] for k in range(3)] if isinstance(data, dict) else data
        print(f"{label:44s} {wall:7.2f}s {peak:8.0f} {digits(coef, ref):7.2f}  "
              + ", ".join(f"{v:.15g}" for v in coef))
    if not args.keep:
        os.remove(path)


if __name__ == "__main__":
    main()
