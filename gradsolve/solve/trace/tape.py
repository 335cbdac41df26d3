"""The tape: a lowered program recorded as primitive operations, in the order the engine applies them.

``record`` walks the lowered ``Program`` of :mod:`gradsolve.problem.lowering`
(our own instruction list, never user text).  Each instruction's engine function
is looked up by identity in ``DECOMPOSE`` (the allowlist) and broken into tape
operations (``add``, ``mul``, ``pow_scalar``, ``exp``, ...) in exactly the order the
engine applies its Op primitives (``functools.reduce`` order for sums and
products, ``1.0 / x`` as a division by a number).  A function outside the table
raises :class:`TraceUnavailable`.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import gradsolve as gs
from gradsolve.problem import lowering


class TraceUnavailable(Exception):
    """The problem cannot be traced; ``str(exc)`` says why (shown in the progress output)."""


@dataclass
class Node:
    op: str  # "param", "data", "const", or a primitive name
    args: tuple = ()
    attr: object = None  # exponent of pow_scalar; value of a const; column index of data/param
    rows: bool = False  # depends on data (array flavour: shape (K, rows))
    active: bool = False  # depends on an unknown (needs an adjoint)


@dataclass
class Tape:
    nodes: list = field(default_factory=list)
    outputs: list = field(default_factory=list)

    def add(self, op, args=(), attr=None) -> int:
        nodes = self.nodes
        rows = any(nodes[a].rows for a in args)
        active = any(nodes[a].active for a in args) and op != "sign"
        nodes.append(Node(op, tuple(args), attr, rows, active))
        return len(nodes) - 1

    def const(self, value: float) -> int:
        self.nodes.append(Node("const", (), float(value)))
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


def record(lowered) -> Tape:
    """The tape of `lowered.program`: leaves classified, instructions decomposed, outputs marked."""
    tape = Tape()
    params = {id(p): j for j, p in enumerate(lowered.params)}
    data = {id(t): k for k, t in enumerate(lowered.data.values())}
    program = lowered.program
    slot_node = []
    for leaf in program.leaves:
        if id(leaf) in params:
            tape.nodes.append(Node("param", (), params[id(leaf)], False, True))
        elif id(leaf) in data:
            tape.nodes.append(Node("data", (), data[id(leaf)], True, False))
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
