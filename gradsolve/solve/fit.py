"""Fitting models to data columns: `gradsolve fit` and `gs.fit`.

Two paths, chosen by the model's structure:

* **Linear in the parameters** (``--degree N``, or a ``--model`` that sympy
  shows to be linear in them): the data are reduced once, in chunks, by a
  tall-skinny QR (``gradsolve.solve.linear``) to a (p+1) x (p+1) factor; every
  optimizer then works in the orthogonal basis the QR gives (Hessian 2I, the
  target scaled to order 1), so each step costs O(p^2) whatever the number of
  rows; ``--optimizer auto`` solves directly from the R factor.  When the data
  can be read again (in memory, or a file), one refinement pass with residuals
  in double-double arithmetic wins the last digits.  A ``--degree`` fit never
  imports sympy.
* **Nonlinear**: residuals vectorized over all rows, Levenberg-Marquardt by
  default, with an exact Jacobian from the engine.  Without ``--init`` the
  start comes from the data: the parameters that enter linearly are solved by
  least squares for each point of a grid over the others, and the best point
  starts the run.

A robust loss (``huber``, ``soft_l1``, ``cauchy``) is minimized by iteratively
reweighted least squares (``gradsolve.solve.robust``) over the full residuals.
``--sigma COL`` gives per-row standard deviations: weights 1/sigma^2, and the
standard errors are then absolute (otherwise scaled by the reduced chi-square).
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import textwrap
import time
from dataclasses import dataclass, field

import numpy as np

from gradsolve.problem.errors import ProblemError, excerpt

__all__ = ["polynomial_model", "prepare_fit", "run_fit", "fit", "FitTask", "PRECONDITIONED_LR"]

#: Learning rates for the preconditioned linear problem (Hessian 2I, |z| = 1): the steps a method
#: takes there are of order lr, so these reach the minimum in tens to hundreds of steps; SGD uses
#: 1/L = 1/2 (one step). The plateau halving of the solve loop then settles each on the minimum.
#: Adadelta: see PRECONDITIONED_SETTINGS; there its step is lr * g, and 0.5 is the Newton step 1/2.
PRECONDITIONED_LR = {"adam": 0.1, "adamw": 0.1, "nadam": 0.1, "rmsprop": 0.01, "adagrad": 0.5, "adadelta": 0.5,
                     "lbfgs": 1.0}
#: Hyperparameters other than the rate for the preconditioned linear problem.
#:
#: * Adadelta's step is lr * sqrt(acc_delta + eps) / sqrt(acc_grad + eps) * g.  Once both running
#:   averages are far below eps the ratio is 1 and the method is gradient descent with rate lr: on the
#:   Hessian 2I the error maps to (1 - 2 lr) times itself, so lr = 1 (the general default) only flips
#:   its sign (the loss freezes and the run stalls unless the plateau halving happens to fire first),
#:   while lr = 0.5 is the Newton step.  Far above eps the first steps are about sqrt(eps) long and
#:   grow slowly (hundreds of steps from |z| = 1 with eps = 1e-6).  Adadelta is unchanged by scaling
#:   the target by s and eps by s^2, so eps = 1e4 on the |z| = 1 problem is the target scaled to
#:   |z| = 1e-5, far inside sqrt(1e-6): the ratio stays within 1e-4 of 1 for any data and the method
#:   converges in a few steps, while the stopping tests keep the scale of the other optimizers.
#: * Weight decay (AdamW's 1e-2) adds a pull toward 0 in the orthogonal basis: it changes the
#:   objective, which for a fit is the sum of squares, so it is 0 unless the caller asks for it.
PRECONDITIONED_SETTINGS = {"adadelta": {"eps": 1e4}}
#: Files up to this size are read whole (then the data's range preconditions x and refinement runs
#: on the copy in memory); larger ones are streamed chunk by chunk.
IN_MEMORY_BYTES = 768 << 20
#: Rows per chunk of the in-memory reduction.
CHUNK_ROWS = 1 << 17
#: Rows used to search for a starting point.
START_ROWS = 500
Y_NAME = "gsfit_y"
#: After Levenberg-Marquardt converges at --tol, a second run from there with this tolerance.
POLISH_TOL = 1e-15
POLISH_STEPS = 200


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


class _Bound:
    """Expressions over data columns compiled once; evaluated on any chunk by rebinding the inputs.

    The program lives on ``device``: ``__call__`` takes and returns host (NumPy) arrays, ``raw`` takes and
    returns arrays of that device's namespace (no transfer).
    """

    def __init__(self, expressions, names, params=None, device="cpu"):
        import sympy

        import gradsolve as gs
        from gradsolve.problem.lowering import compile_program

        self._gs = gs
        self.backend = gs.backend.get_backend(device)
        self.device = self.backend.name
        self.names = list(names)
        self._placeholders = {n: gs.tensor(np.zeros(1), device=self.device) for n in self.names}
        inputs = {sympy.Symbol(n, real=True): t for n, t in self._placeholders.items()}
        for name, value in (params or {}).items():
            inputs[sympy.Symbol(name, real=True)] = value if hasattr(value, "shape") else gs.tensor(
                float(value), device=self.device)
        self.program = compile_program(expressions, inputs, device=self.device)
        self._slot = {n: next(i for i, leaf in enumerate(self.program.leaves) if leaf is t)
                      for n, t in self._placeholders.items() if any(leaf is t for leaf in self.program.leaves)}

    def _run(self, arrays: dict, wrap):
        gs = self._gs
        for name, slot in self._slot.items():
            value = arrays[name]
            self.program.leaves[slot] = value if isinstance(value, gs.Tensor) else wrap(value)
        with gs.no_grad():
            return self.program.run()

    def __call__(self, arrays: dict):
        """Host arrays in, host float64 arrays out."""
        backend = self.backend

        def wrap(value):
            host = np.ascontiguousarray(value, dtype=np.float64)
            return self._gs.from_numpy(host) if backend.is_numpy else self._gs.tensor(
                host, dtype=self._gs.float64, device=self.device)

        outs = self._run(arrays, wrap)
        return [o.numpy() if isinstance(o, self._gs.Tensor) else np.asarray(o, dtype=np.float64) for o in outs]

    def raw(self, arrays: dict):
        """Arrays of the device's namespace in and out (0-d for an output that is a constant)."""
        from gradsolve._tensor import wrap_array as _wrap

        backend = self.backend
        if backend.is_numpy:
            outs = self._run(arrays, lambda v: self._gs.from_numpy(np.ascontiguousarray(v, dtype=np.float64)))
        else:
            # an array of the device is taken as it is (no copy, no transfer); a host one crosses over
            outs = self._run(arrays, lambda v: _wrap(backend.from_numpy(np.ascontiguousarray(v, dtype=np.float64))
                                                     if isinstance(v, np.ndarray) else v, backend))
        xp = backend.xp
        return [o._data if isinstance(o, self._gs.Tensor) else xp.asarray(float(o), dtype=xp.float64)
                for o in outs]


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
    y_eval: object = None  # _Bound for an expression response
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
    from gradsolve.problem.table import open_table
    from gradsolve.solve.robust import LOSSES

    if (degree is None) == (model is None):
        raise ProblemError("fit needs exactly one of --degree N or --model EXPR")
    if robust_loss not in LOSSES:
        raise ProblemError(f"--robust-loss {robust_loss!r}: choose one of {', '.join(LOSSES)}")
    if not (f_scale > 0 and math.isfinite(f_scale)):
        raise ProblemError(f"--f-scale must be a positive number, got {f_scale!r}")
    if plot:
        import importlib.util

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
            import difflib

            close = difflib.get_close_matches(unknown[0], names, n=1)
            raise ProblemError(f"-y {excerpt(str(y_column), 40)!r} is neither a column nor an expression of columns "
                               f"(no column {', '.join(map(repr, unknown[:3]))})", file=label, line=1,
                               hint=f"did you mean {close[0]!r}?" if close else "columns: " + ", ".join(names[:10]))
        y_names = [n for n in usable if n in parsed.names]
        y_eval = _Bound([parsed.expr], y_names)
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

    from gradsolve.problem.analysis import _affine_in

    expr = spec.residuals[0]
    symbols = [sympy.Symbol(p, real=True) for p in params]
    linear = _affine_in(expr, set(symbols))
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


