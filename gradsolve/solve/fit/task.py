"""A fit, parsed and checked: its data columns, its model, its response, and how to read them.

sympy and the problem language load only for a ``--model`` or an expression response (and for a
model's formula): a ``--degree`` fit never imports sympy.
"""
from __future__ import annotations

import difflib
import importlib.util
import math
import os
import re
from dataclasses import dataclass, field

import numpy as np

from gradsolve.problem.errors import ProblemError, excerpt
from gradsolve.problem.table import open_table
from gradsolve.solve.fit.columns import ColumnProgram
from gradsolve.solve.fit.robust import LOSSES

__all__ = ["polynomial_model", "FitData", "FitTask", "prepare_fit"]

#: Files up to this size are read whole (then the data's range preconditions x and refinement runs
#: on the copy in memory); larger ones are streamed chunk by chunk.
IN_MEMORY_BYTES = 768 << 20
#: Rows per chunk of the in-memory reduction.
CHUNK_ROWS = 1 << 17


def polynomial_model(x: str, degree: int) -> str:
    """'c0 + c1*x + c2*x**2 ...' -- c_k is the coefficient of x**k."""
    terms = ["c0"]
    for k in range(1, degree + 1):
        terms.append(f"c{k}*{x}" if k == 1 else f"c{k}*{x}**{k}")
    return " + ".join(terms)


# ----------------------------------------------------------------------------- the data
class FitData:
    """The fit's columns: read whole (``in_memory``) or streamed; ``chunks()`` can be iterated again."""

    def __init__(self, table, read_idx, *, drop_invalid=False, in_memory=True):
        self.table = table
        self.read_idx = list(read_idx)
        self.drop_invalid = drop_invalid
        self.in_memory = in_memory
        self.columns = None  # {index: array} when in memory
        self.dropped = 0
        self.rows = 0

    def load(self):
        if self.in_memory and self.columns is None:
            arrays = self.table.read(self.read_idx, drop_invalid=self.drop_invalid)
            self.columns = dict(zip(self.read_idx, arrays))
            self.dropped = self.table.dropped
            self.rows = self.table.rows
            if self.rows == 0:
                raise ProblemError("the data has no rows" + (f" left ({self.dropped} dropped)" if self.dropped
                                                              else ""), file=self.table.label)

    def raw_chunks(self, rows=None):
        """Dicts {column index: array} of at most `rows` rows (CHUNK_ROWS; in memory) or one streamed batch."""
        rows = rows or CHUNK_ROWS
        if self.columns is not None:
            n = self.rows
            for start in range(0, n, rows):
                yield {i: a[start:start + rows] for i, a in self.columns.items()}
            return
        for arrays in self.table.batches(self.read_idx, drop_invalid=self.drop_invalid):
            yield dict(zip(self.read_idx, arrays))
        self.dropped = self.table.dropped
        self.rows = self.table.rows

    def all(self) -> dict:
        self.load()
        if self.columns is None:  # streamed data the nonlinear path needs whole
            parts = list(self.raw_chunks())
            self.columns = {i: np.concatenate([p[i] for p in parts]) for i in self.read_idx}
            self.rows = int(next(iter(self.columns.values())).shape[0]) if self.columns else 0
        return self.columns

    @property
    def reopenable(self) -> bool:
        return self.columns is not None or self.table.reopenable()


