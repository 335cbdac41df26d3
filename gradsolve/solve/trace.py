"""Tracing: record a lowered problem's graph once, then evaluate loss and gradient without the engine.

Why.  A step of a small problem (the four-unknown puzzle: a dozen scalar
operations) costs the eager engine about 150 microseconds, nearly all of it
per-operation overhead: a Tensor and a graph node per operation, a topological
sort per backward.  The graph of a parsed problem never changes, so we record it
once and replay it as straight-line code.

What is recorded.  Tracing works on the lowered ``Program`` of
:mod:`gradsolve.problem.lowering` -- our own instruction list, never user text.
Each instruction's engine function is looked up *by identity* in ``DECOMPOSE``
(an allowlist: ``lowering.nary_sum``, ``gs.exp``, ...) and broken into primitive tape
operations (``add``, ``mul``, ``pow_scalar``, ``exp``, ...) in exactly the order
the engine applies its ``Op`` primitives (``functools.reduce`` order for sums and
products, ``1.0 / x`` as a division by a number).  A function that is not in
the table stops tracing, and the solve runs eagerly and says why.

Derivatives.  The reverse sweep over the tape is ours, but its rules are not:
each primitive's derivative is declared once, in :mod:`gradsolve.ops.derivatives`,
and the code generator evaluates the very rules the engine's ``backward`` runs,
on symbolic operands that write source text (``Div``: ``-g * a / (b * b)``;
``PowScalar``: ``g * c * x ** (c - 1)`` with ``x * x`` for the square; ties of
``maximum`` share the gradient).  Adjoints are summed per node as the engine's
``pending`` dict sums them.  So traced values equal eager ones to the
last bit in nearly all cases, and to a few ulps where NumPy's summation order
or SIMD transcendental functions differ from ``math``'s; the tests hold them to
1e-12 and compare 100-step trajectories of every example.  Every trace is also
checked against the engine at the start point before it is used.

Code generation.  The tape becomes the source of a Python function, compiled
once with ``compile``/``exec``.  Only our op names, variable names of the form
``x3``/``v12``/``a12``, helper names from a fixed allowlist and ``repr`` of
finite floats go into it; ``_check_source`` tokenizes the text and refuses any
other name, any string and any non-numeric literal before it is compiled.  Two
flavours, chosen by measurement:

* ``float``: plain Python floats and ``math`` -- for float64 problems without
  data.  On the puzzle one loss-and-gradient call takes ~2 microseconds, against
  ~30 for the same tape as NumPy calls on 0-d arrays (NumPy's per-call overhead
  is ~1 microsecond an operation, ``math`` and float arithmetic ~50 ns).  ``math``
  raises where NumPy returns inf or NaN (``log(0)``, ``1/0``, ``sqrt(-1)``); such a
  call is redone by the array flavour, so results keep NumPy's IEEE semantics.
* ``array``: array code over a leading batch dimension: unknowns are ``(K, 1)``
  columns, data columns broadcast to ``(K, rows)``, the loss is ``(K,)``.  Used for
  data problems, float32, batched multistart (K starts in one call) and every
  problem lowered on a device.  The source names its namespace ``_np`` and calls
  only Array API functions and the helpers of ``_array_helpers``; these are bound
  to NumPy on the cpu and to the device's namespace otherwise (CuPy for cuda), so
  one generated text runs on every backend and the data never leaves the device.

Graphs that change with the data.  A lowered program is a fixed instruction
list, so it has no Python-level branches on values; value-dependent choices
(``abs``, ``min``/``max``, ``sign``, ``sigmoid``'s two formulas) are selects inside
an operation and are traced as such.  What cannot be traced (an instruction
outside ``DECOMPOSE``, a non-scalar constant, a ``minimize`` expression over data
rows, a trace that disagrees with the engine at the start) raises
:class:`TraceUnavailable` with the reason, and the caller runs eagerly and
reports the reason in the progress output.
"""
from __future__ import annotations

import functools
import io
import keyword
import math
import re
import tokenize
from dataclasses import dataclass, field

import numpy as np

import gradsolve as gs
from gradsolve import optim
from gradsolve.ops.derivatives import DERIVATIVES
from gradsolve.solve.loop import projected_max_abs

from gradsolve.problem import lowering

__all__ = ["Trace", "TraceUnavailable", "trace_problem", "TracedPoint", "TracedLM", "ArraySlot", "MAX_JACOBIAN_LINES"]

#: Limit on the generated Jacobian's size (outputs x tape length); beyond it LM runs eagerly.
MAX_JACOBIAN_LINES = 200_000


class TraceUnavailable(Exception):
    """The problem cannot be traced; ``str(exc)`` says why (shown in the progress output)."""


# ----------------------------------------------------------------------------- the tape


@dataclass
class _Node:
    op: str  # "param", "data", "const", or a primitive name
    args: tuple = ()
    attr: object = None  # exponent of pow_scalar; value of a const; column index of data/param
    rows: bool = False  # depends on data (array flavour: shape (K, rows))
    active: bool = False  # depends on an unknown (needs an adjoint)


@dataclass
class _Tape:
    nodes: list = field(default_factory=list)
    outputs: list = field(default_factory=list)

    def add(self, op, args=(), attr=None) -> int:
        nodes = self.nodes
        rows = any(nodes[a].rows for a in args)
        active = any(nodes[a].active for a in args) and op != "sign"
        nodes.append(_Node(op, tuple(args), attr, rows, active))
        return len(nodes) - 1

    def const(self, value: float) -> int:
        self.nodes.append(_Node("const", (), float(value)))
        return len(self.nodes) - 1


