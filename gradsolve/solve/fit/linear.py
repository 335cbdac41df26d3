"""The path of a model linear in its parameters: reduce the data once, solve the reduced problem, refine.

The data are reduced in chunks by a tall-skinny QR (``tsqr``) to a (p+1) x (p+1) factor; every optimizer
then works in the orthogonal basis the QR gives (Hessian 2I, the target scaled to order 1), so each step
costs O(p^2) whatever the number of rows; ``--optimizer auto`` solves directly from the R factor.  When
the data can be read again, one refinement pass with residuals in double-double arithmetic wins the last
digits.  The whole pass is float64 whatever ``--dtype`` says.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

import gradsolve as gs
from gradsolve.problem.errors import ProblemError, excerpt
from gradsolve.solve.fit import irls, transfer, tsqr
from gradsolve.solve.fit.bases import ColumnBasis, NonFiniteColumn, PolynomialBasis, rounded
from gradsolve.solve.fit.columns import ColumnProgram
from gradsolve.solve.fit.methods import PRECONDITIONED_LR, fit_device, fit_method, optimizer_point
from gradsolve.solve.fit.report import fit_result
from gradsolve.solve.fit.statistics import fit_statistics, reduction_K, solution_family
from gradsolve.solve.loop import run
from gradsolve.solve.records import ProgressRow
from gradsolve.solve.verdicts import judge_fit_values

__all__ = ["run_linear"]


def _basis(task, xp, device="cpu"):
    """The basis of a linear fit; a --model's columns are evaluated by the engine on ``device`` (namespace xp)."""
    if task.kind == "polynomial":
        if task.data.columns is not None:
            x = task.data.columns[task.x_idx[0]]
            lo, hi = float(np.min(x)), float(np.max(x))
        else:
            first = next(iter(task.chunks()))
            lo, hi = float(np.min(first[0][0])), float(np.max(first[0][0]))
        return PolynomialBasis.for_range(task.degree, lo, hi)
    f0, fs = task.linear_parts
    exprs = ([f0] if f0 != 0 else []) + list(fs)
    has_f0 = f0 != 0
    programs = {}  # one compiled program per namespace: the device's for the data, NumPy's for --predict

    def evaluate(ns, xs):
        key = "cpu" if ns is np else device
        program = programs.get(key)
        if program is None:
            program = programs[key] = ColumnProgram(exprs, task.model_columns, device=key)
        outs = program.raw(dict(zip(task.model_columns, xs)))
        return (outs[0] if has_f0 else None), outs[1 if has_f0 else 0:]

    constant = next((j for j, f in enumerate(fs) if not f.free_symbols and f != 0), None)
    basis = ColumnBasis(evaluate, len(fs), constant)
    if task.data.columns is not None:
        xs = [task.data.columns[task.name_to_idx[n]] for n in task.model_columns]
    else:
        xs = next(iter(task.chunks()))[0]
    xs, _, _ = transfer.to_device(xp, xs)  # prepare evaluates the columns where the fit runs
    try:
        basis.prepare(xp, xs)
    except NonFiniteColumn as exc:
        raise _not_finite_term(task, fs[exc.column]) from None
    return basis


def _not_finite_term(task, term) -> ProblemError:
    """A term of a linear model (or, with ``term`` None, the reduced problem) that is not finite on the data."""
    given = f"--degree {task.degree}" if task.kind == "polynomial" else f"--model {excerpt(task.model_text, 40)!r}"
    if term is not None:
        return ProblemError(f"{given}: the term {excerpt(str(term), 40)!r} of the model is not a finite number on "
                            "some rows (an overflow, or a function outside its domain)", file=task.label,
                            hint="rescale the column, or fit a nonlinear form")
    return ProblemError(f"{given}: the least-squares problem is not finite: a term of the model"
                        + (" or a weight 1/sigma^2" if task.sigma_idx is not None else "")
                        + " overflows on some rows", file=task.label, hint="rescale the columns")


