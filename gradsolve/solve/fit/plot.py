"""``--plot``: the data, the fitted curve and the residuals in one figure.

matplotlib (the [plot] extra) loads only when a figure is drawn.
"""
from __future__ import annotations

import textwrap

import numpy as np

from gradsolve.problem.errors import ProblemError, excerpt
from gradsolve.solve.fit.bases import PolynomialBasis
from gradsolve.solve.fit.columns import ColumnProgram

__all__ = ["plot_fit"]


def plot_fit(task, result, path: str) -> None:
    """Data, fitted curve and residuals in one figure (matplotlib: the [plot] extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ProblemError("--plot needs matplotlib: pip install 'gradsolve[plot]'") from None
    with np.errstate(all="ignore"):  # the curve may overflow off the data: matplotlib leaves such points out
        _draw(plt, task, result, path)


def _draw(plt, task, result, path: str) -> None:
    columns = task.data.columns if task.data.columns is not None else next(iter(task.data.raw_chunks()))
    xs, y, _ = task.transform(columns)
    n = len(y)
    keep = np.unique(np.linspace(0, n - 1, min(n, 20000)).astype(int)) if n else np.zeros(0, dtype=int)
    fitted = _model_values(task, result, [np.asarray(x)[keep] for x in xs])
    resid = np.asarray(y)[keep] - fitted
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=len(xs) == 1,
                                      gridspec_kw={"height_ratios": [3, 1]})
    if len(xs) == 1 or task.kind == "polynomial":
        x = np.asarray(xs[0])[keep]
        top.plot(x, np.asarray(y)[keep], ".", ms=4, alpha=0.7, zorder=3, label="data")
        grid = np.linspace(float(np.min(x)), float(np.max(x)), 400)
        top.plot(grid, _model_values(task, result, [grid]), "-", label="fit")
        bottom.plot(x, resid, ".", ms=4)
        bottom.set_xlabel(task.x_names[0])
    else:  # several predictors: the data against the fitted values, on the line y = fitted
        top.plot(fitted, np.asarray(y)[keep], ".", ms=4, alpha=0.7, zorder=3, label="data")
        ends = [float(np.nanmin(fitted)), float(np.nanmax(fitted))] if fitted.size else [0.0, 1.0]
        top.plot(ends, ends, "-", label="fit (y = fitted)")
        top.set_xlabel("fitted")
        bottom.plot(fitted, resid, ".", ms=4)
        bottom.set_xlabel("fitted")
    top.set_ylabel(task.y_text)
    top.set_title(textwrap.fill(excerpt(result.extra["model"], 300), 90), fontsize="small")
    top.legend()
    bottom.axhline(0.0, color="gray", lw=0.8)
    bottom.set_ylabel("residual")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=120)
    except OSError as exc:
        raise ProblemError(f"--plot: cannot write {excerpt(path)!r}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)


def _model_values(task, result, xs) -> np.ndarray:
    b = np.array([result.parameters[n] for n in task.params])
    if task.kind == "polynomial":
        return np.asarray(PolynomialBasis(task.degree).values(np, xs, b), dtype=np.float64)
    program = ColumnProgram([task.model_expr], task.model_columns, params=dict(zip(task.params, b.tolist())))
    (out,) = program(dict(zip(task.model_columns, xs)))
    return np.broadcast_to(np.asarray(out, dtype=np.float64), np.shape(xs[0]))