# ----------------------------------------------------------------------------- solving
def fit(path, *, degree=None, model=None, x_columns=(), y_column=None, init=None, header=None, sigma=None,
        drop_invalid=False, robust_loss="squared", f_scale=1.0, predict=(), on_progress=None, every=1,
        weight_decay=None, **options):
    """Fit and return a Result: the Python face of `gradsolve fit` (options as keywords: optimizer=, steps=, ...).

    ``weight_decay`` (first-order optimizers only) defaults to 0, whatever the optimizer's own default: a
    decay changes the objective, which for a fit is the sum of squares.  It acts on the variables the
    optimizer moves (for a linear model, the orthogonal basis of the QR reduction).
    """
    from gradsolve.solve.loop import SolveOptions

    task = prepare_fit(path, degree=degree, model=model, x_columns=x_columns, y_column=y_column, init=init,
                       seed=options.get("seed"), header=header, sigma=sigma, drop_invalid=drop_invalid,
                       robust_loss=robust_loss, f_scale=f_scale, predict=predict)
    if weight_decay is not None:
        if not (isinstance(weight_decay, (int, float)) and math.isfinite(weight_decay) and weight_decay >= 0):
            raise ProblemError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
        task.weight_decay = float(weight_decay)
    opts = SolveOptions()
    for key, value in options.items():
        if value is not None:
            setattr(opts, key, value)
    return run_fit(task, opts, on_progress=on_progress, every=every)