class _ReducedObjective:
    """|u - z|^2 in the orthogonal basis of the QR: what the optimizers see for a linear fit."""

    def __init__(self, z, u0, names):
        self.params = [gs.tensor(float(v), dtype=gs.float64, requires_grad=True) for v in u0]
        self.names = list(names)
        self._z = gs.tensor(np.asarray(z, dtype=np.float64))

    def residuals(self):
        return gs.stack(self.params) - self._z

    def loss(self):
        r = self.residuals()
        return (r * r).sum()


def _solve_reduced(task, red, options, method, b0, on_progress, every):
    """Minimize |R c - z|^2 + rho^2 with `method`; returns (c, outcome or None)."""
    if method == "qr":
        return tsqr.solve_reduced(red, red.z), None
    # start: the user's --init (in the user's basis), else zero
    if b0 is not None:
        c0 = np.linalg.solve(rounded(red.M), np.asarray(b0, dtype=np.float64)) / red.y_scale
        u0 = red.R @ c0
    else:
        u0 = np.zeros(red.p)
    objective = _ReducedObjective(red.z, u0, task.params)
    scale2 = red.y_scale * red.y_scale  # float * float overflows to inf; ** 2 raises OverflowError
    rho2 = red.rho * red.rho
    if on_progress is not None:
        Mf = rounded(red.M)

        def progress(row):
            u = np.array([row.values[n] for n in task.params])
            b = Mf @ tsqr.solve_reduced(red, u) * red.y_scale
            on_progress(dataclasses.replace(
                row, loss=scale2 * (row.loss + rho2),
                loss_change=None if row.loss_change is None else scale2 * row.loss_change,
                values=dict(zip(task.params, b.tolist()))))
    else:
        progress = None
    lr = options.lr if options.lr is not None else PRECONDITIONED_LR.get(method)
    # the loop's loss here is the excess |u - z|^2 (rho^2 is a constant): atol, ftol and gtol then
    # measure how far the optimizer is from the minimum, not how noisy the data are
    # the reduced problem is float64 whatever --dtype says (linear fits reduce in float64): so are its verdicts
    opts = dataclasses.replace(options, lr=lr, dtype="float64")
    outcome = run(objective, opts, method=method, on_progress=progress, every=every,
                  point=optimizer_point(task, objective, method, reduced=True))
    outcome.loss_history = [scale2 * (v + rho2) for v in outcome.loss_history]
    return tsqr.solve_reduced(red, outcome.values), outcome


def _reweighted(task, basis, xp, b, options, method):
    """Robust loss on a linear model: reweighted QR reductions over the full residuals until b settles;
    (b, reweightings, optimizer steps)."""
    steps = 0
    data = task.data.all()
    # the whole data on the device once; residuals and weights stay there between reweightings
    xs_all, y_all, w_all = transfer.to_device(xp, *task.transform(data))

    def solve(robust_weights):
        nonlocal steps
        w = w_all * robust_weights if w_all is not None else robust_weights
        chunks = [(xs_all, y_all, w)]
        red = tsqr.reduce_chunks(basis, xp, chunks)
        c, outcome = _solve_reduced(task, red, options, method, None, None, 1)
        steps += outcome.steps if outcome is not None else 1
        return tsqr.refine(basis, xp, red, chunks, tsqr.to_user(red, c))

    b, reweightings = irls.reweight(task.robust_loss, task.f_scale, xp, values=b,
                                    residuals=lambda values: basis.residual(xp, xs_all, y_all, values),
                                    sqrt_weights=xp.sqrt(w_all) if w_all is not None else None, solve=solve,
                                    tol=options.tol)
    return b, reweightings, steps


