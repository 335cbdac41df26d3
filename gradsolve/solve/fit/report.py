"""The Result of a fit: the fitted model, its statistics, predictions at --predict points.

sympy loads only for the predictions of a nonlinear model (a linear one evaluates its basis).
"""
from __future__ import annotations

import math

import numpy as np

import gradsolve as gs
from gradsolve.solve.fit.statistics import runaway_warning
from gradsolve.solve.result import Result

__all__ = ["fit_result"]


def fit_result(task, options, values, *, device, status, reason, method, steps, loss, gradient, stats, res,
               history, elapsed, notes, cov_K=None, basis=None, lowered=None, at_bounds=(), dtype=None, warnings=(),
               family=None):
    """The Result; ``device`` is where the data-sized work actually ran (never 'auto'), ``dtype`` the precision
    it ran in (default: the one asked for)."""
    equation = f"{task.model_text} - ({task.y_text})"
    residuals = [{"equation": equation, "count": int(res["n"]),
                  "rms": math.sqrt(res["sum_r2"] / res["n"]) if res["n"] else 0.0, "max": res["max"]}]
    extra = {"model": task.formula(values), "statistics": stats, "fit": notes}
    if task.predict:
        extra["predictions"] = _predictions(task, values, stats, cov_K, basis, lowered)
    if task.plot:
        extra["plot"] = task.plot
    runaway = runaway_warning(list(values), values, stats) if status == "converged" else None
    warnings = list(warnings) + ([runaway] if runaway else [])
    return Result(problem=task.name, status=status, stop_reason=reason, optimizer=method, steps=int(steps), loss=loss,
                  gradient_norm=gradient, parameters=values, residuals=residuals, solution_set=family,
                  seed=task.seed, device=str(device),
                  dtype=dtype or options.dtype, elapsed_s=elapsed, at_bounds=list(at_bounds),
                  warnings=list(task.warnings) + list(warnings),
                  loss_history=history, kind="residuals", extra=extra)


def _predictions(task, values, stats, K, basis, lowered):
    """Model values and their standard errors at --predict points: a few rows, on the host (NumPy)."""
    xp = np
    points = np.array(task.predict, dtype=np.float64)
    b = np.array([values[n] for n in task.params])
    s2 = None
    if stats["covariance"] == "ok":
        s2 = 1.0 if task.sigma_idx is not None else (stats["rss"] / stats["dof"] if stats["dof"] > 0 else None)
    if basis is not None:
        xs = [points[:, k] for k in range(points.shape[1])]
        yhat = np.asarray(basis.values(xp, xs, b), dtype=np.float64).reshape(-1)
        G = np.asarray(basis.rows(xp, xs), dtype=np.float64)
    else:
        import sympy

        from gradsolve.problem.lowering import compile_program

        params = [gs.tensor(values[n], requires_grad=True) for n in task.params]
        inputs = {sympy.Symbol(n, real=True): p for n, p in zip(task.params, params)}
        for k, name in enumerate(task.model_columns):
            inputs[sympy.Symbol(name, real=True)] = gs.tensor(points[:, k])
        program = compile_program([task.model_expr.xreplace({})], inputs)

        def fn(*ps):
            (out,) = program.run()
            return out * gs.ones(points.shape[0], dtype=gs.float64) if out.ndim == 0 else out

        with gs.no_grad():
            yhat = np.asarray(fn().numpy(), dtype=np.float64).reshape(-1)
        jac = gs.autograd.functional.jacobian(fn, params)
        G = np.stack([np.asarray(j.numpy(), dtype=np.float64).reshape(-1) for j in jac], axis=1)
    out = []
    for i, point in enumerate(points):
        se = None
        if s2 is not None and K is not None and K.size:
            se = float(math.sqrt(max(s2 * float(np.sum((G[i] @ K) ** 2)), 0.0)))
        names = task.x_names if len(task.x_names) == points.shape[1] else task.model_columns
        out.append({"x": dict(zip(names, point.tolist())), "y": float(yhat[i]), "stderr": se})
    return out