def run_fit(task: FitTask, options, *, on_progress=None, every=1, on_start=None):
    """Solve the fit and return a Result with ``model``, ``statistics`` and ``fit`` in its extra fields."""
    from gradsolve.solve.loop import FIRST_ORDER, METHODS, SolveError

    if options.optimizer not in METHODS:
        raise SolveError(f"unknown optimizer {options.optimizer!r}: choose one of {', '.join(METHODS)}")
    if task.weight_decay and options.optimizer not in FIRST_ORDER:
        raise SolveError(f"weight_decay applies to the first-order optimizers ({', '.join(FIRST_ORDER)}), "
                         f"not to {options.optimizer}")
    if options.device not in ("cpu",) and options.device != "auto":
        import gradsolve as gs

        gs.backend.get_backend(gs.backend.resolve_device(options.device))  # DeviceError when unusable
    task.data.load()
    # Models are evaluated outside the solve loop too (the start from the data, the reduction, the
    # statistics, predictions): overflow or a log of a negative number there is a NaN or infinity the
    # fit checks for and reports, never a NumPy RuntimeWarning on stderr.
    with np.errstate(all="ignore"):
        if task.kind == "nonlinear":
            return _run_nonlinear(task, options, on_progress, every, on_start)
        return _run_linear(task, options, on_progress, every, on_start)


def _fit_device(options) -> str:
    """The device the fit runs on: 'auto' resolved (cuda when usable, else cpu); DeviceError when unusable."""
    import gradsolve as gs

    device = gs.backend.resolve_device(options.device)
    return gs.backend.get_backend(device).name


def _basis(task, xp, device="cpu"):
    """The basis of a linear fit; a --model's columns are evaluated by the engine on ``device`` (namespace xp)."""
    from gradsolve.solve import linear

    if task.kind == "polynomial":
        if task.data.columns is not None:
            x = task.data.columns[task.x_idx[0]]
            lo, hi = float(np.min(x)), float(np.max(x))
        else:
            first = next(iter(task.chunks()))
            lo, hi = float(np.min(first[0][0])), float(np.max(first[0][0]))
        return linear.PolynomialBasis.for_range(task.degree, lo, hi)
    f0, fs = task.linear_parts
    exprs = ([f0] if f0 != 0 else []) + list(fs)
    has_f0 = f0 != 0
    bounds = {}  # one compiled program per namespace: the device's for the data, NumPy's for --predict

    def evaluate(ns, xs):
        key = "cpu" if ns is np else device
        bound = bounds.get(key)
        if bound is None:
            bound = bounds[key] = _Bound(exprs, task.model_columns, device=key)
        outs = bound.raw(dict(zip(task.model_columns, xs)))
        return (outs[0] if has_f0 else None), outs[1 if has_f0 else 0:]

    constant = next((j for j, f in enumerate(fs) if not f.free_symbols and f != 0), None)
    basis = linear.ColumnBasis(evaluate, len(fs), constant)
    if task.data.columns is not None:
        xs = [task.data.columns[task.name_to_idx[n]] for n in task.model_columns]
    else:
        xs = next(iter(task.chunks()))[0]
    xs, _, _ = linear.to_device(xp, xs)  # prepare evaluates the columns where the fit runs
    try:
        basis.prepare(xp, xs)
    except linear.NonFiniteColumn as exc:
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
        import gradsolve as gs

        self._gs = gs
        self.params = [gs.tensor(float(v), dtype=gs.float64, requires_grad=True) for v in u0]
        self.names = list(names)
        self._z = gs.tensor(np.asarray(z, dtype=np.float64))

    def residuals(self):
        return self._gs.stack(self.params) - self._z

    def loss(self):
        r = self.residuals()
        return (r * r).sum()


