"""Elementwise primitives: forward on backend arrays, backward on tensors, side by side.

Each backward returns one gradient per positional input (None for inputs that
are plain numbers); the engine sums broadcast dimensions away afterwards.
"""
from __future__ import annotations

import math
import operator

from gradsolve.autograd.function import Op
from gradsolve.backend import foreign_array_error, xp_dtype
from gradsolve._tensor import Tensor
# Short local names for the helpers that the Op bodies below call.
from gradsolve._dtypes import dtype_from_array_dtype as _dtype_named
from gradsolve._tensor import constant_like as _const, wrap_array as _wrap
from gradsolve.ops.array_namespace import backend_of_array as _backend_of_array, xp_of_array as _xp_of_array
from gradsolve.ops.promotion import promote_operands as _operands


def _raw(v):
    return v._data if isinstance(v, Tensor) else v


def _asarray_like(xp, value, like):
    return value if hasattr(value, "shape") else xp.asarray(value, dtype=like.dtype)


# ------------------------------------------------------------ arithmetic ----
class Add(Op):
    saves_inputs = False

    def forward(self, a, b):
        a, b = _operands(a, b)
        return a + b

    def backward(self, g):
        return g, g


class Sub(Op):
    saves_inputs = False

    def forward(self, a, b):
        a, b = _operands(a, b)
        return a - b

    def backward(self, g):
        return g, (-g if self.needs_input_grad[1] else None)  # x - 9: no negation for the constant


class Mul(Op):
    def forward(self, a, b):
        a, b = _operands(a, b)
        return a * b

    def backward(self, g):
        a, b = self.inputs
        need_a, need_b = self.needs_input_grad
        return (g * b if need_a else None), (g * a if need_b else None)


class Div(Op):
    def forward(self, a, b):
        a, b = _operands(a, b, floating=True)  # true division: int / int is a float
        return a / b

    def backward(self, g):
        a, b = self.inputs
        need_a, need_b = self.needs_input_grad
        return (g / b if need_a else None), (-g * a / (b * b) if need_b else None)


class Neg(Op):
    saves_inputs = False

    def forward(self, a):
        return -a

    def backward(self, g):
        return -g


class PowScalar(Op):
    """x ** c for a constant exponent c."""

    def forward(self, x, exponent):
        self.exponent = exponent
        x, exponent = _operands(x, exponent)  # an int tensor to a float power is a float
        if exponent == 2:
            return x * x
        return x ** exponent

    def backward(self, g):
        x = self.inputs[0]
        c = self.exponent
        if c == 0:
            return g * 0.0, None
        if c == 1:
            return g, None
        if c == 2:
            return g * 2.0 * x, None
        return g * c * x ** (c - 1), None


class RPowScalar(Op):
    """c ** x for a constant base c."""

    saves_result = True

    def forward(self, base, x):
        xp = _xp_of_array(x)
        self.log_base = math.log(base) if base > 0 else float("nan")
        base, x = _operands(base, x)  # 2.5 ** int_tensor is a float, not 2 ** int_tensor
        return xp.asarray(base, dtype=x.dtype) ** x

    def backward(self, g):
        if self.inputs[0] == 0:
            return None, g * 0.0
        return None, g * self.result() * self.log_base


class PowTensor(Op):
    """a ** b for two tensors."""

    saves_result = True

    def forward(self, a, b):
        a, b = _operands(a, b)
        return a ** b

    def backward(self, g):
        a, b = self.inputs
        out = self.result()
        # d/da = b a^(b-1), taken as 0 at 0 ** 0 (as in PyTorch), computed without forming 0 ** -1
        origin = _const((a._data == 0) & (b._data == 0), a)
        grad_a = where(origin, 0.0, g * b * where(origin, 1.0, a) ** (b - 1))
        positive = _const(a._data > 0, a)
        log_a = where(positive, log(where(positive, a, 1.0)), 0.0)
        grad_b = g * out * log_a
        return grad_a, grad_b


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
        return _xp_of_array(x).exp(x)

    def backward(self, g):
        return g * self.result()


