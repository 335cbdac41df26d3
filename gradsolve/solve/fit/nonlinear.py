"""The path of a model nonlinear in its parameters: full residuals, Levenberg-Marquardt by default.

Residuals are vectorized over all rows, with an exact Jacobian from the engine.  Without ``--init`` the
start comes from the data: the parameters that enter linearly are solved by least squares for each point
of a grid over the others, and the best point starts the run.  A converged Levenberg-Marquardt run is
polished by a second one at MINPACK-tight tolerances.
"""
from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import sympy

import gradsolve as gs
from gradsolve._tensor import wrap_array
from gradsolve.problem.analysis import is_identically_zero
from gradsolve.problem.errors import ProblemError
from gradsolve.problem.grammar import Origin
from gradsolve.problem.lowering import compile_program, lower
from gradsolve.problem.spec import build_spec
from gradsolve.solve.fit import irls
from gradsolve.solve.fit.methods import fit_device, fit_method, optimizer_point
from gradsolve.solve.fit.report import fit_result
from gradsolve.solve.fit.statistics import fit_statistics, jacobian_K, solution_family
from gradsolve.solve.fit.transfer import on_device
from gradsolve.solve.bounds import unbounded
from gradsolve.solve.loop import run
from gradsolve.solve.multistart import draw_starts, solutions_listed, solve_multistart

__all__ = ["run_nonlinear"]

#: Rows used to search for a starting point.
START_ROWS = 500
Y_NAME = "gsfit_y"
#: After Levenberg-Marquardt converges at --tol, a second run from there with this tolerance.
POLISH_TOL = 1e-15
POLISH_STEPS = 200


class _WeightedObjective:
    """The lowered residuals times per-row sqrt(weights), on the lowered problem's device."""

    def __init__(self, lowered, names, sw):
        self.lowered = lowered
        self.backend = gs.backend.get_backend(lowered.device)
        self.params = lowered.params
        self.names = names
        self.set_weights(sw)

    def set_weights(self, sw):
        """sqrt(weights): a host (NumPy) array, an array of the device's namespace, or None."""
        if sw is None:
            self._sw = None
        elif isinstance(sw, np.ndarray) or self.backend.is_numpy:
            self._sw = gs.tensor(np.asarray(sw, dtype=np.float64), device=self.backend.name)
        else:
            self._sw = wrap_array(sw, self.backend)  # already on the device

    def residuals(self):
        r = self.lowered.residuals()
        return r if self._sw is None else r * self._sw

    def loss(self):
        r = self.residuals()
        return (r * r).sum()


