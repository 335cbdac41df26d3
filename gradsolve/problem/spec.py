"""``ProblemSpec``: a parsed, checked problem, independent of the file format.

A spec holds sympy expressions, never tensors; ``gradsolve.problem.lowering``
turns it into engine operations.  ``build_spec`` is the one place that turns
parsed pieces (from YAML or text) into a spec: it resolves names (declared
unknowns and data columns shadow the constants ``pi`` and ``e``), orders the
unknowns, draws random starting values and collects warnings.

Whole-problem limits (``MAX_EXPRESSIONS``, ``MAX_TOTAL_CHARS``) are checked
before any expression is parsed, so no problem file takes long to refuse.  What
counts is what is left after sympy's simplification: an expression whose
unknowns all cancel (``0*x = 1``) is an error at that expression.

Unknown order: declared order (YAML ``unknowns`` map, then ``--init`` names not
declared there), then every other name written in the expressions, sorted.  Unknowns with no
starting value get ``numpy.random.default_rng(seed).standard_normal(k)`` in that
order (``seed`` is ``solver.seed``, default 0), clipped into their bounds.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np
import sympy

from .errors import Issue, ProblemError, escape, excerpt
from .functions import FUNCTIONS
from .grammar import Origin, ParsedExpression, is_valid_name, parse_equation, parse_expression

__all__ = ["Unknown", "ProblemSpec", "build_spec", "bounds_problem", "KINDS", "MAX_UNKNOWNS", "MAX_EXPRESSIONS",
           "MAX_TOTAL_CHARS", "DEFAULT_SEED", "INIT_ORIGIN"]

#: Problem kinds.
KINDS = ("equations", "residuals", "minimize")
#: Most unknowns a problem may have.
MAX_UNKNOWNS = 1000
#: Most expressions (equations, residuals) in one problem.
MAX_EXPRESSIONS = 2_000
#: Most characters in all of a problem's expressions together (each is also limited on its own).
MAX_TOTAL_CHARS = 100_000
#: Seed for random starting values when the problem gives none.
DEFAULT_SEED = 0
#: Where starting values given with ``--init`` (the *init* argument) come from.
INIT_ORIGIN = Origin("--init", None, None, None)


@dataclass
class Unknown:
    """One unknown: its starting value and optional bounds.

    ``declared`` is False for unknowns found only in the expressions (their
    ``init`` was drawn at random).
    """

    name: str
    init: float
    min: float | None = None
    max: float | None = None
    declared: bool = True


@dataclass
class ProblemSpec:
    """A parsed problem.

    Attributes:
        name: display name (file stem when the file gives none).
        kind: ``"equations"`` | ``"residuals"`` | ``"minimize"``.
        residuals: sympy residuals (``lhs - rhs`` per equation, or the given
            residual expressions); empty for ``minimize``.
        loss: the expression to minimize (``minimize`` kind), else None.
        sources: the source text of each expression, in order.
        items: the ParsedExpression of each expression (lhs/rhs, origin).
        unknowns: list of Unknown, in solver order.
        data: data columns, name -> float64 numpy array (only columns used).
        solver: solver settings (optimizer, lr, steps, tol, seed), as given.
        warnings: human-readable warnings (already formatted, escaped).
        path: the source file, or a label such as ``<stdin>``.
        solver_origins: where each ``solver`` setting was written (key -> Origin).
    """

    name: str
    kind: str
    residuals: list[sympy.Expr]
    loss: sympy.Expr | None
    sources: list[str]
    items: list[ParsedExpression]
    unknowns: list[Unknown]
    data: dict[str, np.ndarray] = field(default_factory=dict)
    solver: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    path: str | None = None
    solver_origins: dict = field(default_factory=dict)

    @property
    def unknown_names(self) -> list[str]:
        return [u.name for u in self.unknowns]

    @property
    def expressions(self) -> list[sympy.Expr]:
        """The residuals, or ``[loss]`` for a minimize problem."""
        return list(self.residuals) if self.kind != "minimize" else [self.loss]

    def symbol(self, name: str) -> sympy.Symbol:
        """The sympy symbol used for an unknown or data column."""
        return sympy.Symbol(name, real=True)

    @property
    def unknown_symbols(self) -> list[sympy.Symbol]:
        return [self.symbol(u.name) for u in self.unknowns]

    @property
    def data_symbols(self) -> list[sympy.Symbol]:
        return [self.symbol(name) for name in self.data]

    @property
    def n_rows(self) -> int | None:
        """Rows of data, or None when the problem uses no data."""
        for column in self.data.values():
            return int(column.shape[0])
        return None

    def initial_values(self) -> np.ndarray:
        """Starting values in unknown order (float64)."""
        return np.array([u.init for u in self.unknowns], dtype=np.float64)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) float64 arrays; missing bounds are -inf / +inf."""
        lo = np.array([-np.inf if u.min is None else u.min for u in self.unknowns], dtype=np.float64)
        hi = np.array([np.inf if u.max is None else u.max for u in self.unknowns], dtype=np.float64)
        return lo, hi


