"""GPU against CPU, and against PyTorch (CUDA and CPU) when installed, in one run.

(1) A polynomial fit (degree 2) of 10^7 rows of y = x**2 + 2x + 3 + noise:
    * `gradsolve fit --degree 2` end to end, a process per device (start-up, CSV parsing, the fit);
    * in one process, from the same CSV: gradsolve's fit (`gradsolve.solve.fit.fit`) and PyTorch's
      `torch.linalg.lstsq` on a centred and scaled Vandermonde matrix (the CSV read with pyarrow, the
      columns moved to the device, the solve); wall time, the solve alone, and the digits that agree
      with a float64 NumPy least-squares solution of the same data.
(2) A batched multistart of problems/intersection.txt, 10^5 starts x --steps Adam steps (lr 0.1), the
    same starts for every contender (gradsolve.solve.multistart.draw_starts):
    * `gs.solve(..., starts=K)` as shipped, with its stopping tests (starts that converge are frozen);
    * the batched loop on a fixed budget (no stopping test fires, every start runs every step), over the
      traced array code and over the engine, on each device;
    * PyTorch: Adam on a (K, 2) tensor of the same residuals, the same steps (no stopping tests).
(3) One training step of a large two-layer network (float32), gradsolve against PyTorch.

Every section, and every contender in it, runs under its own try/except: a failure prints its error
and the rest still runs.  Without a usable GPU (CuPy with a CUDA device) the cuda rows say so and are
skipped; without PyTorch its rows say so.  Timings belong in this script's output only.

    python scripts/bench_gpu.py                    # the sizes above
    python scripts/bench_gpu.py --quick            # small sizes: a smoke run that finishes in seconds
    python scripts/bench_gpu.py --rows 1000000 --starts 10000 --steps 100 --sections 1,2
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
import traceback
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import gradsolve as gs  # noqa: E402
from gradsolve.problem.files import from_file  # noqa: E402
from gradsolve.problem.lowering import lower  # noqa: E402
from gradsolve.solve.options import SolveOptions  # noqa: E402
from gradsolve.solve.multistart import EagerBatch, draw_starts, run_batch  # noqa: E402
from gradsolve.solve.trace import trace_problem  # noqa: E402

INTERSECTION = os.path.join(ROOT, "problems", "intersection.txt")
FULL = dict(rows=10_000_000, starts=100_000, steps=200, net=(8192, 4096, 4096, 1024))
QUICK = dict(rows=20_000, starts=500, steps=20, net=(256, 256, 256, 64))


# ----------------------------------------------------------------------------- the machine


class Machine:
    """What this run can use: gradsolve's cuda (and why not), PyTorch (and its CUDA)."""

    def __init__(self):
        self.cuda_reason = None
        try:
            gs.backend.get_backend("cuda")
            self.cuda = True
        except Exception as exc:  # noqa: BLE001 - any failure means: no cuda rows, and say why
            self.cuda, self.cuda_reason = False, str(exc).splitlines()[0]
        self.torch, self.torch_cuda, self.torch_reason = None, False, None
        try:
            import torch

            self.torch = torch
            self.torch_cuda = bool(torch.cuda.is_available())
        except Exception as exc:  # noqa: BLE001 - ImportError, or a broken install (OSError on a library)
            self.torch_reason = f"{type(exc).__name__}: {exc}".splitlines()[0]

    def devices(self):
        return ["cpu"] + (["cuda"] if self.cuda else [])

    def torch_devices(self):
        if self.torch is None:
            return []
        return ["cpu"] + (["cuda"] if self.torch_cuda else [])

    def describe(self):
        lines = [f"gradsolve cuda: {'available' if self.cuda else 'cuda not available (' + self.cuda_reason + ')'}"]
        if self.cuda:
            try:
                import cupy

                name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
                name = name.decode() if isinstance(name, bytes) else name
                lines.append(f"  CuPy {cupy.__version__} on {name}")
            except Exception as exc:  # noqa: BLE001
                lines.append(f"  CuPy details unavailable: {exc}")
        if self.torch is None:
            lines.append(f"PyTorch: not installed ({self.torch_reason}): its rows are skipped")
        else:
            cuda = "CUDA available" if self.torch_cuda else "cuda not available"
            lines.append(f"PyTorch {self.torch.__version__}: {cuda}")
        return "\n".join(lines)

    def sync(self):
        """Wait for every device this run may have queued work on."""
        if self.cuda:
            import cupy

            cupy.cuda.Device().synchronize()
        if self.torch_cuda:
            self.torch.cuda.synchronize()