def _chain(op):
    def build(tape, args):
        return functools.reduce(lambda a, b: tape.add(op, (a, b)), args)

    return build


def _quotient(tape, n_numerator, args):
    numerator, denominator = args[:n_numerator], args[n_numerator:]
    below = _chain("mul")(tape, denominator)
    if not numerator:
        return tape.add("div", (tape.const(1.0), below))
    return tape.add("div", (_chain("mul")(tape, numerator), below))


def _power(tape, exponent, args):
    return tape.add("pow_scalar", args, exponent)


def _gs_pow(tape, args):
    base, exponent = args
    node = tape.nodes[exponent]
    if node.op == "const":  # the engine's pow(): a 0-d exponent without grad is a PowScalar
        return tape.add("pow_scalar", (base,), node.attr)
    return tape.add("pow", (base, exponent))


def _unary(name):
    return lambda tape, args: tape.add(name, args)


#: Lowered-program function (by identity) -> builder of tape operations.  The allowlist.
DECOMPOSE = {
    lowering.nary_sum: _chain("add"),
    lowering.nary_product: _chain("mul"),
    lowering.reciprocal: lambda tape, args: tape.add("div", (tape.const(1.0), args[0])),
    lowering.reciprocal_sqrt: lambda tape, args: tape.add("div", (tape.const(1.0), tape.add("sqrt", args))),
    lowering.identity: lambda tape, args: args[0],
    lowering.zero_like: lambda tape, args: tape.add("mul", (args[0], tape.const(0.0))),  # im() of a real value
    lowering.nary_minimum: _chain("minimum"),
    lowering.nary_maximum: _chain("maximum"),
    gs.pow: _gs_pow,
    gs.atan2: lambda tape, args: tape.add("atan2", args),
}
UNARY = ("exp", "log", "log1p", "expm1", "sqrt", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh",
         "tanh", "asinh", "acosh", "atanh", "sigmoid", "abs", "sign")
DECOMPOSE.update({getattr(gs, name): _unary(name) for name in UNARY})
PARTIALS = {lowering.quotient: _quotient, lowering.int_power: _power, lowering.float_power: _power}


def _record(lowered) -> _Tape:
    """The tape of `lowered.program`: leaves classified, instructions decomposed, outputs marked."""
    tape = _Tape()
    params = {id(p): j for j, p in enumerate(lowered.params)}
    data = {id(t): k for k, t in enumerate(lowered.data.values())}
    program = lowered.program
    slot_node = []
    for leaf in program.leaves:
        if id(leaf) in params:
            tape.nodes.append(_Node("param", (), params[id(leaf)], False, True))
        elif id(leaf) in data:
            tape.nodes.append(_Node("data", (), data[id(leaf)], True, False))
        else:
            if tuple(leaf.shape) != ():
                raise TraceUnavailable(f"a constant of shape {tuple(leaf.shape)} (only scalars are traced)")
            tape.const(float(leaf.item()))
        slot_node.append(len(tape.nodes) - 1)
    for function, operands in program.code:
        args = [slot_node[i] for i in operands]
        builder = DECOMPOSE.get(function) if not isinstance(function, functools.partial) else None
        if isinstance(function, functools.partial) and function.func in PARTIALS and not function.keywords:
            (extra,) = function.args
            if not isinstance(extra, (int, float)) or isinstance(extra, bool):
                raise TraceUnavailable("a non-numeric argument in the program")
            slot_node.append(PARTIALS[function.func](tape, extra, args))
            continue
        if builder is None:
            name = getattr(getattr(function, "func", function), "__name__", type(function).__name__)
            raise TraceUnavailable(f"no trace rule for the operation {name!r}")
        slot_node.append(builder(tape, args))
    tape.outputs = [slot_node[i] for i in program.outputs]
    return tape


# ----------------------------------------------------------------------------- code generation

_FLOAT, _ARRAY = "float", "array"
_VAR = re.compile(r"^[xvacdwtj]\d+$")
_HELPERS = {"_m", "_np", "_pow", "_sign", "_sigmoid", "_sigmoid_a", "_max", "_min", "_wmax", "_wmin", "_wmax_a",
            "_wmin_a", "_logpos", "_logpos_a", "_cols", "_cat", "_jac", "X", "K", "loss", "abs", "R",
            "axis", "keepdims", "sum", "exp", "log", "log1p", "expm1", "sqrt", "sin", "cos", "tan", "asin",
            "acos", "atan", "atan2", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "maximum", "minimum",
            "_loss_grad", "_residuals", "_jacobian", "dtype", "shape",
            "reshape", "broadcast_to", "sign", "sigmoid"}


def _literal(value: float) -> str:
    if not math.isfinite(value):  # pragma: no cover - callers bind non-finite constants by name
        raise ValueError("non-finite literal")
    text = repr(float(value))
    return f"({text})" if text.startswith("-") else text