class _GroupPoint:
    """The solve loop's eager point, except that the optimizer is built on one parameter group with
    its own hyperparameters (``settings``), which override the optimizer's defaults (as PyTorch's
    parameter groups do).  ``params`` is what the loop hands the optimizer; the rest is the eager point's."""

    def __init__(self, objective, settings: dict):
        from gradsolve.solve.loop import EagerPoint

        self._eager = EagerPoint(objective)
        self.params = [dict(settings, params=list(objective.params))]

    def __getattr__(self, name):
        return getattr(self._eager, name)


def _optimizer_point(task, objective, method, *, reduced: bool):
    """What the loop moves for `method`: None (its default point), or a `_GroupPoint` with the fit's settings:
    weight decay 0 unless the caller gave one, and PRECONDITIONED_SETTINGS on the reduced linear problem."""
    from gradsolve.solve.loop import FIRST_ORDER

    if method not in FIRST_ORDER:
        return None
    settings = dict(PRECONDITIONED_SETTINGS.get(method, {})) if reduced else {}
    settings["weight_decay"] = 0.0 if task.weight_decay is None else task.weight_decay
    return _GroupPoint(objective, settings)


def _solve_reduced(task, red, options, method, b0, on_progress, every, quiet_rows=False):
    """Minimize |R c - z|^2 + rho^2 with `method`; returns (c, outcome or None)."""
    from gradsolve.solve import linear
    from gradsolve.solve.loop import run

    if method == "qr":
        return linear.solve_reduced(red, red.z), None
    # start: the user's --init (in the user's basis), else zero
    if b0 is not None:
        Mf = np.array([[float(v) for v in row] for row in red.M])
        c0 = np.linalg.solve(Mf, np.asarray(b0, dtype=np.float64)) / red.y_scale
        u0 = red.R @ c0
    else:
        u0 = np.zeros(red.p)
    objective = _ReducedObjective(red.z, u0, task.params)
    scale2 = red.y_scale * red.y_scale  # float * float overflows to inf; ** 2 raises OverflowError
    rho2 = red.rho * red.rho
    if on_progress is not None and not quiet_rows:
        Mf = np.array([[float(v) for v in row] for row in red.M])

        def progress(row):
            u = np.array([row.values[n] for n in task.params])
            b = Mf @ linear.solve_reduced(red, u) * red.y_scale
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
                  point=_optimizer_point(task, objective, method, reduced=True))
    outcome.loss_history = [scale2 * (v + rho2) for v in outcome.loss_history]
    return linear.solve_reduced(red, outcome.values), outcome


def _choose(options, *, linear: bool) -> str:
    from gradsolve.solve.loop import choose_method

    if options.optimizer == "auto":
        return "qr" if linear else "lm"
    return choose_method(options.optimizer, has_residuals=True, smooth=True, bounded=False)


