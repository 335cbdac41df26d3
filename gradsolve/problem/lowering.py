"""Lowering: sympy expressions -> a flat program over engine tensor operations.

One walk over the sympy DAG, one table (``LOWERING``) from sympy node types to
engine functions.  The walk runs once per problem and produces a ``Program``: a
list of instructions ``(engine function, operand slots)`` in dependency order,
with shared sub-expressions computed once.  Evaluating the problem for new
parameter values just replays that list on tensors: sympy is never walked
again, and no source code is generated (no ``lambdify``, no ``eval``).

Leaves become tensors: an unknown is a 0-d leaf tensor that requires grad, a
data column a 1-D tensor, a number a 0-d constant (all of the chosen dtype and
device), so broadcasting turns an expression over data columns into a vector.
A sub-expression without symbols is folded once, at lowering time, to one
number: its value at 30 and 45 digits (``constants.evaluate_constant``, the value
the grammar checked), rounded to the dtype, so cancellation such as
``exp(pi*sqrt(163)) - 640320^3 - 744`` keeps its digits; only where there is no
finite real value does the engine fold it in the chosen dtype.  A failure
to lower is a ProblemError located at the expression it came from.

How sympy's canonical forms are lowered:

* ``Add`` -> n-ary sum; ``Mul`` -> product of the factors, with factors that are
  powers with a negative numeric exponent moved to a denominator (``a/b`` is a
  division, not ``a * b**-1``);
* ``Pow`` -> ``x ** n`` for an integer n (``x**-1`` is ``1/x``), ``sqrt`` for
  exponent 1/2, ``1/sqrt`` for -1/2, ``x ** float`` for other numeric exponents
  (rationals become floats), ``gs.pow(x, y)`` for a symbolic exponent;
* functions through ``LOWERING`` (``Abs`` -> ``gs.abs``, ``min``/``max`` (and
  sympy's ``Min``/``Max``) -> n-ary ``gs.minimum``/``gs.maximum``, ``atan2`` -> ``gs.atan2``, ...;
  ``re``/``im``, which sympy introduces for real arguments, are the identity and 0);
* ``Integer``/``Rational``/``Float`` and ``pi``/``E`` -> constants.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np
import sympy
from sympy.codegen.cfunctions import expm1 as _sympy_expm1
from sympy.codegen.cfunctions import log1p as _sympy_log1p

import gradsolve as gs

from .constants import evaluate_constant
from .errors import ProblemError, excerpt
from .functions import maximum as _max_node
from .functions import minimum as _min_node
from .functions import sigmoid as _sympy_sigmoid

if TYPE_CHECKING:  # annotations only: spec.py imports this module (for unlowerable), never the reverse
    from .spec import ProblemSpec

__all__ = ["LOWERING", "Program", "compile_program", "LoweredProblem", "lower", "unlowerable"]


# ----------------------------------------------------------------------------- engine helpers


def nary_sum(*terms):
    return functools.reduce(lambda a, b: a + b, terms)


def nary_product(*factors):
    return functools.reduce(lambda a, b: a * b, factors)


def quotient(n_numerator: int, *operands):
    """prod(operands[:n]) / prod(operands[n:]); an empty numerator is 1."""
    numerator, denominator = operands[:n_numerator], operands[n_numerator:]
    below = nary_product(*denominator)
    if not numerator:
        return 1.0 / below
    return nary_product(*numerator) / below


def int_power(n: int, x):
    return x**n


def float_power(p: float, x):
    return x**p


def reciprocal(x):
    return 1.0 / x


def reciprocal_sqrt(x):
    return 1.0 / gs.sqrt(x)


def nary_minimum(*args):
    return functools.reduce(gs.minimum, args)


def nary_maximum(*args):
    return functools.reduce(gs.maximum, args)


def identity(x):
    return x


def zero_like(x):
    """0 with x's shape, and NaN where x is NaN (the imaginary part of a real value)."""
    return x * 0.0