class _Source:
    """A symbolic operand of a derivative rule: its arithmetic writes source text, fully parenthesised.

    ``a5 * _Source("x1")`` is ``(a5 * x1)``: the grouping Python evaluates is the
    grouping written, so the generated line does the rule's operations in the
    rule's order.  ``**`` is the math namespace's ``power``.
    """

    __slots__ = ("text", "math")

    def __init__(self, text: str, math):
        self.text, self.math = text, math

    def _binary(self, left, op, right):
        return _Source(f"({_text(left)} {op} {_text(right)})", self.math)

    def __add__(self, other):
        return self._binary(self, "+", other)

    def __radd__(self, other):
        return self._binary(other, "+", self)

    def __sub__(self, other):
        return self._binary(self, "-", other)

    def __rsub__(self, other):
        return self._binary(other, "-", self)

    def __mul__(self, other):
        return self._binary(self, "*", other)

    def __rmul__(self, other):
        return self._binary(other, "*", self)

    def __truediv__(self, other):
        return self._binary(self, "/", other)

    def __rtruediv__(self, other):
        return self._binary(other, "/", self)

    def __neg__(self):
        return _Source(f"(-{self.text})", self.math)

    def __pow__(self, exponent):
        return self.math.power(self, exponent)


def _text(value) -> str:
    return value.text if isinstance(value, _Source) else _number(value)


class _SourceMath:
    """The namespace ``M`` of the derivative rules (:mod:`gradsolve.ops.derivatives`) in generated code.

    Float code calls ``math`` (``_m``) and the float helpers, array code the array
    namespace (``_np``) and the array helpers.  A value a rule names (``let``, the
    weights of min/max) becomes one line ``t<i> = ...`` / ``w<i> = ...`` for tape
    node i, written once however many of the node's inputs read it.
    """

    def __init__(self, emitter, node: int):
        self.emitter, self.node = emitter, node
        self.float = emitter.flavour == _FLOAT
        self.prefix = "_m" if self.float else "_np"
        self.bound = {}

    def call(self, function: str, *args) -> _Source:
        return _Source(f"{function}({', '.join(_text(a) for a in args)})", self)

    def bind(self, letter: str, value: _Source) -> _Source:
        name = f"{letter}{self.node}"
        if name not in self.bound:
            self.emitter.lines.append(f"{name} = {value.text}")
            self.bound[name] = value.text
        elif self.bound[name] != value.text:  # pragma: no cover - two values of one kind in one rule
            raise TraceUnavailable(f"internal: {name} bound twice")
        return _Source(name, self)

    def power(self, x: _Source, exponent) -> _Source:
        """x ** exponent as the power primitives compute it: x * x for the square, math.pow for float powers."""
        if isinstance(exponent, _Source):
            return self.call("_pow", x, exponent) if self.float else _Source(f"({x.text} ** {exponent.text})", self)
        if exponent == 2:
            return x * x
        if isinstance(exponent, int) or not self.float:
            return _Source(f"({x.text} ** {_number(exponent)})", self)
        return self.call("_pow", x, exponent)

    def cos(self, x):
        return self.call(f"{self.prefix}.cos", x)

    def sin(self, x):
        return self.call(f"{self.prefix}.sin", x)

    def cosh(self, x):
        return self.call(f"{self.prefix}.cosh", x)

    def sinh(self, x):
        return self.call(f"{self.prefix}.sinh", x)

    def sqrt(self, x):
        return self.call(f"{self.prefix}.sqrt", x)

    def sign(self, x):
        return self.call("_sign" if self.float else "_np.sign", x)

    def log_positive(self, a):
        return self.call("_logpos" if self.float else "_logpos_a", a)

    def max_weight(self, a, b, g):
        return self.bind("w", self.call("_wmax" if self.float else "_wmax_a", a, b))

    def min_weight(self, a, b, g):
        return self.bind("w", self.call("_wmin" if self.float else "_wmin_a", a, b))

    def zero_at_origin(self, a, b, formula):
        return formula(a)  # no guard for 0 ** 0 in generated code (see gradsolve.ops.derivatives)

    def let(self, value):
        return self.bind("t", value)


