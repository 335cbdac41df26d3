"""Elementwise primitives: forward on backend arrays, backward on tensors, side by side.

Each backward returns one gradient per positional input (None for inputs that
are plain numbers); the engine sums broadcast dimensions away afterwards.  The
primitives that the trace also differentiates take their derivative from the
rules of :mod:`gradsolve.ops.derivatives` (``declared_gradients``), evaluated
with ``TensorMath``; the rest (masks, casts, copies) write theirs here.
"""
from __future__ import annotations

import math
import operator

from gradsolve.autograd.function import Op
from gradsolve.backend import foreign_array_error, xp_dtype
from gradsolve._dtypes import dtype_from_array_dtype
from gradsolve._tensor import Tensor, constant_like, wrap_array
from gradsolve.ops.array_namespace import backend_of_array, xp_of_array
from gradsolve.ops.derivatives import DERIVATIVES
from gradsolve.ops.promotion import promote_operands


def _raw(v):
    return v._data if isinstance(v, Tensor) else v


def _asarray_like(xp, value, like):
    return value if hasattr(value, "shape") else xp.asarray(value, dtype=like.dtype)


# ------------------------------------------------------------ arithmetic ----
class Add(Op):
    saves_inputs = False

    def forward(self, a, b):
        a, b = promote_operands(a, b)
        return a + b

    def backward(self, g):
        return declared_gradients(self, g, "add")


class Sub(Op):
    saves_inputs = False

    def forward(self, a, b):
        a, b = promote_operands(a, b)
        return a - b

    def backward(self, g):
        return declared_gradients(self, g, "sub")


class Mul(Op):
    def forward(self, a, b):
        a, b = promote_operands(a, b)
        return a * b

    def backward(self, g):
        return declared_gradients(self, g, "mul")


class Div(Op):
    def forward(self, a, b):
        a, b = promote_operands(a, b, floating=True)  # true division: int / int is a float
        return a / b

    def backward(self, g):
        return declared_gradients(self, g, "div")


class Neg(Op):
    saves_inputs = False

    def forward(self, a):
        return -a

    def backward(self, g):
        return -g


class PowScalar(Op):
    """x ** c for a constant exponent c."""

    def forward(self, x, exponent):
        x, exponent = promote_operands(x, exponent)  # an int tensor to a float power is a float
        if exponent == 2:
            return x * x
        return x ** exponent

    def backward(self, g):
        return declared_gradients(self, g, "pow_scalar")


class RPowScalar(Op):
    """c ** x for a constant base c."""

    saves_result = True

    def forward(self, base, x):
        xp = xp_of_array(x)
        self.log_base = math.log(base) if base > 0 else float("nan")
        base, x = promote_operands(base, x)  # 2.5 ** int_tensor is a float, not 2 ** int_tensor
        return xp.asarray(base, dtype=x.dtype) ** x

    def backward(self, g):
        if self.inputs[0] == 0:
            return None, g * 0.0
        return None, g * self.result() * self.log_base


class PowTensor(Op):
    """a ** b for two tensors."""

    saves_result = True

    def forward(self, a, b):
        a, b = promote_operands(a, b)
        return a ** b

    def backward(self, g):
        return declared_gradients(self, g, "pow")


def pow(a, b):
    """a ** b with numbers or tensors on either side."""
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        if b._data.ndim == 0 and not b.requires_grad:
            return PowScalar.apply(a, b.item())
        return PowTensor.apply(a, b)
    if isinstance(a, Tensor):
        return PowScalar.apply(a, b)
    return RPowScalar.apply(a, b)


# ------------------------------------------------------------ unary math ----
class Exp(Op):
    saves_inputs = True
    saves_result = True

    def forward(self, x):
        return xp_of_array(x).exp(x)

    def backward(self, g):
        return declared_gradients(self, g, "exp")


class Log(Op):
    def forward(self, x):
        return xp_of_array(x).log(x)

    def backward(self, g):
        return declared_gradients(self, g, "log")