def guarded(label, fn, *args, **kwargs):
    """Run one contender; a failure prints its error (not a traceback wall) and returns None."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - one failure must not stop the other contenders
        last = traceback.extract_tb(exc.__traceback__)[-1]
        print(f"  {label}: FAILED: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
              f"({os.path.basename(last.filename)}:{last.lineno})", flush=True)
        return None


def ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "-"


# ----------------------------------------------------------------------------- (1) polynomial fit


def make_data(rows, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-5.0, 5.0, rows)
    y = x * x + 2.0 * x + 3.0 + rng.normal(0.0, 0.1, rows)
    return x, y


def write_csv(path, x, y):
    """pyarrow writes round-trip floats, fast."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    pacsv.write_csv(pa.table({"x": x, "y": y}), path)


def read_csv(path):
    """The CSV's columns as float64 NumPy arrays (pyarrow, multi-threaded: what gradsolve reads with too)."""
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(path)
    return table.column("x").to_numpy(), table.column("y").to_numpy()


def reference_fit(x, y):
    """c0, c1, c2 by float64 least squares on a centred, scaled basis (NumPy, on the cpu)."""
    centre, scale = 0.5 * (x.max() + x.min()), 0.5 * (x.max() - x.min())
    t = (x - centre) / scale
    a = np.linalg.lstsq(np.stack([np.ones_like(t), t, t * t], axis=1), y, rcond=None)[0]
    return to_x_basis(a, centre, scale)


def to_x_basis(a, centre, scale):
    """y = a0 + a1 t + a2 t^2 with t = (x - centre) / scale, as c0 + c1 x + c2 x^2."""
    a0, a1, a2 = (float(v) for v in a)
    return [a0 - a1 * centre / scale + a2 * centre * centre / (scale * scale),
            a1 / scale - 2.0 * a2 * centre / (scale * scale),
            a2 / (scale * scale)]


def digits(got, want):
    """The fewest digits, over the coefficients, that agree with the reference."""
    worst = max(abs(g - w) / max(abs(w), 1e-300) for g, w in zip(got, want))
    return f"{min(16.0, -math.log10(worst)) if worst > 0 else 16.0:.1f}"


