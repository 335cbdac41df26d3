"""Solve options: the one place they are built, validated and turned into a method.

The Python API (``gs.solve(problem, lr=0.1)``), ``fit()`` and the CLI all build
their options here, so an option that cannot work is refused the same way
everywhere (``SolveError``, naming the option).  Messages that suggest an option
name it through `flag`, so that wording lives in one place too.  Light on
purpose (no NumPy): the CLI reads `MAX_STARTS` while it declares its flags.

>>> build_options({"steps": 50}, {"lr": 0.5}).steps
50
>>> build_options(None, {"steps": 0})
Traceback (most recent call last):
...
gradsolve.solve.options.SolveError: steps must be a whole number >= 1, got 0
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields

from gradsolve.methods import FIRST_ORDER, METHODS, NAMES
from gradsolve.problem.limits import MAX_TOL

__all__ = ["SolveError", "SolveOptions", "MAX_STARTS", "DTYPES", "build_options", "check_every", "choose_method",
           "default_every", "flag", "more_starts", "validate", "MAX_TOL"]

MAX_STARTS = 1_000_000  # the most starts one batch takes (--starts)
DTYPES = ("float64", "float32")


class SolveError(ValueError):
    """A combination of options that cannot work (reported as bad usage)."""


@dataclass
class SolveOptions:
    optimizer: str = "auto"
    lr: float | None = None
    steps: int = 10000
    tol: float = 1e-12
    atol: float = 0.0  # a bound on the loss that also counts as solved; 0: off (the loss exactly 0)
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float64"
    every: int | None = None
    trace: bool = True  # evaluate a traced copy of the graph (gradsolve.solve.trace); False: the engine
    starts: int = 1  # >1: batched multistart (gradsolve.solve.multistart)
    time_limit: float | None = None  # seconds: every run stops by then with its best point (stopping.time_limit)


_NAMES = frozenset(f.name for f in fields(SolveOptions))


def flag(option: str) -> str:
    """How a message names an option: the command line's flag (``flag("lr")`` is ``--lr``)."""
    return "--" + option.replace("_", "-")


def build_options(file_settings: dict | None, overrides: dict) -> SolveOptions:
    """Options from a problem file's `solver:` settings, overridden by explicit ones (None = not given).

    File settings were checked where the file was read; an explicit option that is
    unknown or cannot work raises SolveError naming it.
    """
    options = SolveOptions()
    for key, value in (file_settings or {}).items():
        if key in _NAMES and value is not None:
            setattr(options, key, value)
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in _NAMES:
            raise SolveError(f"unknown solve option {key!r}")
        setattr(options, key, value)
    validate(options)
    return options


def _whole(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def validate(options: SolveOptions) -> None:
    """Raise SolveError, naming the option, where `options` cannot work (build_options calls it)."""
    if not (_whole(options.steps) and options.steps >= 1):
        raise SolveError(f"steps must be a whole number >= 1, got {options.steps!r}")
    for key in ("tol", "atol"):
        value = getattr(options, key)
        if isinstance(value, bool) or not (isinstance(value, numbers.Real) and math.isfinite(value) and value >= 0):
            raise SolveError(f"{key} must be a finite number >= 0, got {value!r}")
    if options.tol > MAX_TOL:
        # a relative tolerance of 1 or more is met before the first step: "converged" at the start
        raise SolveError(f"tol must be at most {MAX_TOL:g} (a relative tolerance), got {options.tol!r}")
    lr = options.lr
    if lr is not None and (isinstance(lr, bool) or not (isinstance(lr, numbers.Real) and math.isfinite(lr)
                                                        and lr > 0)):
        raise SolveError(f"lr must be a finite number > 0, got {lr!r}")
    if not (_whole(options.starts) and 1 <= options.starts <= MAX_STARTS):
        raise SolveError(f"starts must be a whole number from 1 to {MAX_STARTS:,}, got {options.starts!r}")
    limit = options.time_limit
    if limit is not None and (isinstance(limit, bool) or not (isinstance(limit, numbers.Real)
                                                              and math.isfinite(limit) and limit > 0)):
        raise SolveError(f"time_limit must be a finite number of seconds > 0, got {limit!r}")
    if options.dtype not in DTYPES:
        raise SolveError(f"dtype must be float64 or float32, got {options.dtype!r}")
    if options.optimizer not in NAMES:
        raise SolveError(f"unknown optimizer {options.optimizer!r}: choose one of {', '.join(NAMES)}")
    if not (_whole(options.seed) and options.seed >= 0):
        raise SolveError(f"seed must be a whole number >= 0, got {options.seed!r}")
    if not isinstance(options.device, str):
        raise SolveError(f"device must be 'cpu', 'cuda' or 'auto', got {options.device!r}")
    if options.every is not None:
        check_every(options.every)


def check_every(every) -> None:
    """A progress row every `every` steps: a positive whole number (SolveError otherwise)."""
    if not (_whole(every) and every >= 1):
        raise SolveError(f"every must be a whole number >= 1 (a progress row every N steps), got {every!r}")


def default_every(method: str) -> int:
    """Progress rows: every step for methods whose steps are few and costly, every 100th for first-order ones."""
    return 100 if method in FIRST_ORDER else 1


def choose_method(requested: str, *, has_residuals: bool, smooth: bool, bounded: bool) -> str:
    """The method `auto` stands for: LM for residual problems, L-BFGS for smooth losses, Adam otherwise."""
    if requested not in NAMES:
        raise SolveError(f"unknown optimizer {requested!r}: choose one of {', '.join(NAMES)}")
    if requested == "auto":
        if has_residuals:
            return "lm"
        return "lbfgs" if smooth and not bounded else "adam"
    method = METHODS[requested]
    if method.needs_residuals and not has_residuals:
        raise SolveError(f"{flag('optimizer')} {requested} needs equations or residuals; a 'minimize' loss has no "
                         f"residual vector (use lbfgs or adam)")
    if bounded and not method.supports_bounds:
        raise SolveError(f"{flag('optimizer')} {requested} does not support bounds (min/max on unknowns): use lm, "
                         f"adam or sgd")
    return requested


def more_starts(starts: int) -> str:
    """The multistart a message suggests: 100 starts, or ten times as many as this run had."""
    return f"{flag('starts')} {min(max(100, 10 * starts), MAX_STARTS)}"