class _Emitter:
    """Straight-line source for one tape in one flavour."""

    def __init__(self, tape: _Tape, flavour: str):
        self.tape, self.flavour = tape, flavour
        self.M = "_m" if flavour == _FLOAT else "_np"
        self.names = {}  # non-finite constants and data columns, bound in the namespace
        self.lines = []

    def ref(self, i: int) -> str:
        node = self.tape.nodes[i]
        if node.op == "param":
            return f"x{node.attr}"
        if node.op == "data":
            self.names[f"d{node.attr}"] = None
            return f"d{node.attr}"
        if node.op == "const":
            if math.isfinite(node.attr):
                return _literal(node.attr)
            self.names[f"c{i}"] = node.attr
            return f"c{i}"
        return f"v{i}"

    # -- forward ---------------------------------------------------------------------
    def forward_expr(self, i: int) -> str:
        node = self.tape.nodes[i]
        a = [self.ref(j) for j in node.args]
        op, M, flt = node.op, self.M, self.flavour == _FLOAT
        binary = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
        if op in binary:
            return f"{a[0]} {binary[op]} {a[1]}"
        if op == "pow_scalar":
            math_ = _SourceMath(self, i)
            return math_.power(_Source(a[0], math_), node.attr).text
        if op == "pow":
            math_ = _SourceMath(self, i)
            return math_.power(_Source(a[0], math_), _Source(a[1], math_)).text
        if op == "abs":
            return f"abs({a[0]})" if flt else f"_np.abs({a[0]})"
        if op == "sign":
            return f"_sign({a[0]})" if flt else f"_np.sign({a[0]})"
        if op == "sigmoid":
            return f"_sigmoid({a[0]})" if flt else f"_sigmoid_a({a[0]})"
        if op in ("maximum", "minimum"):
            if flt:
                return f"_{op[:3]}({a[0]}, {a[1]})"
            return f"_np.{op}({a[0]}, {a[1]})"
        if op == "atan2":
            return f"{M}.atan2({a[0]}, {a[1]})"
        if op in UNARY:
            return f"{M}.{op}({a[0]})"
        raise TraceUnavailable(f"no code for the operation {op!r}")  # pragma: no cover

    def emit_forward(self):
        for i, node in enumerate(self.tape.nodes):
            if node.op not in ("param", "data", "const"):
                self.lines.append(f"v{i} = {self.forward_expr(i)}")

    # -- reverse -----------------------------------------------------------------------
    def input_adjoints(self, i: int):
        """(input node, contribution to its adjoint) for node i's active inputs, by the declared rules.

        A generator: a rule's own lines (``w<i>``, ``t<i>``) are written when it is
        evaluated, before the caller writes the contribution it yields.
        """
        node, nodes = self.tape.nodes[i], self.tape.nodes
        math_ = _SourceMath(self, i)
        operands = [_Source(self.ref(j), math_) for j in node.args]
        if node.op == "pow_scalar":
            operands.append(node.attr)  # the exponent, PowScalar's second input
        g, out = _Source(f"a{i}", math_), _Source(f"v{i}", math_)
        rules = DERIVATIVES[node.op]
        if callable(rules):  # one rule for every input
            for j, contribution in zip(node.args, rules(math_, g, *operands, out)):
                if nodes[j].active:
                    yield j, contribution
            return
        for j, rule in zip(node.args, rules):
            if rule is not None and nodes[j].active:
                yield j, rule(math_, g, *operands, out)

    def emit_reverse(self, seeds: dict, reduce_rows: bool) -> dict:
        """Adjoints from `seeds` {node: expression}; returns {param index: adjoint expression}.

        `reduce_rows` sums a data-shaped contribution down to an input without data
        (the gradient); without it adjoints keep their rows (per-row Jacobian).
        """
        nodes = self.tape.nodes
        defined = set()

        def accumulate(j, expr):
            if j in defined:
                self.lines.append(f"a{j} = a{j} + {expr}")
            else:
                defined.add(j)
                self.lines.append(f"a{j} = {expr}")

        for j, expr in seeds.items():
            accumulate(j, expr)
        for i in range(len(nodes) - 1, -1, -1):
            node = nodes[i]
            if i not in defined or node.op in ("param", "data", "const"):
                continue
            for j, contribution in self.input_adjoints(i):
                expr = _text(contribution)
                if reduce_rows and node.rows and not nodes[j].rows:
                    expr = f"_np.sum({expr}, axis=1, keepdims=True)"
                accumulate(j, expr)
        return {nodes[j].attr: f"a{j}" for j in defined if nodes[j].op == "param"}


def _number(value) -> str:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else _literal(float(value))


# ----------------------------------------------------------------------------- helpers bound in generated code


def _pow(x, y):
    return math.pow(x, y)


def _sign(x):
    return 1.0 if x > 0.0 else (-1.0 if x < 0.0 else x * 0.0)


def _sigmoid(x):
    e = math.exp(-abs(x))
    return 1.0 / (1.0 + e) if x >= 0 else e / (1.0 + e)


def _max(a, b):
    if a != a or b != b:
        return math.nan
    return a if a >= b else b


def _min(a, b):
    if a != a or b != b:
        return math.nan
    return a if a <= b else b


def _wmax(a, b):
    return 1.0 if a > b else (0.5 if a == b else 0.0)


def _wmin(a, b):
    return 1.0 if a < b else (0.5 if a == b else 0.0)


def _logpos(a):
    return math.log(a) if a > 0 else 0.0


_FLOAT_HELPERS = {"_m": math, "_pow": _pow, "_sign": _sign, "_sigmoid": _sigmoid, "_max": _max, "_min": _min,
                  "_wmax": _wmax, "_wmin": _wmin, "_logpos": _logpos}