@dataclass
class Declaration:
    """A declared unknown as read from a file: all fields optional but the name."""

    name: str
    init: float | None = None
    min: float | None = None
    max: float | None = None
    origin: Origin | None = None


def bounds_problem(name: str, init: float | None, lo: float | None, hi: float | None) -> str | None:
    """What is wrong with an unknown's starting value and bounds, or None.

    One wording for a YAML ``init:`` and a ``--init`` value alike.
    """
    if lo is not None and hi is not None and lo > hi:
        return f"min of {name!r} ({lo:g}) is larger than its max ({hi:g})"
    if init is not None and ((lo is not None and init < lo) or (hi is not None and init > hi)):
        low = "-inf" if lo is None else f"{lo:g}"
        high = "inf" if hi is None else f"{hi:g}"
        return f"init of {name!r} ({init:g}) is outside its bounds [{low}, {high}]"
    return None


#: Names that read as numbers in other tools (NumPy, C, JSON's extensions) but are plain names here: an
#: undeclared one becomes an unknown, which `x = nan` never means.
NOT_NUMBERS = ("nan", "inf", "infinity")


def _warning(origin: Origin | None, message: str) -> str:
    """``file:line:col: warning: message``; the file name is escaped (it may hold control characters)."""
    if origin is not None and origin.file is not None:
        where = escape(origin.file)
        if origin.line is not None:
            where += f":{origin.line}:{origin.column}"
        return f"{where}: warning: {escape(message)}"
    return f"warning: {escape(message)}"


def _at_name(item: ParsedExpression, name: str) -> Origin:
    """The origin moved to the first place *item* writes *name* as a name (``(x-e)^2``: the ``e``, column 4);
    the expression's start when its origin is not exact (a folded YAML scalar) or the name is not found."""
    import dataclasses
    import io
    import tokenize

    origin = item.origin
    if origin is None or not origin.exact:
        return origin
    try:
        for token in tokenize.generate_tokens(io.StringIO(item.text).readline):
            if token.type == tokenize.NAME and token.string == name and token.start[0] == 1:
                return dataclasses.replace(origin, column=origin.column + token.start[1])
    except (tokenize.TokenError, SyntaxError, IndentationError):
        pass
    return origin


def _issue_at(origin: Origin | None, message: str, hint: str | None = None) -> Issue:
    if origin is None:
        return Issue(message, hint=hint)
    return Issue(message, origin.file, origin.line, origin.column, hint, origin.source_line)