class Log1p(Op):
    def forward(self, x):
        return xp_of_array(x).log1p(x)

    def backward(self, g):
        return declared_gradients(self, g, "log1p")


class Expm1(Op):
    saves_result = True

    def forward(self, x):
        return xp_of_array(x).expm1(x)

    def backward(self, g):
        return declared_gradients(self, g, "expm1")


class Sqrt(Op):
    saves_result = True

    def forward(self, x):
        return xp_of_array(x).sqrt(x)

    def backward(self, g):
        return declared_gradients(self, g, "sqrt")


class Sin(Op):
    def forward(self, x):
        return xp_of_array(x).sin(x)

    def backward(self, g):
        return declared_gradients(self, g, "sin")


class Cos(Op):
    def forward(self, x):
        return xp_of_array(x).cos(x)

    def backward(self, g):
        return declared_gradients(self, g, "cos")


class Tan(Op):
    saves_result = True

    def forward(self, x):
        return xp_of_array(x).tan(x)

    def backward(self, g):
        return declared_gradients(self, g, "tan")


class Asin(Op):
    def forward(self, x):
        return xp_of_array(x).asin(x)

    def backward(self, g):
        return declared_gradients(self, g, "asin")


class Acos(Op):
    def forward(self, x):
        return xp_of_array(x).acos(x)

    def backward(self, g):
        return declared_gradients(self, g, "acos")


class Atan(Op):
    def forward(self, x):
        return xp_of_array(x).atan(x)

    def backward(self, g):
        return declared_gradients(self, g, "atan")


class Sinh(Op):
    def forward(self, x):
        return xp_of_array(x).sinh(x)

    def backward(self, g):
        return declared_gradients(self, g, "sinh")


class Cosh(Op):
    def forward(self, x):
        return xp_of_array(x).cosh(x)

    def backward(self, g):
        return declared_gradients(self, g, "cosh")


class Tanh(Op):
    saves_result = True

    def forward(self, x):
        return xp_of_array(x).tanh(x)

    def backward(self, g):
        return declared_gradients(self, g, "tanh")


class Asinh(Op):
    def forward(self, x):
        return xp_of_array(x).asinh(x)

    def backward(self, g):
        return declared_gradients(self, g, "asinh")


class Acosh(Op):
    def forward(self, x):
        return xp_of_array(x).acosh(x)

    def backward(self, g):
        return declared_gradients(self, g, "acosh")


class Atanh(Op):
    def forward(self, x):
        return xp_of_array(x).atanh(x)

    def backward(self, g):
        return declared_gradients(self, g, "atanh")


class Sigmoid(Op):
    saves_result = True

    def forward(self, x):
        xp = xp_of_array(x)
        e = xp.exp(-xp.abs(x))  # never overflows
        return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))

    def backward(self, g):
        return declared_gradients(self, g, "sigmoid")


class Relu(Op):
    def forward(self, x):
        xp = xp_of_array(x)
        return xp.where(x > 0, x, xp.zeros_like(x))

    def backward(self, g):
        x = self.inputs[0]
        return where(constant_like(x._data > 0, x), g, 0.0)


class Abs(Op):
    def forward(self, x):
        return xp_of_array(x).abs(x)

    def backward(self, g):
        return declared_gradients(self, g, "abs")


class Clamp(Op):
    """min(max(x, lo), hi); the gradient passes where lo <= x <= hi."""

    def forward(self, x, min=None, max=None):
        xp = xp_of_array(x)
        self.lo, self.hi = min, max
        out = x
        if min is not None:
            out = xp.where(out < min, xp.asarray(min, dtype=x.dtype), out)
        if max is not None:
            out = xp.where(out > max, xp.asarray(max, dtype=x.dtype), out)
        return out

    def backward(self, g):
        x = self.inputs[0]
        inside = None
        if self.lo is not None:
            inside = x._data >= self.lo
        if self.hi is not None:
            upper = x._data <= self.hi
            inside = upper if inside is None else inside & upper
        return where(constant_like(inside, x), g, 0.0)