# ----------------------------------------------------------------------------- the task
@dataclass
class FitTask:
    """A parsed, checked fit: what `run_fit` needs."""

    name: str
    label: str
    kind: str  # "polynomial" | "linear" | "nonlinear"
    params: list
    data: FitData
    x_names: list  # predictor names (display, --predict order)
    x_idx: list
    y_text: str  # the response: a column name or an expression
    model_text: str  # the model as given (or the polynomial)
    degree: int | None = None
    model_expr: object = None  # sympy, model path only
    model_columns: list = field(default_factory=list)  # data names the model uses, in order
    name_to_idx: dict = field(default_factory=dict)
    y_idx: int | None = None
    y_eval: object = None  # ColumnProgram for an expression response
    sigma_idx: int | None = None
    init: dict = field(default_factory=dict)
    seed: int = 0
    robust_loss: str = "squared"
    f_scale: float = 1.0
    predict: list = field(default_factory=list)
    plot: str | None = None
    warnings: list = field(default_factory=list)
    linear_parts: object = None  # (f0, [f_j]) sympy, for a linear --model
    weight_decay: float | None = None  # first-order methods' weight decay: None means 0 (the sum of squares)

    # rows -> (xs, y, weights) -------------------------------------------------------
    def transform(self, raw: dict, offset: int = 0):
        if self.kind == "polynomial":
            xs = [raw[self.x_idx[0]]]
        else:
            xs = [raw[self.name_to_idx[n]] for n in self.model_columns]
        if self.y_eval is not None:
            with np.errstate(all="ignore"):  # a NaN or infinity is the error below, not a RuntimeWarning
                (y,) = self.y_eval({n: raw[self.name_to_idx[n]] for n in self.y_eval.names})
            y = np.broadcast_to(np.asarray(y, dtype=np.float64), xs[0].shape if xs else y.shape)
            bad = np.flatnonzero(~np.isfinite(y))
            if bad.size:
                raise ProblemError(f"row {offset + int(bad[0]) + 1}: the response -y {excerpt(self.y_text, 30)!r} "
                                   "is not a finite number there", file=self.label)
        else:
            y = raw[self.y_idx]
        weights = None
        if self.sigma_idx is not None:
            sigma = raw[self.sigma_idx]
            bad = np.flatnonzero(~(sigma > 0))
            if bad.size:
                raise ProblemError(f"row {offset + int(bad[0]) + 1}, column "
                                   f"{excerpt(self.data.table.names[self.sigma_idx], 30)!r}: --sigma must be "
                                   "positive (a standard deviation)", file=self.label)
            weights = 1.0 / (sigma * sigma)
        return xs, y, weights

    def chunks(self):
        offset = 0
        for raw in self.data.raw_chunks():
            n = int(next(iter(raw.values())).shape[0]) if raw else 0
            yield self.transform(raw, offset)
            offset += n

    def formula(self, values: dict) -> str:
        """The fitted model with the values put in."""
        if self.kind == "polynomial":
            x = self.x_names[0]
            terms = []
            for k, name in enumerate(self.params):
                v = values[name]
                power = "" if k == 0 else (f"*{x}" if k == 1 else f"*{x}**{k}")
                terms.append(f"{v:.15g}{power}")
            text = " + ".join(terms).replace("+ -", "- ")
        else:
            import sympy

            subs = {sympy.Symbol(n, real=True): sympy.Float(values[n], 15) for n in self.params
                    if values.get(n) is not None and math.isfinite(values[n])}
            text = sympy.sstr(self.model_expr.xreplace(subs))
        return f"{self.y_text} = {text}"


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _valid_names(names):
    """Column names usable in a model (the grammar's rule, without importing sympy for a --degree fit)."""
    return [n for n in names if _NAME.fullmatch(n) and not n.startswith("__") and len(n) <= 100]