def build_spec(
    *,
    kind: str,
    expressions: Iterable[tuple[str, Origin]],
    name: str,
    declarations: Iterable[Declaration] = (),
    data: Mapping[str, np.ndarray] | None = None,
    solver: Mapping | None = None,
    path: str | None = None,
    init: Mapping[str, float] | None = None,
    seed: int | None = None,
    file_origin: Origin | None = None,
    issues: list[Issue] | None = None,
    solver_origins: Mapping[str, Origin] | None = None,
) -> ProblemSpec:
    """Parse *expressions* and assemble a ProblemSpec; raise one ProblemError listing every issue.

    *issues* are problems the caller already found (e.g. in the YAML
    structure); they are reported together with the expression errors.
    *init* (the CLI's ``--init``) overrides starting values and declares names.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    issues = list(issues or [])
    data = dict(data or {})
    solver = dict(solver or {})
    declared: dict[str, Declaration] = {}
    for decl in declarations:
        declared[decl.name] = decl
    if init is not None and not isinstance(init, Mapping):
        issues.append(_issue_at(INIT_ORIGIN, f"the starting values must map names to numbers, got "
                                             f"{type(init).__name__}", "e.g. init={'x': 1.5}"))
        init = None
    for key, value in (init or {}).items():
        where = INIT_ORIGIN
        if not isinstance(key, str) or not is_valid_name(key):
            issues.append(_issue_at(where, f"{excerpt(str(key), 30)!r} is not a valid name",
                                    "names are letters, digits and '_', starting with a letter"))
            continue
        # a number, as the command line's --init gives one: not a string float() would read ('1', '1_000')
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            issues.append(_issue_at(where, f"the starting value of {key!r} is not a number: {excerpt(str(value), 30)!r}"))
            continue
        number = float(value)
        if not math.isfinite(number):
            issues.append(_issue_at(where, f"the starting value of {key!r} must be a finite number, got {number}"))
            continue
        if key in declared:
            declared[key].init = number
            lo, hi = declared[key].min, declared[key].max
            problem = None if (lo is not None and hi is not None and lo > hi) else bounds_problem(key, number, lo, hi)
            if problem is not None:  # the same error as an init: outside its bounds in the file
                issues.append(_issue_at(where, problem))
        else:
            declared[key] = Declaration(key, init=number, origin=where)
    for decl in declared.values():
        if decl.name in data:
            issues.append(_issue_at(decl.origin, f"{decl.name!r} is both an unknown and a data column"))
        if decl.name in FUNCTIONS:
            issues.append(_issue_at(decl.origin, f"{decl.name!r} is a function name and cannot be an unknown",
                                    f"rename the unknown, e.g. {decl.name}_"))
    # A data column named like a function (sin, max) cannot be used, as an unknown of that name cannot be.
    name_hints = {column: f"the data column {column!r} has the name of a function and cannot be used; rename the column"
                  for column in data if column in FUNCTIONS}
    shadow = frozenset(declared) | (frozenset(data) - frozenset(name_hints))

    expressions = list(expressions)
    budget = budget_issues(kind, expressions)
    if budget:
        raise ProblemError(issues=issues + budget)
    items: list[ParsedExpression] = []
    parse = parse_equation if kind == "equations" else parse_expression
    for text, origin in expressions:
        try:
            items.append(parse(text, origin, shadow=shadow, name_hints=name_hints))
        except ProblemError as exc:
            issues.extend(exc.issues)
    if not items and not issues:
        what = {"equations": "equations", "residuals": "residuals", "minimize": "expression to minimize"}[kind]
        issues.append(_issue_at(file_origin, f"the problem has no {what}"))
    from .lowering import unlowerable  # the lowering table; here, so that importing spec does not load the engine

    for item in items:
        missing = unlowerable(item.expr)
        if missing is not None:
            issues.append(_issue_at(item.origin, f"cannot lower {missing} (not in the lowering table)",
                                    "this is a bug in gradsolve's lowering: please report it"))
    # What is left after sympy's simplification decides: 0*x = 1 and x - x name x but have no unknown.
    live_by_item = [{symbol.name for symbol in item.expr.free_symbols} for item in items]
    for item, live in zip(items, live_by_item):
        if (item.names - set(data)) and not (live - set(data)):
            issues.append(_constant_issue(kind, item, bool(live)))
    if issues:
        raise ProblemError(issues=issues)

    warnings: list[str] = []
    used: set[str] = set()  # names written in the expressions
    live_names: set[str] = set().union(*live_by_item)  # names left after simplification
    e_warned = False
    for item in items:
        used |= item.names
        if "e" in item.constants and not e_warned:
            e_warned = True
            warnings.append(
                _warning(
                    _at_name(item, "e"),
                    "'e' is read as Euler's number 2.71828...; if 'e' is an unknown, declare it "
                    "(under 'unknowns' or with --init)",
                )
            )

    # data columns: only those used; minimize must stay scalar
    data_used = [column for column in data if column in live_names]
    if kind == "minimize" and data_used:
        raise ProblemError(
            f"the expression to minimize uses data columns ({', '.join(data_used)}), so it is a vector",
            file=items[0].origin.file,
            line=items[0].origin.line,
            column=items[0].origin.column,
            source_line=items[0].origin.source_line,
            hint="use 'residuals:' (or 'equations:'); the loss is then the sum of squared residuals",
        )
    data_out = {column: np.asarray(data[column], dtype=np.float64) for column in data_used}
    if data_out and next(iter(data_out.values())).shape[0] == 0:
        raise ProblemError("the data file has no rows", file=path)

    free = sorted(used - set(declared) - set(data))
    for unknown in free:
        if unknown.lower() in NOT_NUMBERS:
            item = next(item for item in items if unknown in item.names)
            warnings.append(_warning(
                _at_name(item, unknown),
                f"{unknown!r} is read as an unknown, not as a number: the problem language has no NaN or infinity; "
                f"if {unknown!r} is an unknown, declare it (under 'unknowns' or with --init)"))
    order = list(declared) + free
    if not (live_names - set(data)):
        raise _no_unknowns(kind, items, [n for n in declared], sorted(used & set(data)))
    if len(order) > MAX_UNKNOWNS:
        raise ProblemError(
            f"too many unknowns ({len(order)}; the limit is {MAX_UNKNOWNS})", file=path
        )
    for n in order:
        if n in live_names:
            continue
        decl = declared.get(n)
        if n in used:  # written, but it cancels (0*x + y): kept as an unknown that nothing determines
            where = next(item.origin for item in items if n in item.names)
            warnings.append(_warning(decl.origin if decl and decl.origin else where,
                                     f"unknown {n!r} cancels out of every expression (sympy simplifies it away), "
                                     "so nothing determines its value"))
        else:
            warnings.append(_warning(decl.origin or file_origin, f"unknown {n!r} does not appear in any expression"))
    for index, item in enumerate(items, start=1):
        if not (item.names - set(data)):
            label = "equation" if kind == "equations" else "expression"
            warnings.append(_warning(item.origin, f"{label} {index} ({excerpt(item.text, 40)!r}) involves no unknowns"))

    if seed is None:
        seed = solver.get("seed", DEFAULT_SEED)
    elif not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
        raise ProblemError(f"the seed must be a whole number >= 0, got {excerpt(repr(seed), 30)}", file="--seed")
    seed = int(seed)
    solver["seed"] = seed
    need_random = [n for n in order if n not in declared or declared[n].init is None]
    draws = dict(zip(need_random, np.random.default_rng(seed).standard_normal(len(need_random)).tolist()))
    unknowns: list[Unknown] = []
    for n in order:
        decl = declared.get(n)
        lo = decl.min if decl else None
        hi = decl.max if decl else None
        value = draws[n] if n in draws else float(decl.init)
        if n in draws:
            value = float(np.clip(value, -np.inf if lo is None else lo, np.inf if hi is None else hi))
        unknowns.append(Unknown(n, value, lo, hi, declared=decl is not None))

    residuals = [item.expr for item in items] if kind != "minimize" else []
    loss = items[0].expr if kind == "minimize" else None
    return ProblemSpec(
        name=name,
        kind=kind,
        residuals=residuals,
        loss=loss,
        sources=[item.text for item in items],
        items=items,
        unknowns=unknowns,
        data=data_out,
        solver=solver,
        warnings=warnings,
        path=path,
        solver_origins=dict(solver_origins or {}),
    )


def budget_issues(kind: str, expressions: list[tuple[str, Origin]], count: int | None = None) -> list[Issue]:
    """The whole-problem limits (``MAX_EXPRESSIONS``, ``MAX_TOTAL_CHARS``), checked before anything is parsed.

    *count* is the number of expressions when the caller kept only the first
    ``MAX_EXPRESSIONS + 1`` of them (a text file of a million lines).
    """
    what = {"equations": "equations", "residuals": "residuals", "minimize": "expressions"}[kind]
    hint = "split the problem into smaller ones; these limits keep checking a file fast"
    count = len(expressions) if count is None else count
    if count > MAX_EXPRESSIONS:
        where = expressions[MAX_EXPRESSIONS][1] if len(expressions) > MAX_EXPRESSIONS else None
        return [_issue_at(where, f"the problem has too many {what} ({count:,}; the limit is "
                                 f"{MAX_EXPRESSIONS:,}); this is the first one over the limit", hint)]
    total = 0
    for text, origin in expressions:
        total += len(text) if isinstance(text, str) else 0
        if total > MAX_TOTAL_CHARS:
            whole = sum(len(t) for t, _ in expressions if isinstance(t, str))
            return [_issue_at(origin, f"the problem's {what} are too long together ({whole:,} characters; the "
                                      f"limit is {MAX_TOTAL_CHARS:,}); the limit is passed here", hint)]
    return []


def _constant_issue(kind: str, item: ParsedExpression, uses_data: bool) -> Issue:
    """The error for an expression whose unknowns all cancel: ``0*x = 1`` is the constant equation 0 = 1."""
    label = {"equations": "equation", "residuals": "residual", "minimize": "expression to minimize"}[kind]
    what = "does not depend on any unknown" if uses_data else "is a constant"

    def shown(expr) -> str:
        return excerpt(str(expr), 40)

    if item.sides is not None and item.lhs is not None and item.rhs is not None:
        parts = [f"{excerpt(text, 40)} is {shown(side)}" for text, side in zip(item.sides, (item.lhs, item.rhs))
                 if _names_in(text, item.names) and not (_names_in(text, item.names) & {s.name for s in side.free_symbols})]
        detail = ", ".join(parts) or f"lhs - rhs is {shown(item.expr)}"
        hint = (f"as written it says {shown(item.lhs)} = {shown(item.rhs)}; "
                "an equation needs an unknown that does not cancel out")
    else:
        detail = f"{excerpt(item.text.strip(), 40)} is {shown(item.expr)}"
        hint = "write it in terms of an unknown that does not cancel out, e.g. (x - 2)^2"
    return _issue_at(item.origin, f"the {label} {what} after simplification ({detail})", hint)


def _names_in(text: str, names: set[str]) -> set[str]:
    """The *names* that occur in *text* as whole words."""
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))
    return words & names


def _no_unknowns(kind: str, items: list[ParsedExpression], declared: list[str], columns: list[str]) -> ProblemError:
    """The error for a problem whose expressions use no unknown: there is nothing to solve for.

    It points at the first expression (the command line's ``<expr>`` for
    ``gradsolve minimize``, else the file, line and column).
    """
    if columns:
        detail = f"every name used is a data column ({', '.join(columns[:10])})"
    elif declared:
        names = ", ".join(repr(n) for n in declared[:10])
        several = len(declared) > 1
        detail = f"{names} {'are' if several else 'is'} declared but no expression uses {'them' if several else 'it'}"
    elif kind == "minimize":
        detail = "the expression to minimize is a constant"
    else:
        label = "equation" if kind == "equations" else "residual"
        detail = f"every {label} is a constant" if len(items) > 1 else f"the {label} is a constant"
    hint = {"minimize": "write the expression in terms of at least one unknown, e.g. (x - 2)^2",
            "equations": "an equation needs at least one unknown, e.g. x + y = 3",
            "residuals": "a residual needs at least one unknown, e.g. y - (a*x + b)"}[kind]
    first = items[0].origin
    return ProblemError(f"the problem has no unknowns: {detail}", file=first.file, line=first.line,
                        column=first.column if first.line is not None else None,
                        source_line=first.source_line, hint=hint)
