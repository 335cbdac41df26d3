"""Fitting a model to data columns, as a residual problem: model(x; params) - y over every row.

This is the wiring the `fit` command needs; the fitting issue adds the linear
QR reduction, preconditioning, statistics and NIST conformance on top.
"""
from __future__ import annotations

import os

from gradsolve.problem.errors import ProblemError, excerpt


def polynomial_model(x: str, degree: int) -> str:
    """'c0 + c1*x + c2*x**2 ...' — c_k is the coefficient of x**k."""
    terms = ["c0"]
    for k in range(1, degree + 1):
        terms.append(f"c{k}*{x}" if k == 1 else f"c{k}*{x}**{k}")
    return " + ".join(terms)


def _pick(header, wanted, default_index, role, path):
    if wanted is None:
        if len(header) <= default_index:
            raise ProblemError(f"the data file has {len(header)} column(s); the {role} column defaults to column "
                               f"{default_index}: name it with -{role[0]}", file=path, line=1)
        return header[default_index]
    if wanted in header:
        return wanted
    if wanted.isdigit():
        index = int(wanted)
        if index < len(header):
            return header[index]
        raise ProblemError(f"-{role[0]} {index}: the data file has only {len(header)} columns (0-based)",
                           file=path, line=1)
    import difflib

    close = difflib.get_close_matches(wanted, header, n=1)
    raise ProblemError(f"the data file has no column {excerpt(wanted, 30)!r}", file=path, line=1,
                       hint=f"did you mean {close[0]!r}?" if close else "columns: " + ", ".join(header[:10]))


def fit_spec(path: str, *, degree=None, model=None, x_columns=(), y_column=None, init=None, seed=None):
    """A residual ProblemSpec for fitting `model` (or a polynomial of `degree`) to the columns of `path`."""
    from gradsolve.problem.data import read_columns, read_header
    from gradsolve.problem.grammar import Origin, is_valid_name
    from gradsolve.problem.spec import build_spec

    header = read_header(path)
    xs = [_pick(header, c, 0, "x", path) for c in x_columns] or [_pick(header, None, 0, "x", path)]
    y = _pick(header, y_column, 1, "y", path)
    for name in xs + [y]:
        if not is_valid_name(name):
            raise ProblemError(f"column {excerpt(name, 30)!r} is not usable as a name in a model", file=path, line=1,
                               hint="rename the column to letters, digits and underscores")
    if degree is not None and len(xs) != 1:
        raise ProblemError("--degree fits one predictor column: give one -x", file=path)
    data = read_columns(path, list(dict.fromkeys(xs + [y])))
    text = polynomial_model(xs[0], degree) if degree is not None else model
    residual = f"{text} - ({y})"
    origin = Origin("--model" if model is not None else "--degree", 1, 1, text)
    name = os.path.splitext(os.path.basename(path))[0] or "data"
    return build_spec(kind="residuals", expressions=[(residual, origin)], name=name, data=data, path=path,
                      init=init, seed=seed)