def fit_cli(path, device):
    """`gradsolve fit --degree 2` in its own process: (wall seconds, coefficients)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "gradsolve", "fit", path, "--degree", "2", "--device", device,
                           "--quiet", "--output", "json"], capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        tail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
        raise RuntimeError(tail)
    result = json.loads(proc.stdout)
    return elapsed, [result["parameters"][f"c{k}"] for k in range(3)], result.get("elapsed_s")


def fit_gradsolve(path, device, machine):
    """gradsolve's fit in this process: (wall seconds, coefficients, the result's own solve time)."""
    from gradsolve.solve.fit import fit

    start = time.perf_counter()
    result = fit(path, degree=2, device=device)
    machine.sync()
    elapsed = time.perf_counter() - start
    return elapsed, [result.parameters[f"c{k}"] for k in range(3)], result.elapsed_s


def fit_torch(path, device, machine):
    """PyTorch: read, move to the device, lstsq on [1, t, t^2]: (wall seconds, coefficients, solve seconds)."""
    torch = machine.torch
    start = time.perf_counter()
    x_host, y_host = read_csv(path)
    with warnings.catch_warnings():  # pyarrow's arrays can be read-only; torch only reads them here
        warnings.simplefilter("ignore", UserWarning)
        x = torch.from_numpy(x_host).to(device)
        y = torch.from_numpy(y_host).to(device)
    machine.sync()
    solve_start = time.perf_counter()
    lo, hi = torch.aminmax(x)
    centre, scale = 0.5 * (hi + lo), 0.5 * (hi - lo)
    t = (x - centre) / scale
    A = torch.stack([torch.ones_like(t), t, t * t], dim=1)
    a = torch.linalg.lstsq(A, y.unsqueeze(1)).solution.squeeze(1)  # gels on CUDA (full rank, tall)
    a = a.cpu().numpy()
    end = time.perf_counter()
    return end - start, to_x_basis(a, float(centre), float(scale)), end - solve_start


def section_fit(args, machine):
    print(f"\n(1) polynomial fit, degree 2, {args.rows:,} rows (float64)")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "big.csv")
        warm = os.path.join(tmp, "warm.csv")
        x, y = make_data(args.rows)
        write_csv(path, x, y)
        write_csv(warm, *make_data(1000, seed=1))
        want = reference_fit(x, y)
        del x, y
        print(f"  reference (NumPy lstsq, centred basis): c0 {want[0]:.15g}  c1 {want[1]:.15g}  c2 {want[2]:.15g}")
        print(f"  {'contender':34} {'device':6} {'wall s':>9} {'solve s':>9} {'digits':>7}")
        walls = {}

        def row(name, device, out):
            if out is None:
                return
            wall, coefficients, solve = out
            walls[(name, device)] = wall
            solve_text = f"{solve:9.3f}" if solve is not None else f"{'-':>9}"
            print(f"  {name:34} {device:6} {wall:9.3f} {solve_text} {digits(coefficients, want):>7}", flush=True)

        for device in ("cpu", "cuda"):
            if device == "cuda" and not machine.cuda:
                print(f"  {'gradsolve fit (CLI, end to end)':34} cuda   cuda not available: skipped")
                continue
            row("gradsolve fit (CLI, end to end)", device,
                guarded(f"gradsolve fit CLI {device}", fit_cli, path, device))
        for device in ("cpu", "cuda"):
            if device == "cuda" and not machine.cuda:
                print(f"  {'gradsolve fit (in process)':34} cuda   cuda not available: skipped")
                continue
            guarded(f"gradsolve fit warm-up {device}", fit_gradsolve, warm, device, machine)  # kernels compiled
            row("gradsolve fit (in process)", device,
                guarded(f"gradsolve fit {device}", fit_gradsolve, path, device, machine))
        if machine.torch is None:
            print(f"  {'torch lstsq (in process)':34} -      PyTorch not installed: skipped")
        for device in machine.torch_devices():
            guarded(f"torch lstsq warm-up {device}", fit_torch, warm, device, machine)
            row("torch lstsq (in process)", device, guarded(f"torch lstsq {device}", fit_torch, path, device, machine))
        if machine.torch is not None and not machine.torch_cuda:
            print(f"  {'torch lstsq (in process)':34} cuda   cuda not available: skipped")
        in_process = "gradsolve fit (in process)"
        gs_cpu, gs_cuda = walls.get((in_process, "cpu")), walls.get((in_process, "cuda"))
        pt_cuda = walls.get(("torch lstsq (in process)", "cuda"))
        print(f"  ratios (wall, in process): gradsolve cpu/cuda {ratio(gs_cpu, gs_cuda)};  "
              f"gradsolve cuda / torch cuda {ratio(gs_cuda, pt_cuda)} (above 1: PyTorch faster)")


# ----------------------------------------------------------------------------- (2) multistart


def multistart_solve(device, starts, steps, machine):
    """`gs.solve(..., starts=K)` as shipped, stopping tests on: (seconds, distinct solutions, how it ran)."""
    problem = gs.Problem.from_file(INTERSECTION)
    labels = []
    from gradsolve.solve.solver import merged_options, solve_spec

    warm = merged_options(problem.spec, {"optimizer": "adam", "starts": 64, "steps": 2, "device": device})
    solve_spec(problem.spec, warm)  # warm-up: CuPy compiles each kernel at its first call
    options = merged_options(problem.spec, {"optimizer": "adam", "starts": starts, "steps": steps, "device": device})
    machine.sync()
    start = time.perf_counter()
    result = solve_spec(problem.spec, options, on_start=lambda label, names: labels.append(label))
    machine.sync()
    elapsed = time.perf_counter() - start
    return elapsed, len(result.to_dict().get("solutions") or []), labels[0] if labels else ""


def multistart_batch(device, starts_array, steps, evaluator_kind, machine):
    """The batched loop on a fixed budget (every start runs every step): seconds."""
    spec = from_file(INTERSECTION)
    lowered = lower(spec, device=device)
    if evaluator_kind == "traced":
        evaluator = trace_problem(lowered)
    else:
        evaluator = EagerBatch(spec, lowered, starts_array.shape[0])
    # warm-up: CuPy compiles each kernel at its first call
    run_batch(evaluator, starts_array, SolveOptions(steps=2, tol=math.nan, atol=-1.0), method="adam", lr=0.1)
    options = SolveOptions(steps=steps, tol=math.nan, atol=-1.0)  # every stopping test compares false
    machine.sync()
    start = time.perf_counter()
    out = run_batch(evaluator, starts_array, options, method="adam", lr=0.1)
    machine.sync()
    elapsed = time.perf_counter() - start
    assert int(out["steps"].max()) == steps, "the fixed budget should run every step"
    return elapsed


def torch_residual_loss(torch, X):
    """Per-start loss of problems/intersection.txt: (x^2 + y^2 - 25)^2 + (x + y - 7)^2."""
    x, y = X[:, 0], X[:, 1]
    r1 = x * x + y * y - 25.0
    r2 = x + y - 7.0
    return r1 * r1 + r2 * r2


def check_torch_residuals(torch, starts_array):
    """The torch residuals are the problem's: their loss at the starts equals the traced one."""
    trace = trace_problem(lower(from_file(INTERSECTION)))
    want, _ = trace.batch_loss_grad(starts_array[:100])
    got = torch_residual_loss(torch, torch.from_numpy(starts_array[:100])).numpy()
    if not np.allclose(got, want, rtol=1e-12, atol=1e-12):
        raise AssertionError("the torch residuals do not match problems/intersection.txt")