class Log(Op):
    def forward(self, x):
        return _xp_of_array(x).log(x)

    def backward(self, g):
        return g / self.inputs[0]


class Log1p(Op):
    def forward(self, x):
        return _xp_of_array(x).log1p(x)

    def backward(self, g):
        return g / (self.inputs[0] + 1.0)


class Expm1(Op):
    saves_result = True

    def forward(self, x):
        return _xp_of_array(x).expm1(x)

    def backward(self, g):
        return g * (self.result() + 1.0)


class Sqrt(Op):
    saves_result = True

    def forward(self, x):
        return _xp_of_array(x).sqrt(x)

    def backward(self, g):
        return g / (2.0 * self.result())


class Sin(Op):
    def forward(self, x):
        return _xp_of_array(x).sin(x)

    def backward(self, g):
        return g * self.inputs[0].cos()


class Cos(Op):
    def forward(self, x):
        return _xp_of_array(x).cos(x)

    def backward(self, g):
        return -g * self.inputs[0].sin()


class Tan(Op):
    saves_result = True

    def forward(self, x):
        return _xp_of_array(x).tan(x)

    def backward(self, g):
        out = self.result()
        return g * (1.0 + out * out)


class Asin(Op):
    def forward(self, x):
        return _xp_of_array(x).asin(x)

    def backward(self, g):
        x = self.inputs[0]
        return g / (1.0 - x * x).sqrt()


class Acos(Op):
    def forward(self, x):
        return _xp_of_array(x).acos(x)

    def backward(self, g):
        x = self.inputs[0]
        return -g / (1.0 - x * x).sqrt()


class Atan(Op):
    def forward(self, x):
        return _xp_of_array(x).atan(x)

    def backward(self, g):
        x = self.inputs[0]
        return g / (1.0 + x * x)


class Sinh(Op):
    def forward(self, x):
        return _xp_of_array(x).sinh(x)

    def backward(self, g):
        return g * self.inputs[0].cosh()


class Cosh(Op):
    def forward(self, x):
        return _xp_of_array(x).cosh(x)

    def backward(self, g):
        return g * self.inputs[0].sinh()


class Tanh(Op):
    saves_result = True

    def forward(self, x):
        return _xp_of_array(x).tanh(x)

    def backward(self, g):
        out = self.result()
        return g * (1.0 - out * out)


class Asinh(Op):
    def forward(self, x):
        return _xp_of_array(x).asinh(x)

    def backward(self, g):
        x = self.inputs[0]
        return g / (x * x + 1.0).sqrt()


class Acosh(Op):
    def forward(self, x):
        return _xp_of_array(x).acosh(x)

    def backward(self, g):
        x = self.inputs[0]
        return g / (x * x - 1.0).sqrt()


class Atanh(Op):
    def forward(self, x):
        return _xp_of_array(x).atanh(x)

    def backward(self, g):
        x = self.inputs[0]
        return g / (1.0 - x * x)


class Sigmoid(Op):
    saves_result = True

    def forward(self, x):
        xp = _xp_of_array(x)
        e = xp.exp(-xp.abs(x))  # never overflows
        return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))

    def backward(self, g):
        out = self.result()
        return g * out * (1.0 - out)


class Relu(Op):
    def forward(self, x):
        xp = _xp_of_array(x)
        return xp.where(x > 0, x, xp.zeros_like(x))

    def backward(self, g):
        x = self.inputs[0]
        return where(_const(x._data > 0, x), g, 0.0)


class Abs(Op):
    def forward(self, x):
        return _xp_of_array(x).abs(x)

    def backward(self, g):
        x = self.inputs[0]
        return g * _const(_xp_of_array(x._data).sign(x._data), x)


class Clamp(Op):
    """min(max(x, lo), hi); the gradient passes where lo <= x <= hi."""

    def forward(self, x, min=None, max=None):
        xp = _xp_of_array(x)
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
        return where(_const(inside, x), g, 0.0)