class Maximum(Op):
    """Elementwise maximum; ties share the gradient equally, as in PyTorch."""

    def forward(self, a, b):
        a, b = promote_operands(a, b)
        xp = xp_of_array(a if hasattr(a, "shape") else b)
        a_arr = _asarray_like(xp, a, b if hasattr(b, "shape") else None) if not hasattr(a, "shape") else a
        b_arr = _asarray_like(xp, b, a_arr) if not hasattr(b, "shape") else b
        return xp.maximum(a_arr, b_arr)

    def backward(self, g):
        return declared_gradients(self, g, "maximum")


class Minimum(Op):
    """Elementwise minimum; ties share the gradient equally, as in PyTorch."""

    def forward(self, a, b):
        a, b = promote_operands(a, b)
        xp = xp_of_array(a if hasattr(a, "shape") else b)
        a_arr = _asarray_like(xp, a, b if hasattr(b, "shape") else None) if not hasattr(a, "shape") else a
        b_arr = _asarray_like(xp, b, a_arr) if not hasattr(b, "shape") else b
        return xp.minimum(a_arr, b_arr)

    def backward(self, g):
        return declared_gradients(self, g, "minimum")


def _weight_of_first(a, b, g, wins):
    """a's share of the gradient of max(a, b) (wins: >) or min(a, b) (wins: <): 1, 1/2 at a tie, 0."""
    like = a if isinstance(a, Tensor) else b
    xp = like._backend.xp
    ra, rb = _raw(a), _raw(b)
    dt = g._data.dtype
    weight_a = xp.where(wins(ra, rb), xp.asarray(1.0, dtype=dt),
                        xp.where(ra == rb, xp.asarray(0.5, dtype=dt), xp.asarray(0.0, dtype=dt)))
    return constant_like(weight_a, like)


class Where(Op):
    """where(condition, a, b); the condition gets no gradient."""

    def forward(self, cond, a, b):
        xp = xp_of_array(cond)
        a, b = promote_operands(a, b)
        if not hasattr(a, "shape"):
            a = xp.asarray(a, dtype=b.dtype if hasattr(b, "shape") else None)
        if not hasattr(b, "shape"):
            b = xp.asarray(b, dtype=a.dtype)
        return xp.where(cond, a, b)

    def backward(self, g):
        cond, a, b = self.inputs
        grad_a = where(cond, g, 0.0) if isinstance(a, Tensor) else None
        grad_b = where(cond, 0.0, g) if isinstance(b, Tensor) else None
        return None, grad_a, grad_b


class Atan2(Op):
    def forward(self, y, x):
        y, x = promote_operands(y, x, floating=True)
        xp = xp_of_array(y if hasattr(y, "shape") else x)
        if not hasattr(y, "shape"):
            y = xp.asarray(y, dtype=x.dtype)  # atan2 is a function: it takes arrays only
        if not hasattr(x, "shape"):
            x = xp.asarray(x, dtype=y.dtype)
        return xp.atan2(y, x)

    def backward(self, g):
        return declared_gradients(self, g, "atan2")


class Cast(Op):
    """Change of dtype; the gradient is cast back."""

    saves_inputs = False

    def forward(self, x, dtype):
        xp = xp_of_array(x)
        self.src = x.dtype
        self.target_name = dtype.name
        return xp.astype(x, xp_dtype(xp, dtype.name))

    def backward(self, g):
        xp = g._backend.xp
        return wrap_array(xp.astype(g._data, self.src), g._backend) if not _grad_on() else Cast.apply(
            g, dtype=dtype_from_array_dtype(self.src))


class Clone(Op):
    saves_inputs = False

    def forward(self, x):
        return xp_of_array(x).asarray(x, copy=True)

    def backward(self, g):
        return g