def run_nonlinear(task, options, on_progress, every, on_start):
    """Fit a model nonlinear in its parameters; the Result."""
    columns = task.data.all()
    xs, y, w = task.transform(columns)
    data = dict(zip(task.model_columns, xs))
    data[Y_NAME] = np.asarray(y, dtype=np.float64)
    text = f"({task.model_text}) - {Y_NAME}"
    spec = build_spec(kind="residuals", expressions=[(text, Origin("--model", 1, 1, text))], name=task.name,
                      data=data, path=task.label, init=task.init, seed=task.seed)
    start_values, start_note = _data_start(task, spec, xs, y, w)
    for unknown in spec.unknowns:
        unknown.init = float(start_values[unknown.name])
    device = fit_device(options)
    # the engine runs eagerly on `device` (a fit never traces, so nothing here is cpu-only)
    lowered = lower(spec, dtype=getattr(gs, options.dtype), device=device)
    xp = gs.backend.get_backend(device).xp
    names = spec.unknown_names
    method = fit_method(options, linear=False)
    if on_start is not None:
        on_start(irls.started_as(method, task.robust_loss), names)
    sw = None if w is None else np.sqrt(w)
    objective = _WeightedObjective(lowered, names, sw)
    t0 = time.perf_counter()
    point = optimizer_point(task, objective, method, reduced=False)
    solutions = None
    if options.starts > 1:
        outcome, solutions = _from_many_starts(task, spec, lowered, objective, options, method, start_values,
                                               (xs, y, w), on_progress, every)
    else:
        outcome = run(objective, options, method=method, on_progress=on_progress, every=every, point=point)
    steps = outcome.steps
    history = list(outcome.loss_history)
    reason = outcome.stop_reason
    if method == "lm" and outcome.status == "converged" and POLISH_TOL < options.tol:
        # polish: LM again from the solution with MINPACK-tight tolerances; the relative loss change
        # reaches 1e-12 well before the parameters have all the digits the data support
        polish = run(objective, dataclasses.replace(options, tol=POLISH_TOL, atol=0.0, steps=POLISH_STEPS),
                     method=method)
        if polish.status == "converged" and polish.loss <= outcome.loss:
            steps += polish.steps
            history.extend(polish.loss_history)
            outcome = dataclasses.replace(polish, steps=steps, loss_history=history)
    if task.robust_loss != "squared":
        # residuals and weights stay on the device between reweightings
        sw_dev = on_device(xp, sw) if sw is not None else None

        def residuals(values):  # the lowered problem is at `values`: where the last run left it
            with gs.no_grad():
                return xp.asarray(lowered.residuals()._data, dtype=xp.float64)

        def solve(robust_weights):
            nonlocal outcome, steps
            objective.set_weights(xp.sqrt(robust_weights) * sw_dev if sw is not None else xp.sqrt(robust_weights))
            outcome = run(objective, options, method=method, on_progress=None, every=every,
                          point=optimizer_point(task, objective, method, reduced=False))
            steps += outcome.steps
            history.extend(outcome.loss_history)
            return outcome.values.copy()

        _, reweightings = irls.reweight(task.robust_loss, task.f_scale, xp, values=outcome.values.copy(),
                                        residuals=residuals, sqrt_weights=sw_dev, solve=solve, tol=options.tol)
        reason = irls.stop_reason(outcome.stop_reason, task.robust_loss, reweightings)
        objective.set_weights(sw)
    elapsed = time.perf_counter() - t0
    values = dict(zip(names, map(float, outcome.values)))
    lowered.set_values(outcome.values)
    with gs.no_grad():
        r = lowered.residuals().numpy().astype(np.float64)
    rw = r * sw if sw is not None else r
    rss = float(rw @ rw)
    J = outcome.jacobian if (method == "lm" and outcome.jacobian is not None
                             and task.robust_loss == "squared") else None
    if J is None:
        jac = gs.autograd.functional.jacobian(objective.residuals, objective.params)
        J = np.stack([np.asarray(j.numpy(), dtype=np.float64).reshape(-1) for j in jac], axis=1)
    not_finite = None
    if np.all(np.isfinite(J)):
        K, rank, null = jacobian_K(J)
    else:  # a fit that diverged (NaN or infinity where it stopped): no Jacobian to take errors from
        K, rank, null = None, len(names), None
        not_finite = "the residuals' Jacobian is not finite at the reported point"
    wsum = float(np.sum(w)) if w is not None else float(len(y))
    mean = float(np.sum((w if w is not None else 1.0) * y) / wsum)
    tss = float(np.sum((w if w is not None else 1.0) * (y - mean) ** 2))
    stats = fit_statistics(names, K=K, rank=rank, null_space=null, rss=rss, sum_r2=float(r @ r), n=len(y), tss=tss,
                           weighted=w is not None, at_bounds=outcome.at_bounds, extra_reason=not_finite)
    res = {"rss": rss, "max": float(np.max(np.abs(r))) if r.size else 0.0, "n": len(y), "sum_r2": float(r @ r)}
    notes = {"path": "nonlinear: full residuals", "rows": len(y), "dropped": task.data.dropped, "refined": False,
             "refinement_change": None,
             "start": {"parameters": {n: start_values[n] for n in names}, "source": start_note}}
    result = fit_result(task, options, values, device=device, status=outcome.status, reason=reason,
                        method=irls.reported_as(method, task.robust_loss), steps=steps, loss=rss,
                        gradient=outcome.gradient_norm, stats=stats, res=res, history=history, elapsed=elapsed,
                        notes=notes, cov_K=K, lowered=lowered, at_bounds=outcome.at_bounds,
                        family=solution_family(names, rank, null) if outcome.status == "converged" else None)
    if solutions is not None:
        result.extra["solutions"] = solutions_listed(names, solutions)
        result.extra["starts"] = options.starts
    return result


def _from_many_starts(task, spec, lowered, objective, options, method, start_values, columns, on_progress, every):
    """`options.starts` runs of the fit, as puzzle's --starts: (the best outcome, the distinct solutions).

    The starts: the fit's own (from --init, or from the data), then, where --init gave every parameter, the
    start a fit without --init takes (the data's: the search that usually lands in the right basin), then
    draws around the first (multistart.draw_starts).  One after another through the single-start loop,
    which evaluates the fit's own (weighted) objective; the lowered problem holds the best point afterwards.
    """
    names = spec.unknown_names
    starts = draw_starts(spec, options.starts, options.seed)
    if task.init and all(n in task.init for n in names):
        data_start, _ = _data_start(dataclasses.replace(task, init={}), spec, *columns)
        starts[1] = [data_start[n] for n in names]
    lower, upper = unbounded(len(names))
    outcome, solutions, _ = solve_multistart(spec, lowered, objective, options, method=method, lower=lower,
                                             upper=upper, trace=None, how="eager", on_progress=on_progress,
                                             every=every, starts=starts, one_after_another=True)
    lowered.set_values(outcome.values)
    return outcome, solutions


