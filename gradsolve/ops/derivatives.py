"""Each elementwise primitive's derivative, declared once, for the engine and for the trace's code generator.

A rule is a small function ``rule(M, g, *operands, out)``: given the gradient
``g`` of the primitive's output ``out``, it returns one input's share of the
gradient, written over an abstract math namespace ``M``.  ``DERIVATIVES`` holds
one rule per positional input (None: that input gets no gradient), as PyTorch's
``tools/autograd/derivatives.yaml`` declares a formula per input and HIPS
autograd's ``defvjp`` a function per argument.  Where the inputs' formulas share
a value (atan2's denominator), the entry is one rule that returns every input's
gradient, as derivatives.yaml's ``self, other:`` entries do; computing that value
once keeps the engine's graph of the gradient (create_graph) as it was.

Two readers call the same rules:

* the engine (:mod:`gradsolve.ops.elementwise`): the operands are tensors and
  ``M`` is its ``TensorMath``, engine operations, so a backward is itself
  recorded and can be differentiated again;
* the trace's code generator (:mod:`gradsolve.solve.trace.codegen`): the operands
  are symbolic, their arithmetic writes fully parenthesised source text, and ``M``
  writes calls of ``math`` (float code) or of the array namespace (array code).

So each formula is the same arithmetic, in the same order, in eager and traced
evaluation: ``g * c * x ** (c - 1)`` is ``(g * c) * x ** (c - 1)`` in both, and
eager and traced trajectories agree to the last bit.

What ``M`` provides: ``cos``, ``sin``, ``cosh``, ``sinh``, ``sqrt``; ``sign(x)``, a
constant (the gradient of ``|x|`` does not flow through its sign);
``max_weight(a, b, g)`` / ``min_weight(a, b, g)``, a's share of the gradient of
``max(a, b)`` / ``min(a, b)`` (1, 1/2 at a tie as in PyTorch, 0) in g's dtype, a
constant; ``log_positive(a)``, ``log(a)`` where ``a > 0`` and 0 elsewhere;
``zero_at_origin(a, b, formula)``, ``formula(a)``, except that the engine gives 0
where ``a == b == 0`` (PyTorch's choice for ``0 ** 0``) without forming ``0 ** -1``
(generated code has no such guard: there it yields NaN, and the engine's check
of a trace at its start point is what catches a start at that point); and
``let(value)``, a value the generated code computes once under a name.  ``x ** c``
on an operand is the power primitive: ``x * x`` for the square, as PowScalar
computes it.
"""
from __future__ import annotations

__all__ = ["DERIVATIVES"]


def _pow_scalar(M, g, x, c, out):
    """d(x ** c)/dx for a constant c, with the exponents 0, 1 and 2 written out."""
    if c == 0:
        return g * 0.0
    if c == 1:
        return g
    if c == 2:
        return g * 2.0 * x
    return g * c * x ** (c - 1)


def _pow_base(M, g, a, b, out):
    """d(a ** b)/da = b a ** (b - 1); 0 at 0 ** 0 in the engine (see ``zero_at_origin``)."""
    return M.zero_at_origin(a, b, lambda base: g * b * base ** (b - 1))


def _atan2(M, g, y, x, out):
    """Both gradients of atan2(y, x), over their one denominator."""
    denominator = M.let(x * x + y * y)
    return g * x / denominator, -g * y / denominator


#: primitive -> one rule per positional input, or one rule giving every input's gradient (a tuple).
DERIVATIVES = {
    "add": (lambda M, g, a, b, out: g,
            lambda M, g, a, b, out: g),
    "sub": (lambda M, g, a, b, out: g,
            lambda M, g, a, b, out: -g),
    "mul": (lambda M, g, a, b, out: g * b,
            lambda M, g, a, b, out: g * a),
    "div": (lambda M, g, a, b, out: g / b,
            lambda M, g, a, b, out: -g * a / (b * b)),
    "pow_scalar": (_pow_scalar, None),
    "pow": (_pow_base,
            lambda M, g, a, b, out: g * out * M.log_positive(a)),
    "maximum": (lambda M, g, a, b, out: g * M.max_weight(a, b, g),
                lambda M, g, a, b, out: g * (1.0 - M.max_weight(a, b, g))),
    "minimum": (lambda M, g, a, b, out: g * M.min_weight(a, b, g),
                lambda M, g, a, b, out: g * (1.0 - M.min_weight(a, b, g))),
    "atan2": _atan2,
    "exp": (lambda M, g, x, out: g * out,),
    "log": (lambda M, g, x, out: g / x,),
    "log1p": (lambda M, g, x, out: g / (x + 1.0),),
    "expm1": (lambda M, g, x, out: g * (out + 1.0),),
    "sqrt": (lambda M, g, x, out: g / (2.0 * out),),
    "sin": (lambda M, g, x, out: g * M.cos(x),),
    "cos": (lambda M, g, x, out: -g * M.sin(x),),
    "tan": (lambda M, g, x, out: g * (1.0 + out * out),),
    "asin": (lambda M, g, x, out: g / M.sqrt(1.0 - x * x),),
    "acos": (lambda M, g, x, out: -g / M.sqrt(1.0 - x * x),),
    "atan": (lambda M, g, x, out: g / (1.0 + x * x),),
    "sinh": (lambda M, g, x, out: g * M.cosh(x),),
    "cosh": (lambda M, g, x, out: g * M.sinh(x),),
    "tanh": (lambda M, g, x, out: g * (1.0 - out * out),),
    "asinh": (lambda M, g, x, out: g / M.sqrt(x * x + 1.0),),
    "acosh": (lambda M, g, x, out: g / M.sqrt(x * x - 1.0),),
    "atanh": (lambda M, g, x, out: g / (1.0 - x * x),),
    "sigmoid": (lambda M, g, x, out: g * out * (1.0 - out),),
    "abs": (lambda M, g, x, out: g * M.sign(x),),
    "sign": (None,),  # a step: no gradient (the engine's sign is untracked; the trace marks it inactive)
}
