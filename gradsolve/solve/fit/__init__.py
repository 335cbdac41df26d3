"""Fitting models to data columns: `gradsolve fit` and `gs.fit`.

Two paths, chosen by the model's structure:

* **Linear in the parameters** (``--degree N``, or a ``--model`` that sympy
  shows to be linear in them; ``linear``): the data are reduced once, in
  chunks, by a tall-skinny QR (``tsqr``, in the bases of ``bases``) to a
  (p+1) x (p+1) factor; every optimizer then works in the orthogonal basis the
  QR gives (Hessian 2I, the target scaled to order 1), so each step costs
  O(p^2) whatever the number of rows; ``--optimizer auto`` solves directly from
  the R factor.  When the data can be read again (in memory, or a file), one
  refinement pass with residuals in double-double arithmetic wins the last
  digits.  A ``--degree`` fit never imports sympy.
* **Nonlinear**: residuals vectorized over all rows, Levenberg-Marquardt by
  default, with an exact Jacobian from the engine.  Without ``--init`` the
  start comes from the data: the parameters that enter linearly are solved by
  least squares for each point of a grid over the others, and the best point
  starts the run (``nonlinear``).

A robust loss (``huber``, ``soft_l1``, ``cauchy``: ``robust``) is minimized by
iteratively reweighted least squares (``irls``) over the full residuals.
``--sigma COL`` gives per-row standard deviations: weights 1/sigma^2, and the
standard errors are then absolute (otherwise scaled by the reduced chi-square).

The modules: ``task`` (the parsed fit and its data), ``api`` (``fit``, ``run_fit``), ``linear`` and
``nonlinear`` (the two paths), ``irls``, ``tsqr``, ``bases``, ``transfer``, ``columns`` (expressions over
columns), ``methods`` (the optimizer and its settings), ``statistics``, ``report`` (the Result), ``plot``.
"""
from gradsolve.solve.fit.api import fit, run_fit
from gradsolve.solve.fit.methods import PRECONDITIONED_LR, PRECONDITIONED_SETTINGS
from gradsolve.solve.fit.plot import plot_fit
from gradsolve.solve.fit.task import FitData, FitTask, polynomial_model, prepare_fit

# FitData, plot_fit and PRECONDITIONED_SETTINGS are imported from here too (outside __all__, as before)
__all__ = ["polynomial_model", "prepare_fit", "run_fit", "fit", "FitTask", "PRECONDITIONED_LR"]