def _run_linear(task, options, on_progress, every, on_start):
    import gradsolve as gs
    from gradsolve.solve import linear

    device = _fit_device(options)
    xp = gs.backend.get_backend(device).xp  # the data-sized work runs here; p x p algebra on the host
    start = time.perf_counter()
    basis = _basis(task, xp, device)
    method = _choose(options, linear=True)
    if on_start is not None:
        on_start(method if task.robust_loss == "squared" else f"irls ({method})", task.params)
    b0 = [task.init.get(n, 0.0) for n in task.params] if task.init else None
    red = linear.reduce_chunks(basis, xp, task.chunks())
    if not (np.all(np.isfinite(red.R)) and np.all(np.isfinite(red.z))):  # a streamed chunk after the first
        raise _not_finite_term(task, None)
    c, outcome = _solve_reduced(task, red, options, method, b0, on_progress, every)
    b = linear.to_user(red, c)
    status = outcome.status if outcome is not None else "converged"
    reason = outcome.stop_reason if outcome is not None else "solved directly from the R factor of the QR reduction"
    steps = outcome.steps if outcome is not None else 1
    history = list(outcome.loss_history) if outcome is not None else []
    # the same keys on both paths: a linear fit has no start from the data (null)
    notes = {"path": "linear: one-pass TSQR reduction", "rows": None, "dropped": None, "refined": False,
             "refinement_change": None, "start": None}
    irls_iterations = 0
    if task.robust_loss != "squared":
        b, irls_iterations, steps_irls = _irls_linear(task, basis, xp, b, options, method)
        steps += steps_irls
        reason = f"{reason}; robust {task.robust_loss} loss by IRLS ({irls_iterations} reweightings)"
        notes["path"] = "linear: iteratively reweighted least squares over the full residuals"
        notes["refined"] = True  # every reweighted solve is refined (_irls_linear)
    elif task.data.reopenable and status == "converged":
        before = b
        b = linear.refine(basis, xp, red, task.chunks(), b)
        notes["refined"] = True
        notes["refinement_change"] = float(np.max(np.abs(b - before) / np.maximum(np.abs(b), 1e-300)))
    values = dict(zip(task.params, map(float, b)))
    if task.data.reopenable:
        res = linear.residual_stats(basis, xp, task.chunks(), b)
    else:
        rss = (red.y_scale * red.rho) * (red.y_scale * red.rho)
        res = {"rss": rss, "max": None, "n": red.summary.n, "sum_r2": rss}
    if outcome is None and on_progress is not None:
        from gradsolve.solve.loop import ProgressRow

        # the direct solve's one row shows the result's loss: the residuals of the refined coefficients (the
        # reduction's rho^2 before refinement is larger by the rounding the refinement removes)
        on_progress(ProgressRow(1, res["rss"], None, None, None, None, "lr", dict(values),
                                time.perf_counter() - start))
    n = res["n"]
    notes["rows"] = n
    notes["dropped"] = task.data.dropped
    if not (all(math.isfinite(v) for v in values.values()) and math.isfinite(res["rss"])):
        # a "converged" fit must have a finite answer and loss to show: squares of residuals
        # near 1e154 and beyond overflow float64
        status = "diverged"
        reason = ("the coefficients or the residual sum of squares overflow float64 (values near 1e154 or "
                  "beyond square to infinity): rescale the data, e.g. -y 'y/1e100'")
    elapsed = time.perf_counter() - start
    # statistics: Cov(b) = s2 M R^-1 R^-T M^T (R of the weighted, preconditioned basis)
    rank, U, s, Vt = linear.rank_of(red.R)
    if rank == red.p:
        Rinv = np.stack([linear.back_substitute(red.R, e) for e in np.eye(red.p)], axis=1)
        null = None
    else:
        Rinv = Vt[:rank].T / s[:rank] @ U[:, :rank].T
        null_c = Vt[rank:]
        Mf = np.array([[float(v) for v in row] for row in red.M])
        null = np.array([v / np.linalg.norm(v) for v in (Mf @ null_c.T).T])
    K = linear.exact_product(red.M, Rinv)
    summary = red.summary
    weighted = task.sigma_idx is not None
    tss = summary.m2 if basis.has_constant else summary.m2 + summary.wsum * summary.mean * summary.mean
    from gradsolve.solve.statistics import fit_statistics

    stats = fit_statistics(task.params, K=K, rank=rank, null_space=null, rss=res["rss"], sum_r2=res["sum_r2"], n=n,
                           tss=tss, weighted=weighted)
    gradient = None
    loss = res["rss"]
    # the reduction, the solve and the refinement are float64 whatever --dtype says: a float32 QR keeps about
    # 7 digits, and the coefficients' digits are what the fit is for (the pass is chunked, so memory is not
    # what float32 would save); the result names the precision used
    warnings = [] if options.dtype == "float64" else [
        f"--dtype: warning: linear fits reduce in float64; --dtype {options.dtype} applies to nonlinear models"]
    return _result(task, options, values, device=device, status=status, reason=reason,
                   method=method if task.robust_loss == "squared" else "irls", steps=steps, loss=loss,
                   gradient=gradient, stats=stats, res=res, history=history, elapsed=elapsed, notes=notes, cov_K=K,
                   basis=basis, dtype="float64", warnings=warnings)