def _linear_params(expr, symbols):
    """Parameters that enter the model linearly, jointly (greedy, in order)."""
    chosen = []
    for s in symbols:
        d = sympy.diff(expr, s)
        if not is_identically_zero(sympy.diff(d, s)):
            continue
        if all(is_identically_zero(sympy.diff(d, t)) for t in chosen):
            chosen.append(s)
    return chosen


def _data_start(task, spec, xs, y, w):
    """Starting values: --init where given; else from the data (see the module docstring)."""
    names = spec.unknown_names
    given = {n: float(task.init[n]) for n in names if n in task.init}
    if len(given) == len(names):
        return given, "--init"
    expr = task.model_expr
    symbols = {n: sympy.Symbol(n, real=True) for n in names}
    missing = [n for n in names if n not in given]
    lin = [s.name for s in _linear_params(expr, [symbols[n] for n in missing])]
    nonlin = [n for n in missing if n not in lin]
    n_rows = len(y)
    rows = np.unique(np.linspace(0, n_rows - 1, min(n_rows, START_ROWS)).astype(int))
    ys = np.asarray(y, dtype=np.float64)[rows]
    ws = None if w is None else np.asarray(w)[rows]
    magnitudes = [10.0 ** (k / 2.0) for k in range(-6, 7)]
    grid_values = [s * m for m in magnitudes for s in (1.0, -1.0)]
    rng = np.random.default_rng(task.seed)
    if not nonlin:
        candidates = np.zeros((1, 0))
    elif len(nonlin) <= 2:
        mesh = np.meshgrid(*[grid_values] * len(nonlin), indexing="ij")
        candidates = np.stack([m.reshape(-1) for m in mesh], axis=1)
    else:
        candidates = rng.choice(grid_values, size=(600, len(nonlin)))
    K = candidates.shape[0]
    inputs = {}
    for j, n in enumerate(nonlin):
        inputs[symbols[n]] = gs.tensor(candidates[:, j].reshape(K, 1))
    for n, v in given.items():
        inputs[symbols[n]] = gs.tensor(v)
    for name, column in zip(task.model_columns, xs):
        inputs[sympy.Symbol(name, real=True)] = gs.tensor(np.asarray(column, dtype=np.float64)[rows].reshape(1, -1))
    zero_lin = {symbols[n]: 0 for n in lin}
    exprs = [expr.xreplace(zero_lin)] + [sympy.diff(expr, symbols[n]) for n in lin]
    try:
        with np.errstate(all="ignore"), gs.no_grad():
            program = compile_program(exprs, inputs)
            outs = [np.broadcast_to(np.asarray(o.numpy() if hasattr(o, "numpy") else o, dtype=np.float64),
                                    (K, len(rows))) for o in program.run()]
            g0, G = outs[0], np.stack(outs[1:], axis=2) if lin else None
            target = ys[None, :] - g0
            sqw = np.sqrt(ws)[None, :] if ws is not None else 1.0
            if lin:
                Gw = G * (sqw[..., None] if ws is not None else 1.0)
                tw = target * sqw
                ok = np.all(np.isfinite(Gw), axis=(1, 2)) & np.all(np.isfinite(tw), axis=1)
                coef = np.full((K, len(lin)), np.nan)
                if ok.any():
                    coef[ok] = (np.linalg.pinv(Gw[ok]) @ tw[ok][..., None])[..., 0]
                resid = tw - np.einsum("knl,kl->kn", Gw, np.nan_to_num(coef))
            else:
                resid = target * sqw
                coef = np.zeros((K, 0))
            rss = np.sum(resid * resid, axis=1)
            rss[~np.isfinite(rss)] = np.inf
            if lin:
                rss[~np.all(np.isfinite(coef), axis=1)] = np.inf
        best = int(np.argmin(rss))
        if not math.isfinite(rss[best]):
            raise FloatingPointError
    except (FloatingPointError, ValueError, np.linalg.LinAlgError, ProblemError):
        start = dict(given)
        start.update({u.name: u.init for u in spec.unknowns if u.name not in given})
        return start, f"no usable start found on the data: random values from seed {task.seed}"
    start = dict(given)
    start.update({n: float(candidates[best, j]) for j, n in enumerate(nonlin)})
    start.update({n: float(coef[best, j]) for j, n in enumerate(lin)})
    how = []
    if nonlin:
        how.append(f"grid search over {', '.join(nonlin)} ({K} points)")
    if lin:
        how.append(f"{', '.join(lin)} by linear least squares")
    if given:
        how.append(f"{', '.join(given)} from --init")
    return start, "from the data: " + "; ".join(how) + f" on {len(rows)} rows"