# ----------------------------------------------------------------------------- the table
#
# A rule maps a sympy node to (engine function, operand nodes).  Most rules are
# "call this engine function on the node's arguments"; Add, Mul and Pow look at
# their arguments once, here, so the runtime program never inspects sympy.

Rule = Callable[[sympy.Basic], tuple[Callable, Sequence[sympy.Basic]]]


def _call(function: Callable) -> Rule:
    def rule(node):
        return function, node.args

    rule.__name__ = f"call_{getattr(function, '__name__', 'fn')}"
    return rule


def _constants_together(args, op) -> list:
    """*args* with their constant members (two or more, next to non-constant ones) gathered into one node.

    The gathered node has no symbols, so it is folded from its exact value:
    ``x + exp(pi*sqrt(163)) - 640320^3 - 744`` adds one constant to x instead of
    summing 2.6e17 - 2.6e17 in float64.
    """
    constants = [a for a in args if not a.free_symbols]
    if len(constants) < 2 or len(constants) == len(args):
        return list(args)
    return [op(*constants, evaluate=False)] + [a for a in args if a.free_symbols]


def _add_rule(node):
    return nary_sum, _constants_together(node.args, sympy.Add)


def _mul_rule(node):
    numerator, denominator = [], []
    for factor in _constants_together(node.args, sympy.Mul):
        if (
            isinstance(factor, sympy.Pow)
            and factor.exp.is_Number
            and factor.exp.is_negative
            and factor.exp.is_Rational
        ):
            denominator.append(sympy.Pow(factor.base, -factor.exp) if factor.exp != -1 else factor.base)
        else:
            numerator.append(factor)
    if not denominator:
        return nary_product, numerator
    return functools.partial(quotient, len(numerator)), numerator + denominator


def _pow_rule(node):
    base, exponent = node.args
    if exponent.is_Integer:
        n = int(exponent)
        if n == 1:
            return identity, [base]
        if n == -1:
            return reciprocal, [base]
        return functools.partial(int_power, n), [base]
    if exponent == sympy.Rational(1, 2):
        return gs.sqrt, [base]
    if exponent == sympy.Rational(-1, 2):
        return reciprocal_sqrt, [base]
    if exponent.is_Number:
        return functools.partial(float_power, float(exponent)), [base]
    return gs.pow, [base, exponent]


#: sympy node type -> lowering rule.  The single place that says what each node means.
LOWERING: dict[type, Rule] = {
    sympy.Add: _add_rule,
    sympy.Mul: _mul_rule,
    sympy.Pow: _pow_rule,
    sympy.exp: _call(gs.exp),
    sympy.log: _call(gs.log),
    _sympy_log1p: _call(gs.log1p),
    _sympy_expm1: _call(gs.expm1),
    sympy.sin: _call(gs.sin),
    sympy.cos: _call(gs.cos),
    sympy.tan: _call(gs.tan),
    sympy.asin: _call(gs.asin),
    sympy.acos: _call(gs.acos),
    sympy.atan: _call(gs.atan),
    sympy.atan2: _call(gs.atan2),
    sympy.sinh: _call(gs.sinh),
    sympy.cosh: _call(gs.cosh),
    sympy.tanh: _call(gs.tanh),
    sympy.asinh: _call(gs.asinh),
    sympy.acosh: _call(gs.acosh),
    sympy.atanh: _call(gs.atanh),
    _sympy_sigmoid: _call(gs.sigmoid),
    sympy.Abs: _call(gs.abs),
    sympy.sign: _call(gs.sign),
    _min_node: _call(nary_minimum),
    _max_node: _call(nary_maximum),
    sympy.Min: _call(nary_minimum),
    sympy.Max: _call(nary_maximum),
    # Every symbol is real, but sympy rewrites some real expressions through re/im
    # (abs(2^z) becomes 2^re(z)); on real values re is the identity and im is 0.
    sympy.re: _call(identity),
    sympy.im: _call(zero_like),
}