def _irls_linear(task, basis, xp, b, options, method, max_iter=100):
    """Robust loss on a linear model: reweighted QR reductions over the full residuals until b settles."""
    from gradsolve.solve import linear, robust

    steps = 0
    data = task.data.all()
    # the whole data on the device once; residuals and weights stay there between reweightings
    xs_all, y_all, w_all = linear.to_device(xp, *task.transform(data))
    for it in range(1, max_iter + 1):
        r = basis.residual(xp, xs_all, y_all, b)
        scaled = r * xp.sqrt(w_all) if w_all is not None else r
        rw = robust.weights(task.robust_loss, scaled, task.f_scale, xp=xp)
        w = w_all * rw if w_all is not None else rw
        chunks = [(xs_all, y_all, w)]
        red = linear.reduce_chunks(basis, xp, chunks)
        c, outcome = _solve_reduced(task, red, options, method, None, None, 1, quiet_rows=True)
        steps += outcome.steps if outcome is not None else 1
        b_new = linear.refine(basis, xp, red, chunks, linear.to_user(red, c))
        change = float(np.max(np.abs(b_new - b) / np.maximum(np.abs(b_new), 1e-300)))
        b = b_new
        if change <= max(options.tol, 1e-14) * 100:
            break
    return b, it, steps


# ----------------------------------------------------------------------------- nonlinear
class _WeightedObjective:
    """The lowered residuals times per-row sqrt(weights), on the lowered problem's device."""

    def __init__(self, lowered, names, sw):
        import gradsolve as gs

        self._gs = gs
        self.lowered = lowered
        self.backend = gs.backend.get_backend(lowered.device)
        self.params = lowered.params
        self.names = names
        self.set_weights(sw)

    def set_weights(self, sw):
        """sqrt(weights): a host (NumPy) array, an array of the device's namespace, or None."""
        from gradsolve._tensor import wrap_array as _wrap

        if sw is None:
            self._sw = None
        elif isinstance(sw, np.ndarray) or self.backend.is_numpy:
            self._sw = self._gs.tensor(np.asarray(sw, dtype=np.float64), device=self.backend.name)
        else:
            self._sw = _wrap(sw, self.backend)  # already on the device

    def residuals(self):
        r = self.lowered.residuals()
        return r if self._sw is None else r * self._sw

    def loss(self):
        r = self.residuals()
        return (r * r).sum()


def _run_nonlinear(task, options, on_progress, every, on_start):
    import gradsolve as gs
    from gradsolve.problem.grammar import Origin
    from gradsolve.problem.lowering import lower
    from gradsolve.problem.spec import build_spec
    from gradsolve.solve import robust
    from gradsolve.solve.loop import run

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
    device = _fit_device(options)
    # the engine runs eagerly on `device` (a fit never traces, so nothing here is cpu-only)
    lowered = lower(spec, dtype=getattr(gs, options.dtype), device=device)
    xp = gs.backend.get_backend(device).xp
    names = spec.unknown_names
    method = _choose(options, linear=False)
    if on_start is not None:
        on_start(method if task.robust_loss == "squared" else f"irls ({method})", names)
    sw = None if w is None else np.sqrt(w)
    objective = _WeightedObjective(lowered, names, sw)
    lr_opts = options
    t0 = time.perf_counter()
    point = _optimizer_point(task, objective, method, reduced=False)
    outcome = run(objective, lr_opts, method=method, on_progress=on_progress, every=every, point=point)
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
        from gradsolve.solve.linear import on_device

        # residuals and weights stay on the device between reweightings
        sw_dev = on_device(xp, sw) if sw is not None else None
        for it in range(1, 101):
            with gs.no_grad():
                r = xp.asarray(lowered.residuals()._data, dtype=xp.float64)
            scaled = r * sw_dev if sw is not None else r
            rw = robust.weights(task.robust_loss, scaled, task.f_scale, xp=xp)
            objective.set_weights(xp.sqrt(rw) * sw_dev if sw is not None else xp.sqrt(rw))
            before = outcome.values.copy()
            outcome = run(objective, options, method=method, on_progress=None, every=every,
                          point=_optimizer_point(task, objective, method, reduced=False))
            steps += outcome.steps
            history.extend(outcome.loss_history)
            change = float(np.max(np.abs(outcome.values - before) / np.maximum(np.abs(outcome.values), 1e-300)))
            if change <= max(options.tol, 1e-14) * 100:
                break
        reason = f"{outcome.stop_reason}; robust {task.robust_loss} loss by IRLS ({it} reweightings)"
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
    from gradsolve.solve.statistics import fit_statistics, jacobian_K

    K, rank, null = jacobian_K(J)
    wsum = float(np.sum(w)) if w is not None else float(len(y))
    mean = float(np.sum((w if w is not None else 1.0) * y) / wsum)
    tss = float(np.sum((w if w is not None else 1.0) * (y - mean) ** 2))
    stats = fit_statistics(names, K=K, rank=rank, null_space=null, rss=rss, sum_r2=float(r @ r), n=len(y), tss=tss,
                           weighted=w is not None, at_bounds=outcome.at_bounds)
    res = {"rss": rss, "max": float(np.max(np.abs(r))) if r.size else 0.0, "n": len(y), "sum_r2": float(r @ r)}
    notes = {"path": "nonlinear: full residuals", "rows": len(y), "dropped": task.data.dropped, "refined": False,
             "refinement_change": None,
             "start": {"parameters": {n: start_values[n] for n in names}, "source": start_note}}
    return _result(task, options, values, device=device, status=outcome.status, reason=reason,
                   method=method if task.robust_loss == "squared" else "irls", steps=steps, loss=rss,
                   gradient=outcome.gradient_norm, stats=stats, res=res, history=history, elapsed=elapsed,
                   notes=notes, cov_K=K, lowered=lowered, at_bounds=outcome.at_bounds)


