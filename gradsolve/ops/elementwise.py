"""Elementwise primitives: forward on backend arrays, backward on tensors, side by side.

Each backward returns one gradient per positional input (None for inputs that
are plain numbers); the engine sums broadcast dimensions away afterwards.
"""
from __future__ import annotations

import builtins
import math
import numbers
import operator

import numpy as np

from gradsolve._dtypes import dtype_from_array_dtype as _dtype_named
from gradsolve.autograd.function import Op
from gradsolve.backend import foreign_array_error, xp_dtype
from gradsolve._tensor import Tensor, wrap_array as _wrap


def _const(array, like: Tensor) -> Tensor:
    """An untracked tensor on `like`'s device (masks and other constants in backward formulas)."""
    return _wrap(array, like._backend)


def _raw(v):
    return v._data if isinstance(v, Tensor) else v


def _asarray_like(xp, value, like):
    return value if hasattr(value, "shape") else xp.asarray(value, dtype=like.dtype)


# ------------------------------------------------------- type promotion ----
# PyTorch's rule, which NumPy (0-d arrays are not weak) and the Array API
# (no int/float mixing) do not follow: operands fall in three groups, tensors
# with dimensions, 0-d tensors and Python numbers, and a later group only
# changes the result when it is of a higher category (bool < int < float).
# So float32 + 0-d float64 stays float32, and int64 + 2.5 is the default float.
_CATEGORY = {"bool": 0, "int32": 1, "int64": 1, "float32": 2, "float64": 2}
_WIDTH = {"bool": 1, "int32": 4, "int64": 8, "float32": 4, "float64": 8}
_DEFAULT_FLOAT = "float64"


def _promote_pair(a, b):
    if a is None or a == b:
        return b
    if b is None:
        return a
    ca, cb = _CATEGORY[a], _CATEGORY[b]
    if ca != cb:
        return a if ca > cb else b
    return a if _WIDTH[a] >= _WIDTH[b] else b


def _combine(higher, lower):
    """The result of a higher-priority group `higher` meeting `lower` (c10's combine_categories)."""
    if higher is None:
        return lower
    if lower is None or _CATEGORY[higher] >= _CATEGORY[lower]:
        return higher
    return _promote_pair(higher, lower)


_NAME_OF_DTYPE = {}


def _dtype_name(dt):
    # NumPy builds dtype.name anew each time: remember it per dtype, one table per
    # dtype class (NumPy's and array-api-strict's float64 hash alike but must not meet).
    names = _NAME_OF_DTYPE.get(type(dt))
    if names is None:
        names = _NAME_OF_DTYPE[type(dt)] = {}
    name = names.get(dt)
    if name is None:
        name = names[dt] = getattr(dt, "name", None) or str(dt).rsplit(".", 1)[-1]
    return name


def _array_dtype_name(x):
    return _dtype_name(x.dtype)


_CATEGORY_BY_ID = {}


def _category_of(dt):
    """0 bool, 1 int, 2 float; None for a dtype gradsolve does not hold."""
    # Keyed by identity (every op asks, and hashing a NumPy dtype is slow); the entry keeps the
    # dtype alive, so its id is never reused.
    entry = _CATEGORY_BY_ID.get(id(dt))
    if entry is None or entry[0] is not dt:
        entry = _CATEGORY_BY_ID[id(dt)] = (dt, _CATEGORY.get(_dtype_name(dt)))
    return entry[1]


def _scalar_dtype_name(v):
    if isinstance(v, (bool, np.bool_)):
        return "bool"
    if isinstance(v, numbers.Integral):
        return "int64"
    return _DEFAULT_FLOAT


def result_dtype_name(*values):
    """The dtype name PyTorch's promotion gives an operation on `values` (raw arrays and numbers)."""
    dim = zero = wrapped = None
    for v in values:
        if hasattr(v, "dtype") and not isinstance(v, np.generic):
            name = _array_dtype_name(v)
            if v.ndim:
                dim = _promote_pair(dim, name)
            else:
                zero = _promote_pair(zero, name)
        else:
            wrapped = _promote_pair(wrapped, _scalar_dtype_name(v))
    return _combine(dim, _combine(zero, wrapped))


def _operands(a, b, floating=False):
    """`a` and `b` (raw arrays or numbers) brought to their promoted dtype.

    Arrays are cast; numbers stay Python numbers (both backends keep an array's
    dtype against one) of the result's kind. `floating` asks for a float result
    whatever the inputs, as true division does.
    """
    da = getattr(a, "dtype", None)
    db = getattr(b, "dtype", None)
    # Fast paths for the common cases, which need no cast: one dtype on both sides,
    # and a float array with a Python number (or an int array with a Python int).
    if da is not None:
        if db is not None:
            if da is db and (not floating or _category_of(da) == 2):
                return a, b
        elif type(b) is float or type(b) is int:
            kind = _category_of(da)
            if kind == 2 or (kind == 1 and type(b) is int and not floating):
                return a, b
    elif db is not None and (type(a) is float or type(a) is int):
        kind = _category_of(db)
        if kind == 2 or (kind == 1 and type(a) is int and not floating):
            return a, b
    for v in (a, b):
        if not hasattr(v, "dtype") and not isinstance(v, (numbers.Real, np.bool_)):
            return a, b  # lists, None, complex...: left to the backend's own rules
    if isinstance(a, np.generic):
        a = a.item()  # NumPy scalars count as Python numbers, as in PyTorch
    if isinstance(b, np.generic):
        b = b.item()
    try:
        target = result_dtype_name(a, b)
    except KeyError:  # a dtype gradsolve does not hold (raw arrays from elsewhere): the backend decides
        return a, b
    if floating and _CATEGORY[target] != 2:
        target = _DEFAULT_FLOAT
    return _to_dtype_name(a, target), _to_dtype_name(b, target)


def _to_dtype_name(v, name):
    if hasattr(v, "dtype"):
        if _array_dtype_name(v) == name:
            return v
        xp = _xp_of_array(v)
        return xp.astype(v, xp_dtype(xp, name))
    kind = _CATEGORY[name]
    return builtins.float(v) if kind == 2 else int(v) if kind == 1 else v


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


_NAMESPACE_BY_TYPE = {np.ndarray: np}


def _xp_of_array(x):
    """The array namespace of a backend array (cached per array type)."""
    xp = _NAMESPACE_BY_TYPE.get(type(x))
    if xp is None:
        import importlib

        module = type(x).__module__.split(".")[0]
        xp = importlib.import_module(module)
        _NAMESPACE_BY_TYPE[type(x)] = xp
    return xp


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


def _backend_of_array(x):
    from gradsolve.backend import get_backend
    import numpy as np

    if isinstance(x, np.ndarray):
        return get_backend("cpu")
    module = type(x).__module__
    if module.startswith("cupy"):
        return get_backend("cuda")
    return get_backend("array-api-strict")


def _grad_on():
    from gradsolve.autograd.grad_mode import _State

    return _State.enabled


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