def _rule_for(node) -> Rule | None:
    for cls in type(node).__mro__:
        rule = LOWERING.get(cls)
        if rule is not None:
            return rule
    return None


def unlowerable(expr: sympy.Basic) -> str | None:
    """The name of the first node type in *expr* that ``LOWERING`` has no rule for, or None.

    ``build_spec`` asks this, so ``gradsolve check`` reports such an
    expression at its location instead of the solver failing later.
    """
    stack, seen = [expr], set()
    while stack:
        node = stack.pop()
        if node in seen or node.is_Symbol or node.is_Number or node.is_NumberSymbol:
            continue
        seen.add(node)
        if _rule_for(node) is None:
            return type(node).__name__
        stack.extend(node.args)
    return None


# ----------------------------------------------------------------------------- programs


def _resolve_dtype(dtype):
    if dtype is None:
        return gs.float64
    if isinstance(dtype, str):
        if dtype not in ("float64", "float32", "double", "float"):
            raise ValueError(f"dtype must be float64 or float32, got {dtype!r}")
        return {"float64": gs.float64, "double": gs.float64, "float32": gs.float32, "float": gs.float32}[dtype]
    if dtype not in (gs.float64, gs.float32):
        raise ValueError(f"dtype must be gs.float64 or gs.float32, got {dtype!r}")
    return dtype


@dataclass
class Program:
    """A compiled list of engine instructions.

    ``slots`` starts with the leaf tensors (inputs and folded constants); each
    instruction ``(function, operand slot indices)`` appends one slot.
    ``outputs`` are the slot indices of the compiled expressions.
    """

    leaves: list
    code: list[tuple[Callable, tuple[int, ...]]]
    outputs: list[int]

    def run(self) -> list:
        """Evaluate every instruction on the current leaf tensors; return the outputs."""
        slots = list(self.leaves)
        for function, operands in self.code:
            slots.append(function(*[slots[i] for i in operands]))
        return [slots[i] for i in self.outputs]

    def __len__(self) -> int:
        return len(self.code)


def _fold(node, known: dict) -> float | None:
    """The value of a constant sub-expression, rounded once to a double.

    ``constants.evaluate_constant`` computes it at 30 and 45 digits (exactly by
    ``sympy.N`` where a node cancels), the value the grammar checked: folding
    operation by operation in double precision loses every digit of
    ``exp(pi*sqrt(163)) - 640320^3 - 744`` (-7.5e-13, not -0.0021).  None when
    there is no finite real value (the engine then folds it in the dtype).
    *known* is shared by the whole compilation, so each node is evaluated once.
    """
    try:
        value = evaluate_constant(node, known)
    except (TypeError, ValueError, OverflowError, ZeroDivisionError, AttributeError, RecursionError):
        return None
    return value if isinstance(value, float) and np.isfinite(value) else None


def compile_program(
    expressions: Sequence[sympy.Expr],
    inputs: Mapping[sympy.Symbol, object],
    *,
    dtype=None,
    device: str = "cpu",
    origins: Sequence | None = None,
) -> Program:
    """Compile *expressions* into one Program; *inputs* maps each free symbol to its tensor.

    Raises ProblemError for a symbol without an input, a node type outside
    ``LOWERING``, or a number too large for the dtype; with *origins* (one
    ``grammar.Origin`` or None per expression) the error points at the
    expression it came from.
    """
    try:
        return _compile(expressions, inputs, dtype=dtype, device=device)
    except ProblemError as exc:
        index = getattr(exc, "expression_index", None)
        origin = origins[index] if origins is not None and index is not None and index < len(origins) else None
        if origin is None:
            raise
        raise ProblemError(exc.message, file=origin.file, line=origin.line,
                           column=origin.column if origin.line is not None else None,
                           source_line=origin.source_line,
                           hint=exc.hint or "this is a bug in gradsolve's lowering: please report it") from None