def _array_helpers(xp) -> dict:
    """The names array code calls, over the array namespace `xp` (NumPy, CuPy, any Array API namespace).

    Array code is written against ``_np`` and these helpers only, so the same
    generated source runs on every backend: bound to NumPy for the cpu, to the
    device's namespace (CuPy for cuda) for a problem lowered on a device.  Only
    standard calls are used (``where``, ``broadcast_to``, ``concat``, ...) and
    Python numbers are made arrays before they meet one (the standard's
    ``where`` and ``broadcast_to`` take arrays).
    """

    def sigmoid_a(x):
        e = xp.exp(-xp.abs(x))
        return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))

    def weights(wins, a, b):
        dtype = xp.result_type(a.dtype, b.dtype, xp.float32)
        one, half, zero = (xp.asarray(v, dtype=dtype) for v in (1.0, 0.5, 0.0))
        return xp.where(wins(a, b), one, xp.where(a == b, half, zero))

    def wmax_a(a, b):
        a, b = xp.broadcast_arrays(xp.asarray(a), xp.asarray(b))
        return weights(lambda u, v: u > v, a, b)

    def wmin_a(a, b):
        a, b = xp.broadcast_arrays(xp.asarray(a), xp.asarray(b))
        return weights(lambda u, v: u < v, a, b)

    def logpos_a(a):
        a = xp.asarray(a)
        positive = a > 0
        return xp.where(positive, xp.log(xp.where(positive, a, 1.0)), 0.0)

    def cols(columns, K, dtype):
        """(K, p) from p columns that may be numbers, (K, 1) or broadcastable."""
        out = xp.empty((K, len(columns)), dtype=dtype)
        for j, c in enumerate(columns):
            out[:, j] = xp.reshape(xp.broadcast_to(xp.asarray(c, dtype=dtype), (K, 1)), (K,))
        return out

    def cat(pieces, widths, K, dtype):
        """The (K, m) residual matrix from per-output pieces (numbers, (K, 1) or (K, rows))."""
        return xp.concat([xp.broadcast_to(xp.asarray(p, dtype=dtype), (K, w)) for p, w in zip(pieces, widths)],
                         axis=1)

    def jac(blocks, widths, K, p, dtype):
        """(K, m, p) from blocks[i][j] (adjoint of unknown j for output i: a number or broadcastable array)."""
        out = xp.zeros((K, sum(widths), p), dtype=dtype)
        row = 0
        for block, w in zip(blocks, widths):
            for j, adj in enumerate(block):
                out[:, row:row + w, j] = xp.broadcast_to(xp.asarray(adj, dtype=dtype), (K, w))
            row += w
        return out

    return {"_np": xp, "_sigmoid_a": sigmoid_a, "_wmax_a": wmax_a, "_wmin_a": wmin_a, "_logpos_a": logpos_a,
            "_cols": cols, "_cat": cat, "_jac": jac}


#: What generated code sees on the cpu: the float helpers and the array helpers over NumPy.
_NAMESPACE = {**_FLOAT_HELPERS, **_array_helpers(np)}


def _check_source(source: str) -> None:
    """Refuse generated code with any name outside the allowlist, any string, any odd literal."""
    allowed = _HELPERS | set(keyword.kwlist)
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.NAME and token.string not in allowed and not _VAR.match(token.string):
            raise TraceUnavailable(f"internal: name {token.string!r} is not allowed in generated code")
        if token.type == tokenize.STRING:
            raise TraceUnavailable("internal: a string in generated code")
        if token.type == tokenize.NUMBER:
            try:
                float(token.string)
            except ValueError:
                raise TraceUnavailable(f"internal: an odd literal {token.string!r} in generated code") from None


def _compile(source: str, name: str, bindings: dict, helpers: dict = _NAMESPACE):
    _check_source(source)
    namespace = dict(helpers)
    namespace.update(bindings)
    code = compile(source, f"<gradsolve trace {name}>", "exec")  # safe: generated from our own op tape, no user text
    exec(code, namespace)  # safe: generated from our own op tape, no user text
    return namespace[name]


def _indent(lines):
    return "".join(f"    {line}\n" for line in lines)


# ----------------------------------------------------------------------------- the trace