def multistart_torch(device, starts_array, steps, machine):
    """PyTorch Adam (lr 0.1) on a (K, 2) tensor, every start every step: seconds."""
    torch = machine.torch

    def run(n, K=None):
        X = torch.tensor(starts_array[:K], dtype=torch.float64, device=device, requires_grad=True)
        opt = torch.optim.Adam([X], lr=0.1)
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            torch_residual_loss(torch, X).sum().backward()  # per-start losses are independent
            opt.step()
        return X.detach().cpu().numpy()

    run(2, 64)  # warm-up
    machine.sync()
    start = time.perf_counter()
    run(steps)
    machine.sync()
    return time.perf_counter() - start


def section_multistart(args, machine):
    K, steps = args.starts, args.steps
    print(f"\n(2) multistart of problems/intersection.txt: {K:,} starts x {steps} Adam steps (lr 0.1, float64)")
    starts_array = draw_starts(from_file(INTERSECTION), K, seed=0)
    print(f"  {'contender':44} {'device':6} {'seconds':>9} {'starts*steps/s':>15}  note")
    times = {}

    def row(name, device, seconds, note=""):
        times[(name, device)] = seconds
        print(f"  {name:44} {device:6} {seconds:9.3f} {K * steps / seconds:15.3e}  {note}", flush=True)

    for device in ("cpu", "cuda"):
        if device == "cuda" and not machine.cuda:
            print(f"  {'gradsolve (every contender)':44} cuda   cuda not available: skipped")
            continue
        out = guarded(f"gs.solve {device}", multistart_solve, device, K, steps, machine)
        if out is not None:
            seconds, found, how = out
            row("gs.solve, stopping tests on (as shipped)", device, seconds, f"{found} distinct solutions; {how}")
        for kind, name in (("traced", "gradsolve batch, traced array code"), ("eager", "gradsolve batch, engine")):
            seconds = guarded(f"{name} {device}", multistart_batch, device, starts_array, steps, kind, machine)
            if seconds is not None:
                row(name, device, seconds, "fixed budget")
    if machine.torch is None:
        print(f"  {'torch Adam on a (K, 2) tensor':44} -      PyTorch not installed: skipped")
    else:
        guarded("torch residuals check", check_torch_residuals, machine.torch, starts_array)
        for device in machine.torch_devices():
            seconds = guarded(f"torch Adam {device}", multistart_torch, device, starts_array, steps, machine)
            if seconds is not None:
                row("torch Adam on a (K, 2) tensor", device, seconds, "fixed budget, no stopping tests")
        if not machine.torch_cuda:
            print(f"  {'torch Adam on a (K, 2) tensor':44} cuda   cuda not available: skipped")
    traced = "gradsolve batch, traced array code"
    eager = "gradsolve batch, engine"
    torch_name = "torch Adam on a (K, 2) tensor"
    print(f"  ratios (time): traced cpu/cuda {ratio(times.get((traced, 'cpu')), times.get((traced, 'cuda')))};  "
          f"engine cpu/cuda {ratio(times.get((eager, 'cpu')), times.get((eager, 'cuda')))};  "
          f"traced cuda / torch cuda {ratio(times.get((traced, 'cuda')), times.get((torch_name, 'cuda')))};  "
          f"traced cpu / torch cpu {ratio(times.get((traced, 'cpu')), times.get((torch_name, 'cpu')))} "
          f"(above 1: PyTorch faster)")


