"""The entry points of a fit: ``fit`` (the Python API) and ``run_fit`` (after ``prepare_fit``; the CLI's way)."""
from __future__ import annotations

import math

import numpy as np

import gradsolve as gs
from gradsolve.problem.errors import ProblemError
from gradsolve.solve.fit.linear import run_linear
from gradsolve.solve.fit.task import FitTask, prepare_fit
from gradsolve.methods import FIRST_ORDER
from gradsolve.solve.options import SolveError, build_options, validate
from gradsolve.solve.stopping import time_limit

__all__ = ["fit", "run_fit"]


def fit(path, *, degree=None, model=None, x_columns=(), y_column=None, init=None, header=None, sigma=None,
        drop_invalid=False, robust_loss="squared", f_scale=1.0, predict=(), on_progress=None, every=1,
        weight_decay=None, **options):
    """Fit and return a Result: the Python face of `gradsolve fit` (options as keywords: optimizer=, steps=, ...).

    ``weight_decay`` (first-order optimizers only) defaults to 0, whatever the optimizer's own default: a
    decay changes the objective, which for a fit is the sum of squares.  It acts on the variables the
    optimizer moves (for a linear model, the orthogonal basis of the QR reduction).
    """
    task = prepare_fit(path, degree=degree, model=model, x_columns=x_columns, y_column=y_column, init=init,
                       seed=options.get("seed"), header=header, sigma=sigma, drop_invalid=drop_invalid,
                       robust_loss=robust_loss, f_scale=f_scale, predict=predict)
    if weight_decay is not None:
        if not (isinstance(weight_decay, (int, float)) and math.isfinite(weight_decay) and weight_decay >= 0):
            raise ProblemError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
        task.weight_decay = float(weight_decay)
    return run_fit(task, build_options(None, options), on_progress=on_progress, every=every)


def run_fit(task: FitTask, options, *, on_progress=None, every=1, on_start=None):
    """Solve the fit and return a Result with ``model``, ``statistics`` and ``fit`` in its extra fields."""
    validate(options)  # options built by hand, too, are refused before the data are read
    if task.weight_decay and options.optimizer not in FIRST_ORDER:
        raise SolveError(f"weight_decay applies to the first-order optimizers ({', '.join(FIRST_ORDER)}), "
                         f"not to {options.optimizer}")
    if options.device not in ("cpu",) and options.device != "auto":
        gs.backend.get_backend(gs.backend.resolve_device(options.device))  # DeviceError when unusable
    task.data.load()
    # Models are evaluated outside the solve loop too (the start from the data, the reduction, the
    # statistics, predictions): overflow or a log of a negative number there is a NaN or infinity the
    # fit checks for and reports, never a NumPy RuntimeWarning on stderr.
    with np.errstate(all="ignore"), time_limit(options.time_limit):
        if task.kind == "nonlinear":
            from gradsolve.solve.fit.nonlinear import run_nonlinear  # it loads sympy: a --degree fit never does

            return run_nonlinear(task, options, on_progress, every, on_start)
        return run_linear(task, options, on_progress, every, on_start)