def _compile(expressions, inputs, *, dtype, device) -> Program:
    """compile_program's walk; a ProblemError carries ``expression_index``, the expression being compiled."""
    dtype = _resolve_dtype(dtype)
    leaves: list = []  # input tensors and constants
    constant: list[bool] = []  # per leaf: True for constants (foldable)
    pending: list[tuple[Callable, tuple[tuple[str, int], ...]]] = []  # instructions
    # Every node gets a reference: ('leaf', i) or ('code', j); instructions are
    # numbered after all leaves at the end.
    node_ref: dict[sympy.Basic, tuple[str, int]] = {}
    known: dict = {}  # constant sub-expression -> its value (constants.evaluate_constant)

    def new_leaf(tensor, is_constant: bool) -> int:
        leaves.append(tensor)
        constant.append(is_constant)
        return len(leaves) - 1

    def number(node) -> int:
        try:
            value = float(node)
        except (OverflowError, TypeError, ValueError):
            raise ProblemError(f"the number {str(node)[:40]} cannot be represented as a float") from None
        if not np.isfinite(value):
            raise ProblemError(f"the number {str(node)[:40]} is too large for float")
        return new_leaf(gs.tensor(value, dtype=dtype, device=device), True)

    def is_const(ref) -> bool:
        kind, i = ref
        return kind == "leaf" and constant[i]

    def walk(root) -> None:
        """Iterative post-order walk over the DAG (no recursion limit on deep trees)."""
        stack: list[tuple[sympy.Basic, bool]] = [(root, False)]
        plan: dict[sympy.Basic, tuple[Callable, Sequence[sympy.Basic]]] = {}
        while stack:
            node, expanded = stack.pop()
            if node in node_ref:
                continue
            if node.is_Symbol:
                if node not in inputs:
                    raise ProblemError(f"no value for symbol {node.name!r}")
                node_ref[node] = ("leaf", new_leaf(inputs[node], False))
                continue
            if node.is_Number or node.is_NumberSymbol:
                node_ref[node] = ("leaf", number(node))
                continue
            if not expanded:
                rule = _rule_for(node)
                if rule is None:
                    raise ProblemError(f"cannot lower {type(node).__name__} (not in the lowering table)")
                function, operands = rule(node)
                plan[node] = (function, tuple(operands))
                stack.append((node, True))
                for operand in reversed(plan[node][1]):
                    if operand not in node_ref:
                        stack.append((operand, False))
                continue
            function, operands = plan[node]
            refs = tuple(node_ref[o] for o in operands)
            if all(is_const(r) for r in refs):
                # A constant sub-expression: one value from sympy at high precision,
                # else (no finite real value) what the engine computes in the dtype.
                value = _fold(node, known)
                if value is not None:
                    folded = gs.tensor(value, dtype=dtype, device=device)
                else:
                    with gs.no_grad():
                        folded = function(*[leaves[r[1]] for r in refs])
                    if not hasattr(folded, "shape"):
                        folded = gs.tensor(folded, dtype=dtype, device=device)
                node_ref[node] = ("leaf", new_leaf(folded, True))
                continue
            pending.append((function, refs))
            node_ref[node] = ("code", len(pending) - 1)

    for position, root in enumerate(expressions):
        try:
            walk(root)
        except ProblemError as exc:
            exc.expression_index = position
            raise
        except (TypeError, ValueError, ArithmeticError) as exc:  # a rule or a fold that failed: still located
            error = ProblemError(f"cannot lower the expression ({type(exc).__name__}: {excerpt(str(exc))})")
            error.expression_index = position
            raise error from None

    base = len(leaves)

    def index(ref) -> int:
        kind, i = ref
        return i if kind == "leaf" else base + i

    code = [(function, tuple(index(r) for r in refs)) for function, refs in pending]
    outputs = [index(node_ref[root]) for root in expressions]
    return Program(leaves, code, outputs)


# ----------------------------------------------------------------------------- problems