class Maximum(Op):
    """Elementwise maximum; ties share the gradient equally, as in PyTorch."""

    def forward(self, a, b):
        a, b = _operands(a, b)
        xp = _xp_of_array(a if hasattr(a, "shape") else b)
        a_arr = _asarray_like(xp, a, b if hasattr(b, "shape") else None) if not hasattr(a, "shape") else a
        b_arr = _asarray_like(xp, b, a_arr) if not hasattr(b, "shape") else b
        return xp.maximum(a_arr, b_arr)

    def backward(self, g):
        return _select_grads(self.inputs, g, operator.gt)


class Minimum(Op):
    """Elementwise minimum; ties share the gradient equally, as in PyTorch."""

    def forward(self, a, b):
        a, b = _operands(a, b)
        xp = _xp_of_array(a if hasattr(a, "shape") else b)
        a_arr = _asarray_like(xp, a, b if hasattr(b, "shape") else None) if not hasattr(a, "shape") else a
        b_arr = _asarray_like(xp, b, a_arr) if not hasattr(b, "shape") else b
        return xp.minimum(a_arr, b_arr)

    def backward(self, g):
        return _select_grads(self.inputs, g, operator.lt)


def _select_grads(inputs, g, wins):
    a, b = inputs
    like = a if isinstance(a, Tensor) else b
    xp = like._backend.xp
    ra, rb = _raw(a), _raw(b)
    dt = g._data.dtype
    weight_a = xp.where(wins(ra, rb), xp.asarray(1.0, dtype=dt),
                        xp.where(ra == rb, xp.asarray(0.5, dtype=dt), xp.asarray(0.0, dtype=dt)))
    wa = _const(weight_a, like)
    grad_a = g * wa if isinstance(a, Tensor) else None
    grad_b = g * (1.0 - wa) if isinstance(b, Tensor) else None
    return grad_a, grad_b


class Where(Op):
    """where(condition, a, b); the condition gets no gradient."""

    def forward(self, cond, a, b):
        xp = _xp_of_array(cond)
        a, b = _operands(a, b)
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
        y, x = _operands(y, x, floating=True)
        xp = _xp_of_array(y if hasattr(y, "shape") else x)
        if not hasattr(y, "shape"):
            y = xp.asarray(y, dtype=x.dtype)  # atan2 is a function: it takes arrays only
        if not hasattr(x, "shape"):
            x = xp.asarray(x, dtype=y.dtype)
        return xp.atan2(y, x)

    def backward(self, g):
        y, x = self.inputs
        denom = x * x + y * y
        return g * x / denom, -g * y / denom


class Cast(Op):
    """Change of dtype; the gradient is cast back."""

    saves_inputs = False

    def forward(self, x, dtype):
        xp = _xp_of_array(x)
        self.src = x.dtype
        self.target_name = dtype.name
        return xp.astype(x, xp_dtype(xp, dtype.name))

    def backward(self, g):
        xp = g._backend.xp
        return _wrap(xp.astype(g._data, self.src), g._backend) if not _grad_on() else Cast.apply(
            g, dtype=_dtype_named(self.src))


class Clone(Op):
    saves_inputs = False

    def forward(self, x):
        return _xp_of_array(x).asarray(x, copy=True)

    def backward(self, g):
        return g


class ToDevice(Op):
    """A copy on another device; the gradient goes back the same way."""

    saves_inputs = False
    changes_device = True

    def forward(self, x, backend):
        source = _backend_of_array(x)
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
        cond = _wrap(like._backend.xp.asarray(cond), like._backend)
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
        ra, rb = _operands(_raw(a), _raw(b))  # compare in the promoted dtype, as PyTorch does
        result = _COMPARE[name](ra, rb)
    except TypeError:
        error = foreign_array_error([v for v in (a, b) if not isinstance(v, Tensor)], like._backend)
        if error is not None:
            raise error from None
        raise
    return _wrap(result, like._backend)


def logical_not(a):
    return _wrap(a._backend.xp.logical_not(a._data), a._backend)


def sign(x):
    return _wrap(x._backend.xp.sign(x._data), x._backend)