# ----------------------------------------------------------------------------- (3) network step


def network_step_time(lib, device, dtype, sizes, machine, steps=10):
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
    machine.sync()
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    float(loss.item())  # waits for the device
    machine.sync()
    return (time.perf_counter() - start) / steps


def section_network(args, machine):
    sizes = tuple(args.net)
    print(f"\n(3) two-layer network step, (n, d_in, hidden, d_out) = {sizes}, float32, ms per step")
    for device in ("cpu", "cuda"):
        line = f"  {device:5}"
        if device == "cuda" and not machine.cuda:
            line += "  gradsolve: cuda not available: skipped"
            t = None
        else:
            t = guarded(f"gradsolve network {device}", network_step_time, gs, device, gs.float32, sizes, machine)
            line += f"  gradsolve {t * 1e3:9.2f}" if t is not None else "  gradsolve   failed"
        if machine.torch is None:
            line += "   pytorch not installed"
        elif device == "cuda" and not machine.torch_cuda:
            line += "   pytorch: cuda not available"
        else:
            tt = guarded(f"torch network {device}", network_step_time, machine.torch, device, machine.torch.float32,
                         sizes, machine)
            if tt is not None:
                line += f"   pytorch {tt * 1e3:9.2f}   gradsolve/pytorch {ratio(t, tt)}"
        print(line, flush=True)


# ----------------------------------------------------------------------------- main

SECTIONS = {"1": section_fit, "2": section_multistart, "3": section_network}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"small sizes for a smoke run: {QUICK} (explicit sizes below still apply)")
    parser.add_argument("--rows", type=int, help=f"rows of the fit (default {FULL['rows']:,})")
    parser.add_argument("--starts", type=int, help=f"multistart starts (default {FULL['starts']:,})")
    parser.add_argument("--steps", type=int, help=f"multistart Adam steps (default {FULL['steps']})")
    parser.add_argument("--net", type=int, nargs=4, metavar=("N", "D_IN", "HIDDEN", "D_OUT"),
                        help=f"network sizes (default {FULL['net']})")
    parser.add_argument("--sections", default="1,2,3", help="which sections to run, e.g. 2 or 1,3")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    for key, value in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    machine = Machine()
    print(machine.describe())
    print(f"sizes: rows {args.rows:,}, starts {args.starts:,}, steps {args.steps}, network {tuple(args.net)}"
          + ("  (--quick)" if args.quick else ""))
    for key in args.sections.split(","):
        section = SECTIONS.get(key.strip())
        if section is None:
            print(f"\nunknown section {key!r}: use 1, 2 and/or 3")
            continue
        try:
            section(args, machine)
        except Exception as exc:  # noqa: BLE001 - a broken section must not stop the others
            print(f"  section {key} FAILED: {type(exc).__name__}: {exc}")
            traceback.print_exc(limit=3)


if __name__ == "__main__":
    main()