class LoweredProblem:
    """A problem ready for the engine: parameters, data tensors and one compiled program.

    Attributes:
        spec: the ProblemSpec it came from.
        unknowns: unknown names, in order.
        params: one 0-d leaf tensor per unknown (requires grad), starting at
            the spec's initial values.  Optimizers update these in place.
        data: data column tensors (1-D), by name.
        dtype, device: as requested.
        kind: the spec's kind.

    ``residuals()`` is the 1-D tensor of all residuals (data residuals
    contribute one entry per row); ``loss()`` the 0-d loss: the sum of squared
    residuals for equations/residuals, the expression itself for minimize.
    Every call builds a fresh autograd graph from the current parameters.
    """

    def __init__(self, spec: ProblemSpec, *, dtype=None, device: str = "cpu"):
        self.spec = spec
        self.kind = spec.kind
        self.dtype = _resolve_dtype(dtype)
        self.device = device
        self.unknowns = spec.unknown_names
        self.params = [
            gs.tensor(float(u.init), dtype=self.dtype, device=device, requires_grad=True) for u in spec.unknowns
        ]
        self.data = {
            name: gs.tensor(np.asarray(column, dtype=np.float64), dtype=self.dtype, device=device)
            for name, column in spec.data.items()
        }
        inputs = {sympy.Symbol(n, real=True): p for n, p in zip(self.unknowns, self.params)}
        inputs.update({sympy.Symbol(n, real=True): t for n, t in self.data.items()})
        self._inputs = inputs
        origins = [item.origin for item in spec.items] if len(spec.items) == len(spec.expressions) else None
        self.program = compile_program(spec.expressions, inputs, dtype=self.dtype, device=device, origins=origins)

    # -- evaluation --------------------------------------------------------------------

    def outputs(self) -> list:
        """One tensor per expression (0-d, or 1-D over data rows)."""
        return self.program.run()

    def residuals(self):
        """All residuals as one 1-D tensor (equations/residuals problems)."""
        if self.kind == "minimize":
            raise ValueError("a minimize problem has no residuals; use loss()")
        pieces = [r.reshape(-1) if r.ndim == 1 else r.reshape(1) for r in self.outputs()]
        return pieces[0] if len(pieces) == 1 else gs.cat(pieces)

    def loss(self):
        """The 0-d loss: sum of squared residuals, or the minimize expression."""
        if self.kind == "minimize":
            (value,) = self.outputs()
            return value
        r = self.residuals()
        return (r * r).sum()

    @property
    def n_residuals(self) -> int | None:
        """Length of residuals() (None for minimize problems)."""
        if self.kind == "minimize":
            return None
        rows = self.spec.n_rows
        total = 0
        for expr in self.spec.residuals:
            uses_data = any(s.name in self.spec.data for s in expr.free_symbols)
            total += rows if (uses_data and rows is not None) else 1
        return total

    # -- parameters ----------------------------------------------------------------------

    def values(self) -> np.ndarray:
        """Current parameter values as a float64 numpy array."""
        return np.array([float(p.item()) for p in self.params], dtype=np.float64)

    def set_values(self, values) -> None:
        """Overwrite the parameters in place (no autograd history)."""
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if values.shape[0] != len(self.params):
            raise ValueError(f"expected {len(self.params)} values, got {values.shape[0]}")
        with gs.no_grad():
            for p, v in zip(self.params, values.tolist()):
                p._assign_(p._xp.asarray(v, dtype=p._data.dtype))

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def compile(self, expressions: Sequence[sympy.Expr]) -> Program:
        """Compile other expressions over the same parameters and data (used by analysis)."""
        return compile_program(expressions, self._inputs, dtype=self.dtype, device=self.device)

    def __repr__(self) -> str:
        return (
            f"LoweredProblem({self.spec.name!r}, kind={self.kind!r}, unknowns={self.unknowns}, "
            f"instructions={len(self.program)}, dtype={self.dtype}, device={self.device!r})"
        )


def lower(spec: ProblemSpec, dtype=None, device: str = "cpu") -> LoweredProblem:
    """Lower *spec* once; dtype is float64 (default) or float32, device is passed to gs.tensor."""
    return LoweredProblem(spec, dtype=dtype, device=device)