class ToDevice(Op):
    """A copy on another device; the gradient goes back the same way."""

    saves_inputs = False
    changes_device = True

    def forward(self, x, backend):
        source = backend_of_array(x)
        self.source = source
        self.target = backend
        return backend.from_numpy(source.to_numpy(x))

    def backward(self, g):
        return g.to(self.source.name)


def _grad_on():
    from gradsolve.autograd.grad_mode import GradMode

    return GradMode.enabled


# ------------------------------------------------------- helper functions ----
def where(cond, a, b):
    """Elementwise choice: `a` where `cond` is true, else `b` (numbers allowed)."""
    if not isinstance(cond, Tensor):
        like = a if isinstance(a, Tensor) else b
        cond = wrap_array(like._backend.xp.asarray(cond), like._backend)
    return Where.apply(cond, a, b)


def log(x):
    return Log.apply(x)


_COMPARE = {
    "less": operator.lt, "less_equal": operator.le, "greater": operator.gt, "greater_equal": operator.ge,
    "equal": operator.eq, "not_equal": operator.ne, "logical_and": operator.and_, "logical_or": operator.or_,
}


def compare(a, b, name):
    """A bool tensor; comparisons are not differentiable."""
    like = a if isinstance(a, Tensor) else b
    try:
        ra, rb = promote_operands(_raw(a), _raw(b))  # compare in the promoted dtype, as PyTorch does
        result = _COMPARE[name](ra, rb)
    except TypeError:
        error = foreign_array_error([v for v in (a, b) if not isinstance(v, Tensor)], like._backend)
        if error is not None:
            raise error from None
        raise
    return wrap_array(result, like._backend)


def logical_not(a):
    return wrap_array(a._backend.xp.logical_not(a._data), a._backend)


def sign(x):
    return wrap_array(x._backend.xp.sign(x._data), x._backend)


# ------------------------------------------------- declared derivatives ----
class TensorMath:
    """The namespace ``M`` of the rules in :mod:`gradsolve.ops.derivatives`, in the engine: tensor operations.

    Differentiable functions are the engine's primitives, so a backward run with
    create_graph records the graph of the gradient; masks and weights are
    untracked constants.
    """

    cos = staticmethod(Cos.apply)
    sin = staticmethod(Sin.apply)
    cosh = staticmethod(Cosh.apply)
    sinh = staticmethod(Sinh.apply)
    sqrt = staticmethod(Sqrt.apply)

    @staticmethod
    def sign(x):
        return constant_like(xp_of_array(x._data).sign(x._data), x)

    @staticmethod
    def max_weight(a, b, g):
        return _weight_of_first(a, b, g, operator.gt)

    @staticmethod
    def min_weight(a, b, g):
        return _weight_of_first(a, b, g, operator.lt)

    @staticmethod
    def log_positive(a):
        positive = constant_like(a._data > 0, a)
        return where(positive, log(where(positive, a, 1.0)), 0.0)

    @staticmethod
    def zero_at_origin(a, b, formula):
        origin = constant_like((a._data == 0) & (b._data == 0), a)
        return where(origin, 0.0, formula(where(origin, 1.0, a)))

    @staticmethod
    def let(value):
        return value


def declared_gradients(op, g, name):
    """The gradients of `op`'s inputs by the rules ``DERIVATIVES[name]``, for the inputs that need one."""
    rules = DERIVATIVES[name]
    out = op.result() if op.saves_result else None
    operands = op.inputs if op.saves_inputs else (None, None)
    if callable(rules):  # one rule for every input
        return rules(TensorMath, g, *operands, out)
    if len(rules) == 1:
        return rules[0](TensorMath, g, operands[0], out)
    a, b = operands
    (rule_a, rule_b), (need_a, need_b) = rules, op.needs_input_grad
    return (rule_a(TensorMath, g, a, b, out) if need_a and rule_a is not None else None,
            rule_b(TensorMath, g, a, b, out) if need_b and rule_b is not None else None)