class Trace:
    """Compiled loss, gradient, residuals and Jacobian of one lowered problem.

    Single point (`x`: a sequence of p floats): ``loss_grad(x) -> (loss, [g...])``,
    ``residuals(x)``, ``residuals_jacobian(x) -> (r, J)`` (NumPy, float64).
    Batched (`X`: (K, p) array): ``batch_loss_grad(X) -> (loss (K,), G (K, p))``,
    ``batch_residuals_jacobian(X) -> (R (K, m), J (K, m, p))``.

    ``flavour`` is ``"float"`` (straight-line Python floats for single points) or
    ``"array"`` (array code for everything); ``label`` says so in words, and
    ``batch_label`` says how batches are evaluated.

    Devices.  The array code runs in the namespace of the device the problem was
    lowered on (``backend``: NumPy on the cpu, CuPy for cuda, the Array API strict
    namespace in tests), with the data columns kept there.  Batched calls take a
    (K, p) array on that device (a NumPy array is moved there) and return arrays
    on it, so a batched optimizer can keep everything on the device; single-point
    calls take and return host values.  A float64 problem without data gets the
    float flavour on every device: its single points are a dozen scalar
    operations, ~2 microseconds as Python floats on the host against tens of
    microseconds of kernel launches and a device round trip per call on a GPU,
    while its batches still run as array code on the device.
    """

    def __init__(self, lowered):
        self.kind = lowered.kind
        self.n_params = len(lowered.params)
        self.np_dtype = np.float64 if lowered.dtype == gs.float64 else np.float32
        self.backend = backend = gs.backend.get_backend(lowered.device)
        self.xp = xp = backend.xp
        self.dtype = getattr(xp, np.dtype(self.np_dtype).name)  # the same dtype in the device's namespace
        self._helpers = _NAMESPACE if backend.is_numpy else {**_FLOAT_HELPERS, **_array_helpers(xp)}
        self.tape = tape = _record(lowered)
        nodes = tape.nodes
        if self.kind == "minimize" and nodes[tape.outputs[0]].rows:
            raise TraceUnavailable("the minimized expression depends on data rows")
        n_rows = lowered.spec.n_rows or 1
        self.widths = [n_rows if nodes[o].rows else 1 for o in tape.outputs]
        self.data = [xp.asarray(t.detach()._data, dtype=self.dtype) for t in lowered.data.values()]
        on_cpu = backend.is_numpy
        self.flavour = _FLOAT if (self.np_dtype == np.float64 and not self.data) else _ARRAY
        self._array_loss_grad = self._build_array_loss_grad()
        self._array_jacobian = None
        self._jacobian_reason = None
        if self.kind != "minimize":
            lines = len(tape.outputs) * len(nodes)
            if lines <= MAX_JACOBIAN_LINES:
                self._array_jacobian = self._build_array_jacobian()
            else:
                self._jacobian_reason = f"the Jacobian would take {lines} generated lines"
        if self.flavour == _FLOAT:
            self._float_loss_grad = self._build_float_loss_grad()
            self._float_jacobian = self._build_float_jacobian() if self._array_jacobian is not None else None
        self.batch_label = "traced: NumPy arrays" if on_cpu else f"traced: array code on {backend.name}"
        floats = "traced: straight-line Python floats" + ("" if on_cpu else f" on the host (a scalar problem; "
                                                          f"batches run on {backend.name})")
        self.label = floats if self.flavour == _FLOAT else self.batch_label

    # -- builders --------------------------------------------------------------------
    def _begin(self, flavour):
        """An emitter with the forward pass written: (emitter, argument list, output references).

        Float code takes the unknowns as arguments x0, x1, ...; array code takes one
        (K, p) array X and slices (K, 1) columns from it.
        """
        e = _Emitter(self.tape, flavour)
        p = self.n_params
        if flavour == _ARRAY:
            args = "X"
            e.lines.extend(["K = X.shape[0]"] + [f"x{j} = X[:, {j}:{j + 1}]" for j in range(p)])
        else:
            args = ", ".join(f"x{j}" for j in range(p))
        e.emit_forward()
        return e, args, [e.ref(o) for o in self.tape.outputs]

    def _bindings(self, emitter):
        bound = {}
        for name, value in emitter.names.items():
            bound[name] = self.data[int(name[1:])] if name.startswith("d") else value
        return bound

    def _seeds(self, emitter):
        seeds = {}
        for o in self.tape.outputs:
            if not self.tape.nodes[o].active:
                continue
            r = emitter.ref(o)
            expr = "1.0" if self.kind == "minimize" else f"{r} + {r}"
            seeds[o] = expr if o not in seeds else f"{seeds[o]} + {expr}"
        return seeds

    def _build_float_loss_grad(self):
        e, args, outs = self._begin(_FLOAT)
        if self.kind == "minimize":
            e.lines.append(f"loss = {outs[0]}")
        else:
            e.lines.append("loss = " + " + ".join(f"{r} * {r}" for r in outs))
        grads = e.emit_reverse(self._seeds(e), reduce_rows=False)
        result = ", ".join(["loss"] + [grads.get(j, "0.0") for j in range(self.n_params)])
        e.lines.append(f"return ({result},)")
        source = f"def _loss_grad({args}):\n" + _indent(e.lines)
        self.float_source = source
        return _compile(source, "_loss_grad", self._bindings(e), self._helpers)

    def _build_array_loss_grad(self):
        e, args, outs = self._begin(_ARRAY)
        if self.kind == "minimize":
            e.lines.append(f"loss = _np.reshape(_np.broadcast_to({outs[0]}, (K, 1)), (K,))")
        else:
            e.lines.append(f"R = _cat([{', '.join(outs)}], {self.widths!r}, K, X.dtype)")
            e.lines.append("loss = _np.sum(R * R, axis=1)")
        grads = e.emit_reverse(self._seeds(e), reduce_rows=True)
        columns = ", ".join(grads.get(j, "0.0") for j in range(self.n_params))
        e.lines.append(f"return loss, _cols([{columns}], K, X.dtype)")
        source = f"def _loss_grad({args}):\n" + _indent(e.lines)
        self.array_source = source
        return _compile(source, "_loss_grad", self._bindings(e), self._helpers)

    def _jacobian_lines(self, e):
        """One reverse sweep per output (seed 1.0, rows kept); `j<i>` holds output i's row of adjoints."""
        names = []
        for i, o in enumerate(self.tape.outputs):
            adjoints = e.emit_reverse({o: "1.0"}, reduce_rows=False) if self.tape.nodes[o].active else {}
            e.lines.append(f"j{i} = (" + "".join(f"{adjoints.get(k, '0.0')}, " for k in range(self.n_params)) + ")")
            names.append(f"j{i}")
        return names

    def _build_array_jacobian(self):
        e, args, outs = self._begin(_ARRAY)
        e.lines.append(f"R = _cat([{', '.join(outs)}], {self.widths!r}, K, X.dtype)")
        blocks = self._jacobian_lines(e)
        e.lines.append(f"return R, _jac([{', '.join(blocks)}], {self.widths!r}, K, {self.n_params}, X.dtype)")
        source = f"def _jacobian({args}):\n" + _indent(e.lines)
        return _compile(source, "_jacobian", self._bindings(e), self._helpers)

    def _build_float_jacobian(self):
        e, args, outs = self._begin(_FLOAT)
        blocks = self._jacobian_lines(e)
        e.lines.append(f"return [{', '.join(outs)}], [{', '.join(blocks)}]")
        source = f"def _jacobian({args}):\n" + _indent(e.lines)
        return _compile(source, "_jacobian", self._bindings(e), self._helpers)

    # -- evaluation ------------------------------------------------------------------
    @property
    def has_jacobian(self) -> bool:
        return self._array_jacobian is not None

    @property
    def jacobian_reason(self) -> str | None:
        return self._jacobian_reason

    def _on_device(self, X):
        """X as an array of the trace's dtype on its device (a NumPy array is moved there)."""
        if self.backend.is_numpy:
            return np.asarray(X, dtype=self.np_dtype)
        if isinstance(X, np.ndarray):
            X = self.backend.from_numpy(np.ascontiguousarray(X, dtype=self.np_dtype))
        return self.xp.asarray(X, dtype=self.dtype)

    def batch_loss_grad(self, X):
        """Loss (K,) and gradient (K, p) at the K rows of X, as arrays on the trace's device."""
        X = self._on_device(X)
        with np.errstate(all="ignore"):
            return self._array_loss_grad(X)

    def batch_residuals_jacobian(self, X):
        """Residuals (K, m) and Jacobian (K, m, p) at the K rows of X, as arrays on the trace's device."""
        X = self._on_device(X)
        with np.errstate(all="ignore"):
            return self._array_jacobian(X)

    def loss_grad(self, x):
        """(loss, gradient list) at one point: the float code, or array code where math raises."""
        if isinstance(x, np.ndarray):
            x = x.tolist()
        if self.flavour == _FLOAT:
            try:
                out = self._float_loss_grad(*x)
                return out[0], list(out[1:])
            except (ArithmeticError, ValueError):
                pass
        loss, G = self.batch_loss_grad(np.asarray(x, dtype=np.float64).reshape(1, -1))
        loss, G = self.backend.to_numpy(loss), self.backend.to_numpy(G)
        return float(loss[0]), [float(v) for v in G[0]]

    @property
    def fast_loss_grad(self):
        """The raw float function ``f(*x) -> (loss, g0, ...)`` (it may raise; see loss_grad)."""
        return self._float_loss_grad if self.flavour == _FLOAT else None

    def residuals_jacobian(self, x):
        """Residual vector (m,) and Jacobian (m, p), float64 NumPy, at one point."""
        if isinstance(x, np.ndarray):
            x = x.tolist()
        if self.flavour == _FLOAT:
            try:
                r, J = self._float_jacobian(*x)
                return np.array(r, dtype=np.float64), np.array(J, dtype=np.float64).reshape(len(r), self.n_params)
            except (ArithmeticError, ValueError):
                pass
        R, J = self.batch_residuals_jacobian(np.asarray(x, dtype=np.float64).reshape(1, -1))
        R, J = self.backend.to_numpy(R), self.backend.to_numpy(J)
        return np.asarray(R[0], dtype=np.float64), np.asarray(J[0], dtype=np.float64)

    def residuals(self, x):
        return self.residuals_jacobian(x)[0]


