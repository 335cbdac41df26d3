"""Everything `import gradsolve as gs` offers, loaded on first use (see gradsolve/__init__.py)."""
from __future__ import annotations

from gradsolve.backend import DeviceError, cuda_available, manual_seed  # noqa: F401
from gradsolve._dtypes import (  # noqa: F401
    BoolTensor, DoubleTensor, FloatTensor, IntTensor, LongTensor, bool_, double, dtype, float, float32, float64, int32,
    int64, long,
)
from gradsolve._tensor import Tensor, device  # noqa: F401
from gradsolve._creation import (  # noqa: F401
    arange, as_tensor, empty, eye, from_numpy, full, full_like, is_tensor, linspace, ones, ones_like, rand, rand_like,
    randn, randn_like, tensor, zeros, zeros_like,
)
from gradsolve.autograd.grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled  # noqa: F401
from gradsolve import autograd  # noqa: F401
from gradsolve import nn  # noqa: F401
from gradsolve.ops import cat, matmul, stack, where  # noqa: F401

bool = bool_  # noqa: A001 - PyTorch's spellings of the dtypes
int = int32  # noqa: A001 - torch.int is int32 (gs.float is float32, gs.double float64, gs.long int64)


# Functional forms of the tensor methods: gs.exp(t) is t.exp().
def _method(name):
    def call(input, *args, **kwargs):
        if not isinstance(input, Tensor):
            input = tensor(input)
        return getattr(input, name)(*args, **kwargs)

    call.__name__ = name
    call.__doc__ = f"gs.{name}(t, ...) is t.{name}(...)."
    return call


abs = _method("abs")  # noqa: A001
exp = _method("exp")
log = _method("log")
log1p = _method("log1p")
expm1 = _method("expm1")
sqrt = _method("sqrt")
square = _method("square")
sin = _method("sin")
cos = _method("cos")
tan = _method("tan")
asin = _method("asin")
acos = _method("acos")
atan = _method("atan")
sinh = _method("sinh")
cosh = _method("cosh")
tanh = _method("tanh")
asinh = _method("asinh")
acosh = _method("acosh")
atanh = _method("atanh")
sigmoid = _method("sigmoid")
relu = _method("relu")
sign = _method("sign")
clamp = _method("clamp")
clip = _method("clamp")
sum = _method("sum")  # noqa: A001
mean = _method("mean")
prod = _method("prod")
amax = _method("amax")
amin = _method("amin")
argmax = _method("argmax")
argmin = _method("argmin")
norm = _method("norm")
mm = _method("mm")
reshape = _method("reshape")
transpose = _method("transpose")
permute = _method("permute")
squeeze = _method("squeeze")
unsqueeze = _method("unsqueeze")
flatten = _method("flatten")
neg = _method("neg")
add = _method("add")
sub = _method("sub")
mul = _method("mul")
div = _method("div")
pow = _method("pow")  # noqa: A001


def max(input, dim=None, keepdim=False):  # noqa: A001
    """Largest element, (values, indices) along `dim`, or the elementwise maximum of two tensors."""
    if isinstance(dim, Tensor):
        return maximum(input, dim)
    return input.max(dim, keepdim)


def min(input, dim=None, keepdim=False):  # noqa: A001
    """Smallest element, (values, indices) along `dim`, or the elementwise minimum of two tensors."""
    if isinstance(dim, Tensor):
        return minimum(input, dim)
    return input.min(dim, keepdim)


def maximum(a, b):
    from gradsolve.ops import Maximum

    return Maximum.apply(a, b)


def minimum(a, b):
    from gradsolve.ops import Minimum

    return Minimum.apply(a, b)


def atan2(y, x):
    from gradsolve.ops import Atan2

    return Atan2.apply(y, x)


