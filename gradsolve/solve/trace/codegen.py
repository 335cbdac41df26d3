"""Code generation: a tape as the straight-line source of a Python function, checked, then compiled.

``Emitter`` writes the forward pass node by node and the reverse pass by
evaluating each primitive's declared derivative (:mod:`gradsolve.ops.derivatives`)
on ``_Source`` operands, whose arithmetic writes fully parenthesised text, with
``_SourceMath`` as the rules' math namespace.  Two flavours: ``FLOAT`` code on
Python floats and ``math``, ``ARRAY`` code on the array namespace ``_np`` over a
leading batch dimension.  Only our op names, variable names of the form
``x3``/``v12``/``a12``, helper names from a fixed allowlist and ``repr`` of finite
floats go into the text; ``check_source`` tokenizes it and refuses any other
name, any string and any non-numeric literal before ``compile_source`` compiles it.
"""
from __future__ import annotations

import io
import keyword
import math
import re
import tokenize

from gradsolve.ops.derivatives import DERIVATIVES
from gradsolve.solve.trace.tape import UNARY, Tape, TraceUnavailable

FLOAT, ARRAY = "float", "array"
_VAR = re.compile(r"^[xvacdwtj]\d+$")
_HELPERS = {"_m", "_np", "_pow", "_sign", "_sigmoid", "_sigmoid_a", "_max", "_min", "_wmax", "_wmin", "_wmax_a",
            "_wmin_a", "_logpos", "_logpos_a", "_cols", "_cat", "_jac", "X", "K", "loss", "abs", "R",
            "axis", "keepdims", "sum", "exp", "log", "log1p", "expm1", "sqrt", "sin", "cos", "tan", "asin",
            "acos", "atan", "atan2", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "maximum", "minimum",
            "_loss_grad", "_residuals", "_jacobian", "dtype", "shape",
            "reshape", "broadcast_to", "sign", "sigmoid"}


def float_literal(value: float) -> str:
    """``repr`` of a finite float, in parentheses when negative (``a * (-1.5)``, ``x ** (-2.5)``)."""
    if not math.isfinite(value):  # pragma: no cover - callers bind non-finite constants by name
        raise ValueError("non-finite literal")
    text = repr(float(value))
    return f"({text})" if text.startswith("-") else text


class _Source:
    """A symbolic operand of a derivative rule: its arithmetic writes source text, fully parenthesised.

    With ``g`` the source ``a5`` and ``x`` the source ``x1``, ``-g * x`` is the source
    ``((-a5) * x1)``: the grouping written is the grouping the rule evaluates, so
    the generated line does the rule's operations in the rule's order.  Numbers
    are written as ``repr`` (ints as ints); ``**`` is the namespace's ``power``.
    """

    __slots__ = ("text", "namespace")

    def __init__(self, text: str, namespace):
        self.text, self.namespace = text, namespace

    def _binary(self, left, op, right):
        return _Source(f"({_text(left)} {op} {_text(right)})", self.namespace)

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
        return _Source(f"(-{self.text})", self.namespace)

    def __pow__(self, exponent):
        return self.namespace.power(self, exponent)


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
        self.float_code = emitter.flavour == FLOAT
        self.prefix = "_m" if self.float_code else "_np"
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
        """x ** exponent as the power primitives compute it, x * x for the square (PowScalar's forward).

        Float code raises a float to a non-integer power with ``math.pow`` (``_pow``):
        Python's ``**`` would return a complex number for a negative base, where
        ``math.pow`` raises and the array code, with NumPy's NaN, takes over.
        """
        if isinstance(exponent, _Source):
            if self.float_code:
                return self.call("_pow", x, exponent)
            return _Source(f"({x.text} ** {exponent.text})", self)
        if exponent == 2:
            return x * x
        if isinstance(exponent, int) or not self.float_code:
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
        return self.call("_sign" if self.float_code else "_np.sign", x)

    def log_positive(self, a):
        return self.call("_logpos" if self.float_code else "_logpos_a", a)

    def max_weight(self, a, b, g):
        return self.bind("w", self.call("_wmax" if self.float_code else "_wmax_a", a, b))

    def min_weight(self, a, b, g):
        return self.bind("w", self.call("_wmin" if self.float_code else "_wmin_a", a, b))

    def zero_at_origin(self, a, b, formula):
        return formula(a)  # no guard for 0 ** 0 in generated code (see gradsolve.ops.derivatives)

    def let(self, value):
        return self.bind("t", value)


class Emitter:
    """Straight-line source for one tape in one flavour."""

    def __init__(self, tape: Tape, flavour: str):
        self.tape, self.flavour = tape, flavour
        self.M = "_m" if flavour == FLOAT else "_np"
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
                return float_literal(node.attr)
            self.names[f"c{i}"] = node.attr
            return f"c{i}"
        return f"v{i}"

    # -- forward ---------------------------------------------------------------------
    def forward_expr(self, i: int) -> str:
        node = self.tape.nodes[i]
        a = [self.ref(j) for j in node.args]
        op, M, flt = node.op, self.M, self.flavour == FLOAT
        binary = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
        if op in binary:
            return f"{a[0]} {binary[op]} {a[1]}"
        if op == "pow_scalar":
            namespace = _SourceMath(self, i)
            return namespace.power(_Source(a[0], namespace), node.attr).text
        if op == "pow":
            namespace = _SourceMath(self, i)
            return namespace.power(_Source(a[0], namespace), _Source(a[1], namespace)).text
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
        namespace = _SourceMath(self, i)
        operands = [_Source(self.ref(j), namespace) for j in node.args]
        if node.op == "pow_scalar":
            operands.append(node.attr)  # the exponent, PowScalar's second input
        g, out = _Source(f"a{i}", namespace), _Source(f"v{i}", namespace)
        rules = DERIVATIVES[node.op]
        if callable(rules):  # one rule for every input
            for j, contribution in zip(node.args, rules(namespace, g, *operands, out)):
                if nodes[j].active:
                    yield j, contribution
            return
        for j, rule in zip(node.args, rules):
            if rule is not None and nodes[j].active:
                yield j, rule(namespace, g, *operands, out)

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
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else float_literal(float(value))


def check_source(source: str) -> None:
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


def compile_source(source: str, name: str, bindings: dict, helpers: dict):
    check_source(source)
    namespace = dict(helpers)
    namespace.update(bindings)
    code = compile(source, f"<gradsolve trace {name}>", "exec")  # safe: generated from our own op tape, no user text
    exec(code, namespace)  # safe: generated from our own op tape, no user text
    return namespace[name]


def indent(lines):
    return "".join(f"    {line}\n" for line in lines)