def trace_problem(lowered, *, verify: bool = True) -> Trace:
    """Trace `lowered`; raise TraceUnavailable (with the reason) when it cannot be traced or disagrees with eager."""
    trace = Trace(lowered)
    if verify:
        _verify(trace, lowered)
    return trace


def _verify(trace: Trace, lowered) -> None:
    """The trace must reproduce the engine's loss and gradient at the current point."""
    x = lowered.values()
    for p in lowered.params:
        p.grad = None
    loss = lowered.loss()
    loss.backward()
    eager_loss = float(loss.item())
    eager_grad = np.array([0.0 if p.grad is None else float(p.grad.item()) for p in lowered.params])
    lowered.zero_grad()
    traced_loss, traced_grad = trace.loss_grad(x)
    rtol = 1e-9 if trace.np_dtype == np.float64 else 1e-4
    got = np.array([traced_loss] + list(traced_grad))
    want = np.concatenate([[eager_loss], eager_grad])
    if not np.allclose(got, want, rtol=rtol, atol=rtol * 1e-3, equal_nan=True):
        raise TraceUnavailable("the traced loss or gradient differs from the engine's at the start point")


# ----------------------------------------------------------------------------- driving optimizers over a trace


class _FloatMath:
    """The few array-namespace functions the gs.optim update rules call, on Python floats.

    With it, ``Optimizer._update`` -- the one definition of each update rule --
    runs on a plain float per unknown (``_ScalarSlot``) at float speed.
    """

    @staticmethod
    def zeros_like(x):
        return 0.0

    @staticmethod
    def full_like(x, value):
        return float(value)

    @staticmethod
    def asarray(x, dtype=None, copy=None):
        return x

    @staticmethod
    def sqrt(x):
        return math.sqrt(x) if x >= 0.0 else math.nan

    @staticmethod
    def maximum(a, b):
        return _max(a, b)


class _ScalarSlot:
    """A stand-in parameter for ``Optimizer._update``: a float with ``_xp``, ``_data`` and ``_assign_``."""

    __slots__ = ("_data",)
    _xp = _FloatMath

    def __init__(self, value: float):
        self._data = value

    def _assign_(self, value) -> None:
        self._data = value


class ArraySlot:
    """The same stand-in over an array (a (K, p) batch of points) of the namespace `xp` (NumPy by default)."""

    __slots__ = ("_data", "_xp")

    def __init__(self, array, xp=np):
        self._data = array
        self._xp = xp

    def _assign_(self, value) -> None:
        self._data = value


def _clip(values, lower, upper):
    return [min(max(v, -math.inf if lo is None else lo), math.inf if hi is None else hi)
            for v, lo, hi in zip(values, lower, upper)]


