"""Solver settings that cannot work with a problem, found before solving (``gradsolve check`` and the CLI).

The solver refuses some combinations only when it starts
(``gradsolve.solve.options.choose_method``): a method that needs residuals
(Levenberg-Marquardt) on a ``minimize`` loss and one without bounds (L-BFGS) on a
problem with bounds, as the optimizer table (``gradsolve.methods``) says.  This
module says the same up front, pointing at the ``optimizer:`` line of the
problem file, or at ``--optimizer`` when the command line chose the method.
"""

from __future__ import annotations

from gradsolve.methods import METHODS, NAMES

from .errors import Issue, ProblemError

__all__ = ["OPTIMIZERS", "solver_settings_problems", "check_solver_settings"]

#: Every optimizer name the solver accepts.
OPTIMIZERS = NAMES


def solver_settings_problems(spec, optimizer: str | None = None) -> list:
    """Issues with the optimizer that will run *spec*: *optimizer* (``--optimizer``) or the file's own.

    Returns a list of ``Issue``; empty when the settings can work.
    """
    if optimizer is not None:
        method, file, line, column, source_line = optimizer, "--optimizer", None, None, None
        label = str(optimizer)
    else:
        method = (spec.solver or {}).get("optimizer")
        if method is None:
            return []
        origin = (getattr(spec, "solver_origins", None) or {}).get("optimizer")
        file = origin.file if origin is not None else spec.path
        line = origin.line if origin is not None else None
        column = origin.column if origin is not None and line is not None else None
        source_line = origin.source_line if origin is not None else None
        label = f"optimizer {method}"
    method = str(method).lower()
    issues = []

    def add(message, hint):
        issues.append(Issue(message, file, line, column, hint, source_line))

    if method not in OPTIMIZERS:
        add(f"unknown optimizer {method!r}", f"choose one of {', '.join(OPTIMIZERS)}")
    elif method == "auto":
        pass  # the solver chooses a method that can run the problem
    elif METHODS[method].needs_residuals and spec.kind == "minimize":
        add(f"{label} needs equations or residuals; a 'minimize' loss has no residual vector",
            "use lbfgs or adam, or write the problem as 'residuals:' (the loss is then their sum of squares)")
    elif not METHODS[method].supports_bounds:
        bounded = [u.name for u in spec.unknowns if u.min is not None or u.max is not None]
        if bounded:
            add(f"{label} does not support bounds (min/max on {', '.join(bounded[:10])})",
                "use lm, adam or sgd, or remove the bounds")
    return issues


def check_solver_settings(spec, optimizer: str | None = None) -> None:
    """Raise ProblemError when the optimizer that will run *spec* cannot (see solver_settings_problems)."""
    issues = solver_settings_problems(spec, optimizer)
    if issues:
        raise ProblemError(issues=issues)