def prepare_fit(path: str, *, degree=None, model=None, x_columns=(), y_column=None, init=None, seed=None,
                header=None, sigma=None, drop_invalid=False, robust_loss="squared", f_scale=1.0, predict=(),
                plot=None, stdin=None) -> FitTask:
    """Open the data, resolve the columns and the model; raise ProblemError on any mistake."""
    if (degree is None) == (model is None):
        raise ProblemError("fit needs exactly one of --degree N or --model EXPR")
    if robust_loss not in LOSSES:
        raise ProblemError(f"--robust-loss {robust_loss!r}: choose one of {', '.join(LOSSES)}")
    if not (f_scale > 0 and math.isfinite(f_scale)):
        raise ProblemError(f"--f-scale must be a positive number, got {f_scale!r}")
    if plot:
        if importlib.util.find_spec("matplotlib") is None:
            raise ProblemError("--plot needs matplotlib: pip install 'gradsolve[plot]'")
    table = open_table(path, header=header, stdin=stdin)
    label = table.label
    names = table.names
    x_idx = [table.index(str(c), "-x") for c in x_columns] if x_columns else []
    if degree is not None and len(x_idx) > 1:
        raise ProblemError("--degree fits one predictor column: give one -x", file=label)
    y_idx, y_eval, y_text = None, None, None
    if y_column is None:
        if len(names) < 2:
            raise ProblemError(f"the data has {len(names)} column(s); the response defaults to column 1 "
                               "(0-based): name it with -y", file=label, line=1)
        y_idx = 1 if (x_idx[:1] != [1]) else 0
        y_text = names[y_idx]
    elif str(y_column) in names or str(y_column).strip().isdigit():
        y_idx = table.index(str(y_column), "-y")
        y_text = names[y_idx]
    sigma_idx = table.index(str(sigma), "--sigma") if sigma is not None else None
    name = os.path.splitext(os.path.basename(path))[0] if path != "-" else "stdin"
    usable = _valid_names(names)
    task_init = dict(init or {})
    seed = 0 if seed is None else int(seed)

    y_names = []
    if y_idx is None:  # an expression of columns
        from gradsolve.problem.grammar import Origin, parse_expression

        parsed = parse_expression(str(y_column), Origin("-y", 1, 1, str(y_column)), shadow=frozenset(usable))
        unknown = sorted(parsed.names - set(usable))
        if unknown:
            close = difflib.get_close_matches(unknown[0], names, n=1)
            raise ProblemError(f"-y {excerpt(str(y_column), 40)!r} is neither a column nor an expression of columns "
                               f"(no column {', '.join(map(repr, unknown[:3]))})", file=label, line=1,
                               hint=f"did you mean {close[0]!r}?" if close else "columns: " + ", ".join(names[:10]))
        y_names = [n for n in usable if n in parsed.names]
        y_eval = ColumnProgram([parsed.expr], y_names)
        y_text = str(y_column)

    if degree is not None:
        x_idx = x_idx or [0]
        if y_idx is not None and y_idx == x_idx[0]:
            raise ProblemError("-x and -y name the same column", file=label)
        params = [f"c{k}" for k in range(degree + 1)]
        extra = [k for k in task_init if k not in params]
        if extra:
            raise ProblemError(f"--init {extra[0]}: a --degree {degree} fit has the coefficients "
                               f"{', '.join(params)}")
        read = list(dict.fromkeys(x_idx + ([y_idx] if y_idx is not None else [names.index(n) for n in y_names])
                                  + ([sigma_idx] if sigma_idx is not None else [])))
        data = FitData(table, read, drop_invalid=drop_invalid,
                       in_memory=table.data is not None or table.size <= IN_MEMORY_BYTES)
        x_names = [names[x_idx[0]] if names[x_idx[0]] in usable else "x"]
        task = FitTask(name, label, "polynomial", params, data, x_names, x_idx, y_text,
                       polynomial_model(x_names[0], degree), degree=degree,
                       name_to_idx={n: names.index(n) for n in y_names}, y_idx=y_idx, y_eval=y_eval,
                       sigma_idx=sigma_idx, init=task_init, seed=seed, robust_loss=robust_loss, f_scale=f_scale,
                       plot=plot)
        task.predict = _predict_points(predict, 1)
        return task

    # --model: the problem language; parameters are the free symbols that are not columns
    from gradsolve.problem.grammar import Origin, parse_expression
    from gradsolve.problem.spec import build_spec

    text = str(model)
    origin = Origin("--model", 1, 1, text)
    shadow = frozenset(usable) | frozenset(task_init)
    parsed = parse_expression(text, origin, shadow=shadow)
    columns_used = [n for n in usable if n in parsed.names and n not in task_init]
    if not columns_used:
        raise ProblemError(f"--model {excerpt(text, 40)!r} uses no column of the data",
                           hint="columns: " + ", ".join(names[:10]))
    if y_idx is not None and names[y_idx] in columns_used:
        raise ProblemError(f"--model uses the response column {names[y_idx]!r}", hint="pick the response with -y")
    placeholder = {n: np.zeros(1) for n in columns_used}
    spec = build_spec(kind="residuals", expressions=[(text, origin)], name=name, data=placeholder, path=label,
                      init=task_init, seed=seed)
    params = spec.unknown_names
    if not params:
        raise ProblemError(f"--model {excerpt(text, 40)!r} has no parameters to fit (every name is a column)")
    if not x_idx:
        x_idx = [names.index(n) for n in columns_used]
    x_names = [names[i] for i in x_idx]
    read = list(dict.fromkeys(x_idx + [names.index(n) for n in columns_used]
                              + ([y_idx] if y_idx is not None else [names.index(n) for n in y_names])
                              + ([sigma_idx] if sigma_idx is not None else [])))
    import sympy

    from gradsolve.problem.analysis import is_affine_in

    expr = spec.residuals[0]
    symbols = [sympy.Symbol(p, real=True) for p in params]
    linear = is_affine_in(expr, set(symbols))
    kind = "linear" if linear else "nonlinear"
    data = FitData(table, read, drop_invalid=drop_invalid,
                   in_memory=(not linear) or table.data is not None or table.size <= IN_MEMORY_BYTES)
    task = FitTask(name, label, kind, params, data, x_names, x_idx, y_text, text, model_expr=expr,
                   model_columns=columns_used, name_to_idx={n: names.index(n) for n in set(columns_used) | set(y_names)},
                   y_idx=y_idx, y_eval=y_eval, sigma_idx=sigma_idx, init=task_init, seed=seed,
                   robust_loss=robust_loss, f_scale=f_scale, plot=plot, warnings=list(spec.warnings))
    if linear:
        f0 = expr.xreplace({s: 0 for s in symbols})
        task.linear_parts = (f0, [sympy.diff(expr, s) for s in symbols])
    task.predict = _predict_points(predict, len(columns_used))
    return task


def _predict_points(values, k: int) -> list:
    points = []
    for text in values or ():
        parts = [p for p in str(text).replace(";", ",").split(",") if p.strip()]
        try:
            point = [float(p) for p in parts]
        except ValueError:
            raise ProblemError(f"--predict {excerpt(str(text), 30)!r}: not a number"
                               + (" list" if k > 1 else "")) from None
        if len(point) != k or not all(math.isfinite(v) for v in point):
            raise ProblemError(f"--predict {excerpt(str(text), 30)!r}: give {k} finite value(s)"
                               + (", comma-separated, one per predictor column" if k > 1 else ""))
        points.append(point)
    return points