def _linear_params(expr, symbols):
    """Parameters that enter the model linearly, jointly (greedy, in order)."""
    import sympy

    from gradsolve.problem.analysis import _is_zero

    chosen = []
    for s in symbols:
        d = sympy.diff(expr, s)
        if not _is_zero(sympy.diff(d, s)):
            continue
        if all(_is_zero(sympy.diff(d, t)) for t in chosen):
            chosen.append(s)
    return chosen


def _data_start(task, spec, xs, y, w):
    """Starting values: --init where given; else from the data (see the module docstring)."""
    import sympy

    import gradsolve as gs
    from gradsolve.problem.lowering import compile_program

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


# ----------------------------------------------------------------------------- the result
def _result(task, options, values, *, device, status, reason, method, steps, loss, gradient, stats, res, history,
            elapsed, notes, cov_K=None, basis=None, lowered=None, at_bounds=(), dtype=None, warnings=()):
    """The Result; ``device`` is where the data-sized work actually ran (never 'auto'), ``dtype`` the precision
    it ran in (default: the one asked for)."""
    from gradsolve.solve.result import Result

    equation = f"{task.model_text} - ({task.y_text})"
    residuals = [{"equation": equation, "count": int(res["n"]),
                  "rms": math.sqrt(res["sum_r2"] / res["n"]) if res["n"] else 0.0, "max": res["max"]}]
    extra = {"model": task.formula(values), "statistics": stats, "fit": notes}
    if task.predict:
        extra["predictions"] = _predictions(task, values, stats, cov_K, basis, lowered)
    if task.plot:
        extra["plot"] = task.plot
    return Result(problem=task.name, status=status, stop_reason=reason, optimizer=method, steps=int(steps), loss=loss,
                  gradient_norm=gradient, parameters=values, residuals=residuals, solution_set=None,
                  seed=task.seed, device=str(device),
                  dtype=dtype or options.dtype, elapsed_s=elapsed, at_bounds=list(at_bounds),
                  warnings=list(task.warnings) + list(warnings),
                  loss_history=history, kind="residuals", extra=extra)


def _predictions(task, values, stats, K, basis, lowered):
    """Model values and their standard errors at --predict points: a few rows, on the host (NumPy)."""
    import math as _m

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

        import gradsolve as gs
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
            se = float(_m.sqrt(max(s2 * float(np.sum((G[i] @ K) ** 2)), 0.0)))
        names = task.x_names if len(task.x_names) == points.shape[1] else task.model_columns
        out.append({"x": dict(zip(names, point.tolist())), "y": float(yhat[i]), "stderr": se})
    return out


# ----------------------------------------------------------------------------- plot
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
        from gradsolve.solve.linear import PolynomialBasis

        return np.asarray(PolynomialBasis(task.degree).values(np, xs, b), dtype=np.float64)
    bound = _Bound([task.model_expr], task.model_columns, params=dict(zip(task.params, b.tolist())))
    (out,) = bound(dict(zip(task.model_columns, xs)))
    return np.broadcast_to(np.asarray(out, dtype=np.float64), np.shape(xs[0]))
