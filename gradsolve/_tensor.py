"""The Tensor: an array in a backend namespace, plus what autograd needs.

Float data defaults to float64: gradsolve is a numerical solver, and float32
loses digits that least-squares answers need. Pass ``dtype=gs.float32`` where
speed matters more.

>>> import gradsolve as gs
>>> x = gs.tensor([1.0, 2.0], requires_grad=True)
>>> (x * x).sum().backward()
>>> x.grad
tensor([2., 4.])
"""
from __future__ import annotations

import builtins
import weakref

import numpy as np

from gradsolve._dtypes import (
    TYPED_TENSOR_NAMES, TypedTensor, as_dtype, bool_, dtype, dtype_of_array, float32, float64, int32, int64,
)
from gradsolve._tensor_str import tensor_repr
from gradsolve.backend import Backend, get_backend


# ---------------------------------------------------------------- devices ---
class device(str):
    """A device name that compares equal to its string: ``gs.device("cpu") == "cpu"``."""

    def __new__(cls, name="cpu", index=None):
        name = str(name)
        if index is not None:
            name = f"{name}:{index}"
        return super().__new__(cls, name)

    @property
    def type(self):
        return self.split(":")[0]

    def __repr__(self):
        return f"device(type='{self.type}')"


# ---------------------------------------------------------------- tensor ----
def wrap_array(data, backend: Backend) -> "Tensor":
    """A new untracked tensor around a backend array (the fast internal constructor)."""
    t = Tensor.__new__(Tensor)
    if backend.is_numpy and type(data) is not np.ndarray:
        data = np.asarray(data)  # NumPy returns scalars from 0-d arithmetic; keep arrays
    t._data = data
    t._backend = backend
    t._requires_grad = False
    t.grad = None
    t.grad_fn = None
    t._version = [0]
    t._output_nr = 0
    t._retains_grad = False
    return t


def constant_like(array, like: "Tensor") -> "Tensor":
    """An untracked tensor on `like`'s device (masks and other constants in backward formulas)."""
    return wrap_array(array, like._backend)