def run_linear(task, options, on_progress, every, on_start):
    """Fit a model linear in its parameters (a --degree or a linear --model); the Result."""
    device = fit_device(options)
    xp = gs.backend.get_backend(device).xp  # the data-sized work runs here; p x p algebra on the host
    start = time.perf_counter()
    basis = _basis(task, xp, device)
    method = fit_method(options, linear=True)
    if on_start is not None:
        on_start(irls.started_as(method, task.robust_loss), task.params)
    b0 = [task.init.get(n, 0.0) for n in task.params] if task.init else None
    red = tsqr.reduce_chunks(basis, xp, task.chunks())
    if not (np.all(np.isfinite(red.R)) and np.all(np.isfinite(red.z))):  # a streamed chunk after the first
        raise _not_finite_term(task, None)
    c, outcome = _solve_reduced(task, red, options, method, b0, on_progress, every)
    b = tsqr.to_user(red, c)
    status = outcome.status if outcome is not None else "converged"
    reason = outcome.stop_reason if outcome is not None else "solved directly from the R factor of the QR reduction"
    steps = outcome.steps if outcome is not None else 1
    history = list(outcome.loss_history) if outcome is not None else []
    # the same keys on both paths: a linear fit has no start from the data (null)
    notes = {"path": "linear: one-pass TSQR reduction", "rows": None, "dropped": None, "refined": False,
             "refinement_change": None, "start": None}
    if task.robust_loss != "squared":
        b, reweightings, irls_steps = _reweighted(task, basis, xp, b, options, method)
        steps += irls_steps
        reason = irls.stop_reason(reason, task.robust_loss, reweightings)
        notes["path"] = "linear: iteratively reweighted least squares over the full residuals"
        notes["refined"] = True  # every reweighted solve is refined (_reweighted)
    elif task.data.reopenable and status == "converged":
        before = b
        b = tsqr.refine(basis, xp, red, task.chunks(), b)
        notes["refined"] = True
        notes["refinement_change"] = float(np.max(np.abs(b - before) / np.maximum(np.abs(b), 1e-300)))
    values = dict(zip(task.params, map(float, b)))
    if task.data.reopenable:
        res = tsqr.residual_stats(basis, xp, task.chunks(), b)
    else:
        rss = (red.y_scale * red.rho) * (red.y_scale * red.rho)
        res = {"rss": rss, "max": None, "n": red.summary.n, "sum_r2": rss}
    if outcome is None and on_progress is not None:
        # the direct solve's one row shows the result's loss: the residuals of the refined coefficients (the
        # reduction's rho^2 before refinement is larger by the rounding the refinement removes)
        on_progress(ProgressRow(1, res["rss"], None, None, None, None, "lr", dict(values),
                                time.perf_counter() - start))
    n = res["n"]
    notes["rows"] = n
    notes["dropped"] = task.data.dropped
    status, reason = judge_fit_values(status, reason, values.values(), res["rss"])
    elapsed = time.perf_counter() - start
    K, rank, null = reduction_K(red)
    summary = red.summary
    weighted = task.sigma_idx is not None
    tss = summary.m2 if basis.has_constant else summary.m2 + summary.wsum * summary.mean * summary.mean
    stats = fit_statistics(task.params, K=K, rank=rank, null_space=null, rss=res["rss"], sum_r2=res["sum_r2"], n=n,
                           tss=tss, weighted=weighted)
    gradient = None
    loss = res["rss"]
    # the reduction, the solve and the refinement are float64 whatever --dtype says: a float32 QR keeps about
    # 7 digits, and the coefficients' digits are what the fit is for (the pass is chunked, so memory is not
    # what float32 would save); the result names the precision used
    warnings = [] if options.dtype == "float64" else [
        f"--dtype: warning: linear fits reduce in float64; --dtype {options.dtype} applies to nonlinear models"]
    return fit_result(task, options, values, device=device, status=status, reason=reason,
                      method=irls.reported_as(method, task.robust_loss), steps=steps, loss=loss,
                      gradient=gradient, stats=stats, res=res, history=history, elapsed=elapsed, notes=notes,
                      cov_K=K, basis=basis, dtype="float64", warnings=warnings,
                      family=solution_family(task.params, rank, null) if status == "converged" else None)