class TracedPoint:
    """The unknowns as one flat tensor, evaluated by a Trace: the loop's stand-in for the engine's leaves.

    The optimizers are the gs.optim classes themselves, over ``params = [flat]``
    (one (p,) tensor whose .grad the trace fills); Levenberg-Marquardt is
    ``TracedLM``.  For float traces, ``fast_first_order`` runs first-order methods
    on one float per unknown, calling the same ``_update`` rules.
    """

    def __init__(self, trace: Trace, values, dtype):
        self.trace = trace
        self.label = trace.label
        self.flat = gs.tensor(np.asarray(values, dtype=np.float64), dtype=dtype, requires_grad=True)
        self.params = [self.flat]
        if trace.flavour != _FLOAT:
            self.fast_first_order = None

    def values(self) -> np.ndarray:
        return np.asarray(self.flat.detach().numpy(), dtype=np.float64).copy()

    def set_values(self, values) -> None:
        with gs.no_grad():
            self.flat._assign_(np.asarray(values, dtype=self.flat._data.dtype).reshape(self.flat.shape))

    def project(self, lower, upper) -> None:
        if any(v is not None for v in list(lower) + list(upper)):
            self.set_values(_clip(self.values().tolist(), lower, upper))

    def loss_grad(self):
        loss, g = self.trace.loss_grad(self.values())
        g = np.asarray(g, dtype=np.float64)
        self.flat.grad = gs.tensor(g, dtype=self.flat.dtype)
        return float(loss), g

    def loss(self) -> float:
        return float(self.trace.loss_grad(self.values())[0])

    def closure(self):
        def closure():
            loss, _ = self.loss_grad()
            return gs.tensor(loss, dtype=self.flat.dtype)

        return closure

    def make_lm(self, lower=None, upper=None, **settings):
        flat_lower = None if lower is None else [np.array([-math.inf if v is None else v for v in lower])]
        flat_upper = None if upper is None else [np.array([math.inf if v is None else v for v in upper])]
        return TracedLM(self.params, self.trace, lower=flat_lower, upper=flat_upper, **settings)

    def fast_first_order(self, opt, rates, watch, lower, upper, steps):
        """First-order steps on Python floats; returns (steps run, (status, reason) or None).

        Each step: loss and gradient from the float trace, ``opt._update`` per
        unknown (the gs.optim rule), projection into the bounds, the rate
        scheduler, then the loop's shared stopping tests (``watch``).  The loss
        after a step and the gradient for the next come from one call.
        """
        trace = self.trace
        raw = trace.fast_loss_grad

        def loss_grad(x):
            try:
                out = raw(*x)
                return out[0], out[1:]
            except (ArithmeticError, ValueError):
                return trace.loss_grad(x)

        x = self.values().tolist()
        slots = [_ScalarSlot(v) for v in x]
        states = [{} for _ in slots]
        group = opt.param_groups[0]
        update = opt._update
        bounded = any(v is not None for v in list(lower) + list(upper))
        observe, offer, isfinite = watch.observe, watch.offer, math.isfinite
        loss, g = loss_grad(x)
        step = 0
        try:
            for step in range(1, steps + 1):
                watch.current_step = step
                if not isfinite(loss):
                    return step, ("diverged", f"the loss became {loss} at step {step}")
                offer(loss, x)
                for slot, gi, state in zip(slots, g, states):
                    update(slot, gi, state, group)
                x_new = [slot._data for slot in slots]
                if bounded:
                    x_new = _clip(x_new, lower, upper)
                    for slot, v in zip(slots, x_new):
                        slot._data = v
                grad_norm = projected_max_abs(g, x, lower, upper) if bounded else _max_abs_floats(g)
                loss, g = loss_grad(x_new)
                if rates is not None:
                    rates.step(loss)
                stop = observe(step, loss, grad_norm, math.dist(x_new, x), math.hypot(*x_new), x_new,
                               group["lr"], "lr")
                x = x_new
                if stop is not None:
                    return step, stop
            return step, None
        finally:
            self.set_values(x if all(map(isfinite, x)) else watch.last_finite_x)


def _max_abs_floats(values) -> float:
    out = 0.0
    for v in values:
        a = abs(v)
        if not a <= out:
            if a != a:
                return math.nan
            out = a
    return out


class TracedLM(optim.LevenbergMarquardt):
    """Levenberg-Marquardt (gs.optim's algorithm, unchanged) with residuals and Jacobian from a Trace.

    Only the four evaluation hooks differ: the point is the flat parameter's values,
    residuals and the exact Jacobian come from the generated code.
    """

    def __init__(self, params, trace: Trace, **settings):
        super().__init__(params, residuals=_no_closure, **settings)
        self.trace = trace

    def _get_x(self) -> np.ndarray:
        return np.asarray(self._params[0].detach().numpy(), dtype=np.float64).reshape(-1).copy()

    def _set_x(self, x) -> None:
        p = self._params[0]
        p._assign_(np.asarray(x, dtype=p._data.dtype).reshape(p.shape))

    def _eval_residuals(self) -> np.ndarray:
        self.nfev += 1
        return self.trace.residuals(self._get_x())

    def _eval_jacobian(self):
        self.nfev += 1
        self.njev += 1
        return self.trace.residuals_jacobian(self._get_x())


def _no_closure():  # pragma: no cover - TracedLM evaluates through its trace
    raise AssertionError("TracedLM has no residual closure")