class Tensor:
    """An n-dimensional array that can record the operations applied to it."""

    __slots__ = ("_data", "_backend", "_requires_grad", "grad", "grad_fn", "_version", "_output_nr",
                 "_retains_grad", "__weakref__")
    __array_priority__ = 1000  # numpy scalars on the left defer to our reflected operators

    def __init__(self, data, dtype=None, device="cpu", requires_grad=False):
        made = tensor(data, dtype=dtype, device=device, requires_grad=requires_grad)
        for slot in Tensor.__slots__[:-1]:
            setattr(self, slot, getattr(made, slot))

    # -- basic facts ---------------------------------------------------------
    @property
    def shape(self):
        return tuple(self._data.shape)

    def size(self, dim=None):
        shape = tuple(self._data.shape)
        return shape if dim is None else shape[dim]

    @property
    def ndim(self):
        return self._data.ndim

    def dim(self):
        return self._data.ndim

    def numel(self):
        n = 1
        for s in self._data.shape:
            n *= s
        return n

    def __len__(self):
        if self._data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self._data.shape[0]

    @property
    def dtype(self) -> dtype:
        return dtype_of_array(self._data)

    @property
    def device(self) -> device:
        return device(self._backend.name)

    @property
    def is_leaf(self):
        return self.grad_fn is None

    @property
    def is_cuda(self):
        return self._backend.name == "cuda"

    @property
    def _xp(self):
        return self._backend.xp

    def is_floating_point(self):
        return self.dtype.is_floating_point

    # -- conversion ----------------------------------------------------------
    def item(self):
        if self.numel() != 1:
            raise ValueError(f"item() needs a tensor with one element, this one has shape {self.shape}")
        value = self._backend.to_numpy(self._data).reshape(()).item()
        return value

    def tolist(self):
        return self._backend.to_numpy(self._data).tolist()

    def numpy(self):
        # PyTorch refuses on a tensor that requires grad; reading values is harmless here, so allow it
        return self._backend.to_numpy(self._data)

    def __array__(self, dtype=None, copy=None):
        arr = self.numpy()
        return arr if dtype is None else arr.astype(dtype)

    def __float__(self):
        return builtins.float(self.item())

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        if self.numel() != 1:
            raise RuntimeError("the truth value of a tensor with more than one element is ambiguous: use .any() or .all()")
        return bool(self.item())

    def __index__(self):
        if self.dtype.is_floating_point or self.numel() != 1:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self.item())

    # Identity hashing (tensors are graph nodes and dict keys; == is elementwise), at C speed:
    # a Python-level __hash__ costs a frame per dict lookup in every backward pass.
    __hash__ = object.__hash__

    def __iter__(self):
        if self._data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self._data.shape[0]))

    def __repr__(self):
        return tensor_repr(self)

    __str__ = __repr__

    # -- autograd ------------------------------------------------------------
    @property
    def data(self) -> "Tensor":
        """The same storage, detached: changes through it are not recorded."""
        t = wrap_array(self._data, self._backend)
        t._version = self._version
        return t

    @data.setter
    def data(self, value):
        value = value if isinstance(value, Tensor) else tensor(value, device=self._backend)
        self._data = value._data
        self._backend = value._backend

    def detach(self) -> "Tensor":
        return self.data

    def detach_(self):
        if self._retains_grad:
            _forget_retained(self)
        self.grad_fn = None
        self._requires_grad = False
        return self

    # The engine reads and writes the `_requires_grad` slot directly; the property checks
    # what users set, as PyTorch does.
    @property
    def requires_grad(self):
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, requires_grad):
        if self.grad_fn is not None:
            raise RuntimeError(_LEAF_ONLY_MESSAGE if requires_grad else _LEAF_ONLY_MESSAGE + _DETACH_HINT)
        self._set_requires_grad(requires_grad)

    def requires_grad_(self, requires_grad=True):
        if self.grad_fn is not None:
            if not requires_grad:
                raise RuntimeError(_LEAF_ONLY_MESSAGE + _DETACH_HINT)
            return self  # a result already requires grad
        self._set_requires_grad(requires_grad)
        return self

    def _set_requires_grad(self, requires_grad):
        requires_grad = builtins.bool(requires_grad)
        if requires_grad and not dtype_of_array(self._data).is_floating_point:
            raise RuntimeError("only Tensors of floating point dtype can require gradients")
        self._requires_grad = requires_grad

    def retain_grad(self):
        """Keep this result's gradient in ``.grad`` after backward (leaves keep theirs anyway)."""
        if not self.requires_grad:
            raise RuntimeError("can't retain_grad on a tensor that does not require grad (requires_grad=False)")
        if self.grad_fn is None or self._retains_grad:
            return
        # The engine hands the gradient reaching this output of grad_fn to the tensor; a weak
        # reference, so the graph does not keep the tensor (and its data) alive.
        node = self.grad_fn
        if node._retained is None:
            node._retained = []
        node._retained.append((self._output_nr, weakref.ref(self)))
        self._retains_grad = True

    @property
    def retains_grad(self):
        """True for a non-leaf on which retain_grad() was called."""
        return self._retains_grad

    def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
        """Backpropagate from this tensor, adding into the leaves' ``.grad``.

        With ``inputs`` (tensors), only their ``.grad`` receive gradients, as in PyTorch.
        """
        from gradsolve.autograd.engine import accumulate_into, run_backward, seed_gradient

        if not self._requires_grad:
            raise RuntimeError("element 0 of tensors does not require grad and does not have a grad_fn")
        seed = seed_gradient(self, gradient)
        if retain_graph is None:
            retain_graph = create_graph
        if inputs is None:
            run_backward([self], [seed], retain_graph=retain_graph, create_graph=create_graph)
        else:
            accumulate_into(inputs, [self], [seed], retain_graph=retain_graph, create_graph=create_graph)

    # -- in place ------------------------------------------------------------
    def _check_inplace(self):
        if self._requires_grad and GradMode.enabled:
            if self.grad_fn is None:
                raise RuntimeError(
                    "a leaf tensor that requires grad is being used in an in-place operation: "
                    "wrap the update in `with gs.no_grad():` or change .data"
                )
            raise RuntimeError(
                "in-place operations on results that require grad are not supported: use the out-of-place form"
            )

    def _assign_(self, array):
        """Overwrite the values in place from a backend array (bumps the version)."""
        self._data[...] = array
        self._version[0] += 1
        return self

    def _inplace(self, new_values):
        self._check_inplace()
        self._data[...] = new_values
        self._version[0] += 1
        return self

    def _inplace_operator(self, apply):
        """Run an in-place array operator (+=, -=, ...) on the storage and bump the version."""
        self._check_inplace()
        try:
            self._data = apply(self._data)
        except TypeError as exc:  # e.g. an int tensor updated with floats
            raise RuntimeError(f"in-place update of a {self.dtype.name} tensor failed: {exc}") from None
        self._version[0] += 1
        return self

    def _other_raw(self, other):
        return other._data if isinstance(other, Tensor) else other

    def add_(self, other, alpha=1):
        o = self._other_raw(other)
        o = o if alpha == 1 else alpha * o

        def apply(d):
            d += o
            return d
        return self._inplace_operator(apply)

    def sub_(self, other, alpha=1):
        o = self._other_raw(other)
        o = o if alpha == 1 else alpha * o

        def apply(d):
            d -= o
            return d
        return self._inplace_operator(apply)

    def mul_(self, other):
        o = self._other_raw(other)

        def apply(d):
            d *= o
            return d
        return self._inplace_operator(apply)

    def div_(self, other):
        o = self._other_raw(other)

        def apply(d):
            d /= o
            return d
        return self._inplace_operator(apply)

    def pow_(self, exponent):
        return self._inplace(self._data ** self._other_raw(exponent))

    def zero_(self):
        return self._inplace(0)

    def fill_(self, value):
        xp = self._backend.xp
        if isinstance(value, Tensor):
            if value._data.ndim:
                raise RuntimeError("fill_ only supports 0-dimension value tensor but got tensor with "
                                   f"{value.ndim} dimensions")
            if value._backend is not self._backend:
                raise RuntimeError(f"expected all tensors on the same device, found {self._backend.name} and "
                                   f"{value._backend.name}: move one with .to(device)")
            return self._inplace(xp.astype(value._data, self._data.dtype))  # broadcast by the assignment
        return self._inplace(xp.full_like(self._data, value))

    def copy_(self, src):
        src_raw = src._data if isinstance(src, Tensor) else self._backend.asarray(src)
        if isinstance(src, Tensor) and src._backend is not self._backend:
            src_raw = self._backend.from_numpy(src.numpy())
        return self._inplace(self._backend.xp.astype(self._backend.xp.broadcast_to(src_raw, self._data.shape),
                                                     self._data.dtype))

    def clamp_(self, min=None, max=None):
        return self._inplace(_clip(self._backend.xp, self._data, min, max))

    def addcmul_(self, t1, t2, value=1):
        return self._inplace(self._data + value * (t1._data * t2._data))

    def addcdiv_(self, t1, t2, value=1):
        return self._inplace(self._data + value * (t1._data / t2._data))

    def __iadd__(self, other):
        return self.add_(other)

    def __isub__(self, other):
        return self.sub_(other)

    def __imul__(self, other):
        return self.mul_(other)

    def __itruediv__(self, other):
        return self.div_(other)

    def __setitem__(self, key, value):
        self._check_inplace()
        key = _full_index(_raw_index(key, self._backend), self._data.ndim)
        self._backend.setitem(self._data, key, self._other_raw(value))
        self._version[0] += 1

    # -- conversions between devices and dtypes ----------------------------------
    def to(self, *args, dtype=None, device=None, copy=False):
        for a in args:
            if isinstance(a, (dtype_cls, TypedTensor)) or (isinstance(a, type) and a in (builtins.float, builtins.int)):
                dtype = a
            elif isinstance(a, Tensor):
                dtype, device = a.dtype, a.device
            else:
                device = a
        out = self
        if device is not None:
            backend = get_backend(device)
            if backend is not self._backend:
                out = _ops.ToDevice.apply(out, backend=backend)
        if dtype is not None:
            d = as_dtype(dtype)
            if d is not out.dtype:
                out = _ops.Cast.apply(out, dtype=d)
        if copy and out is self:
            out = self.clone()
        return out

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    def type(self, dtype=None):
        if dtype is None:
            return f"gradsolve.{TYPED_TENSOR_NAMES[self.dtype.name]}"
        return self.to(dtype=dtype)

    def float(self):
        return self.to(dtype=float32)

    def double(self):
        return self.to(dtype=float64)

    def long(self):
        return self.to(dtype=int64)

    def int(self):
        return self.to(dtype=int32)

    def bool(self):
        return self.to(dtype=bool_)

    def clone(self):
        return _ops.Clone.apply(self)

    def contiguous(self):
        return self

    # -- arithmetic ----------------------------------------------------------
    def __add__(self, other):
        return _ops.Add.apply_binary(self, other)

    def __radd__(self, other):
        return _ops.Add.apply_binary(other, self)

    def __sub__(self, other):
        return _ops.Sub.apply_binary(self, other)

    def __rsub__(self, other):
        return _ops.Sub.apply_binary(other, self)

    def __mul__(self, other):
        return _ops.Mul.apply_binary(self, other)

    def __rmul__(self, other):
        return _ops.Mul.apply_binary(other, self)

    def __truediv__(self, other):
        return _ops.Div.apply_binary(self, other)

    def __rtruediv__(self, other):
        return _ops.Div.apply_binary(other, self)

    def __pow__(self, other):
        return _ops.pow(self, other)

    def __rpow__(self, other):
        return _ops.pow(other, self)

    def __neg__(self):
        return _ops.Neg.apply(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return _ops.Abs.apply(self)

    def __matmul__(self, other):
        return _ops.matmul(self, other)

    def __rmatmul__(self, other):
        return _ops.matmul(other, self)

    # comparisons: bool tensors, never differentiable
    def __lt__(self, other):
        return _ops.compare(self, other, "less")

    def __le__(self, other):
        return _ops.compare(self, other, "less_equal")

    def __gt__(self, other):
        return _ops.compare(self, other, "greater")

    def __ge__(self, other):
        return _ops.compare(self, other, "greater_equal")

    def __eq__(self, other):
        return _ops.compare(self, other, "equal")

    def __ne__(self, other):
        return _ops.compare(self, other, "not_equal")

    def __invert__(self):
        return _ops.logical_not(self)

    def __and__(self, other):
        return _ops.compare(self, other, "logical_and")

    def __or__(self, other):
        return _ops.compare(self, other, "logical_or")

    def eq(self, other):
        return self == other

    def ne(self, other):
        return self != other

    def lt(self, other):
        return self < other

    def le(self, other):
        return self <= other

    def gt(self, other):
        return self > other

    def ge(self, other):
        return self >= other

    def any(self):
        return wrap_array(self._backend.xp.any(self._data), self._backend)

    def all(self):
        return wrap_array(self._backend.xp.all(self._data), self._backend)

    # -- elementwise functions -----------------------------------------------
    def add(self, other, alpha=1):
        return self + (other if alpha == 1 else other * alpha)

    def sub(self, other, alpha=1):
        return self - (other if alpha == 1 else other * alpha)

    def mul(self, other):
        return self * other

    def div(self, other):
        return self / other

    def pow(self, exponent):
        return _ops.pow(self, exponent)

    def neg(self):
        return -self

    def abs(self):
        return _ops.Abs.apply(self)

    def exp(self):
        return _ops.Exp.apply(self)

    def log(self):
        return _ops.Log.apply(self)

    def log1p(self):
        return _ops.Log1p.apply(self)

    def expm1(self):
        return _ops.Expm1.apply(self)

    def sqrt(self):
        return _ops.Sqrt.apply(self)

    def square(self):
        return _ops.Mul.apply(self, self)

    def sin(self):
        return _ops.Sin.apply(self)

    def cos(self):
        return _ops.Cos.apply(self)

    def tan(self):
        return _ops.Tan.apply(self)

    def asin(self):
        return _ops.Asin.apply(self)

    def acos(self):
        return _ops.Acos.apply(self)

    def atan(self):
        return _ops.Atan.apply(self)

    def sinh(self):
        return _ops.Sinh.apply(self)

    def cosh(self):
        return _ops.Cosh.apply(self)

    def tanh(self):
        return _ops.Tanh.apply(self)

    def asinh(self):
        return _ops.Asinh.apply(self)

    def acosh(self):
        return _ops.Acosh.apply(self)

    def atanh(self):
        return _ops.Atanh.apply(self)

    def sigmoid(self):
        return _ops.Sigmoid.apply(self)

    def relu(self):
        return _ops.Relu.apply(self)

    def sign(self):
        return _ops.sign(self)

    def clamp(self, min=None, max=None):
        if min is None and max is None:
            raise ValueError("clamp needs min, max or both")
        return _ops.Clamp.apply(self, min=min, max=max)

    clip = clamp

    def maximum(self, other):
        return _ops.Maximum.apply(self, other)

    def minimum(self, other):
        return _ops.Minimum.apply(self, other)

    # -- reductions ----------------------------------------------------------
    def sum(self, dim=None, keepdim=False):
        return _ops.Sum.apply(self, dim=_dims(dim), keepdim=keepdim)

    def mean(self, dim=None, keepdim=False):
        return _ops.mean(self, dim=_dims(dim), keepdim=keepdim)

    def prod(self, dim=None, keepdim=False):
        return _ops.Prod.apply(self, dim=_dims(dim), keepdim=keepdim)

    def max(self, dim=None, keepdim=False):
        if isinstance(dim, Tensor):
            return _ops.Maximum.apply(self, dim)
        return _ops.reduce_extreme(self, dim, keepdim, "max")

    def min(self, dim=None, keepdim=False):
        if isinstance(dim, Tensor):
            return _ops.Minimum.apply(self, dim)
        return _ops.reduce_extreme(self, dim, keepdim, "min")

    def amax(self, dim=None, keepdim=False):
        return _ops.Amax.apply(self, dim=_dims(dim), keepdim=keepdim)

    def amin(self, dim=None, keepdim=False):
        return _ops.Amin.apply(self, dim=_dims(dim), keepdim=keepdim)

    def argmax(self, dim=None, keepdim=False):
        return _ops.argextreme(self, dim, keepdim, "argmax")

    def argmin(self, dim=None, keepdim=False):
        return _ops.argextreme(self, dim, keepdim, "argmin")

    def norm(self, p=2, dim=None, keepdim=False):
        return _ops.norm(self, p=p, dim=_dims(dim), keepdim=keepdim)

    # -- linear algebra ------------------------------------------------------
    def matmul(self, other):
        return _ops.matmul(self, other)

    def mm(self, other):
        if self.ndim != 2 or (isinstance(other, Tensor) and other.ndim != 2):
            raise RuntimeError(f"mm needs two matrices, got shapes {self.shape} and {getattr(other, 'shape', None)}")
        return _ops.matmul(self, other)

    def dot(self, other):
        return (self * other).sum()

    # -- shape ---------------------------------------------------------------
    def reshape(self, *shape):
        return _ops.Reshape.apply(self, shape=_shape_arg(shape, self.numel()))

    def view(self, *shape):
        return self.reshape(*shape)

    def view_as(self, other):
        return self.reshape(other.shape)

    def flatten(self, start_dim=0, end_dim=-1):
        shape = self.shape
        if not shape:
            return self.reshape(1)
        start = start_dim % len(shape)
        end = end_dim % len(shape)
        n = 1
        for s in shape[start:end + 1]:
            n *= s
        return self.reshape(shape[:start] + (n,) + shape[end + 1:])

    def squeeze(self, dim=None):
        shape = self.shape
        if dim is None:
            new = tuple(s for s in shape if s != 1)
        else:
            dims = {d % len(shape) for d in (dim if isinstance(dim, (tuple, list)) else (dim,))} if shape else set()
            new = tuple(s for i, s in enumerate(shape) if not (i in dims and s == 1))
        return self.reshape(new) if new != shape else self

    def unsqueeze(self, dim):
        shape = list(self.shape)
        dim = dim % (len(shape) + 1)
        shape.insert(dim, 1)
        return self.reshape(tuple(shape))

    def permute(self, *dims):
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = tuple(dims[0])
        n = self.ndim
        return _ops.Permute.apply(self, dims=tuple(d % n for d in dims))

    def transpose(self, dim0=0, dim1=1):
        n = self.ndim
        if n < 2:
            return self
        dims = list(range(n))
        dim0, dim1 = dim0 % n, dim1 % n
        dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
        return _ops.Permute.apply(self, dims=tuple(dims))

    def t(self):
        return self.transpose(0, 1)

    @property
    def T(self):
        return _ops.Permute.apply(self, dims=tuple(reversed(range(self.ndim)))) if self.ndim >= 2 else self

    @property
    def mT(self):
        return self.transpose(-2, -1)

    def expand(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        own = self.shape
        lead = len(shape) - len(own)
        target = tuple(own[i - lead] if (s == -1 and i >= lead) else s for i, s in enumerate(shape))
        return _ops.Expand.apply(self, shape=target)

    def expand_as(self, other):
        return self.expand(other.shape)

    def __getitem__(self, key):
        return _ops.Index.apply(self, key=_full_index(_raw_index(key, self._backend), self._data.ndim))


dtype_cls = dtype
_LEAF_ONLY_MESSAGE = "you can only change requires_grad flags of leaf variables."
_DETACH_HINT = (" If you want to use a computed variable in a subgraph that doesn't require differentiation "
                "use var_no_grad = var.detach().")


def _forget_retained(t):
    node = t.grad_fn
    if node is not None and node._retained:
        node._retained = [(nr, ref) for nr, ref in node._retained if ref() is not t] or None
    t._retains_grad = False


def _dims(dim):
    if dim is None:
        return None
    if isinstance(dim, (tuple, list)):
        return tuple(dim)
    return (dim,)


def _shape_arg(shape, numel):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    shape = tuple(int(s) for s in shape)
    if shape.count(-1) > 1:
        raise RuntimeError("only one dimension can be inferred (-1)")
    if -1 in shape:
        known = 1
        for s in shape:
            if s != -1:
                known *= s
        if known == 0 or numel % known:
            raise RuntimeError(f"shape {shape} is invalid for input of size {numel}")
        shape = tuple(numel // known if s == -1 else s for s in shape)
    total = 1
    for s in shape:
        total *= s
    if total != numel:
        raise RuntimeError(f"shape {shape} is invalid for input of size {numel}")
    return shape


def _raw_index(key, backend):
    """An indexing key on backend arrays: tensors unwrapped, Python lists made index arrays.

    Lists become integer (or, all bools, mask) arrays at any position of a tuple
    key, so that `x[[0, 0, 1], :]` is advanced indexing and its backward knows to
    accumulate repeated positions.
    """
    if isinstance(key, tuple):
        return tuple(_raw_index_part(k, backend) for k in key)
    return _raw_index_part(key, backend)


def _raw_index_part(k, backend):
    if isinstance(k, Tensor):
        return k._data
    if isinstance(k, list):
        arr = np.asarray(k)
        if arr.size == 0:
            arr = arr.astype(np.int64)  # `x[[]]` selects nothing; NumPy would read [] as float
        elif arr.dtype.kind not in "iub":
            raise IndexError(f"tensors used as indices must be integer or bool, got a list of {arr.dtype}")
        elif arr.dtype.kind != "b":
            arr = arr.astype(np.int64)
        return backend.from_numpy(arr)
    return k


def _full_index(key, ndim):
    """Spell out trailing dims with `...`, which the Array API requires and NumPy implies.

    A basic key (no index arrays) always gets the `...`: then `x[0]` of a vector is a
    0-d view, as in PyTorch, rather than a NumPy scalar copy.
    """
    if isinstance(key, tuple):
        parts = key
    else:
        if "bool" in str(getattr(key, "dtype", "")):
            return key  # a boolean mask must stay the sole index
        parts = (key,)
    if any(p is Ellipsis for p in parts):
        return key
    if not any(hasattr(p, "shape") for p in parts):
        return parts + (Ellipsis,)
    used = sum(1 for p in parts if p is not None)
    if used >= ndim:
        return key
    return parts + (Ellipsis,)


def _clip(xp, data, lo, hi):
    if lo is not None:
        data = xp.where(data < lo, xp.asarray(lo, dtype=data.dtype), data)
    if hi is not None:
        data = xp.where(data > hi, xp.asarray(hi, dtype=data.dtype), data)
    return data


# Imported last: the creation functions, autograd and ops build on the Tensor class defined above.
from gradsolve._creation import tensor  # noqa: E402
from gradsolve.autograd.grad_mode import GradMode  # noqa: E402
from gradsolve import ops as _ops  # noqa: E402
