"""Movement primitives: reshape, permute, expand/sum_to, indexing, concatenation.

Reshape, Permute, Expand and basic indexing return views where the backend
does: such an output shares its input's version counter, as in PyTorch, so an
in-place change through either one is seen by every graph that saved the other.
"""
from __future__ import annotations

import numpy as np

from gradsolve.autograd.function import Op
from gradsolve.ops.array_namespace import backend_of_array, xp_of_array
from gradsolve._tensor import Tensor


def _numpy_view_of(out, x) -> bool:
    """Whether the NumPy array `out` shares memory with `x`: `.base` first (cheap), bounds if unsure."""
    base = out.base
    if base is None:
        return False  # owns its memory: a copy
    if base is x or (base is x.base and base is not None):
        return True
    return np.may_share_memory(out, x)


class Reshape(Op):
    saves_inputs = False

    @classmethod
    def apply(cls, x, shape):
        out = super().apply(x, shape=shape)
        # NumPy copies when the strides do not allow a view; other backends are taken to view.
        if type(out._data) is not np.ndarray or _numpy_view_of(out._data, x._data):
            out._version = x._version
        return out

    def forward(self, x, shape):
        self.in_shape = tuple(x.shape)
        return xp_of_array(x).reshape(x, shape)

    def backward(self, g):
        return Reshape.apply(g, shape=self.in_shape)


class Permute(Op):
    saves_inputs = False

    @classmethod
    def apply(cls, x, dims):
        out = super().apply(x, dims=dims)
        out._version = x._version  # always a view
        return out

    def forward(self, x, dims):
        self.dims = dims
        return xp_of_array(x).permute_dims(x, dims)

    def backward(self, g):
        inverse = [0] * len(self.dims)
        for i, d in enumerate(self.dims):
            inverse[d] = i
        return Permute.apply(g, dims=tuple(inverse))


class Expand(Op):
    """Broadcast to a larger shape; the adjoint of broadcasting is a sum."""

    saves_inputs = False

    @classmethod
    def apply(cls, x, shape):
        out = super().apply(x, shape=shape)
        out._version = x._version  # always a view
        return out

    def forward(self, x, shape):
        self.in_shape = tuple(x.shape)
        return xp_of_array(x).broadcast_to(x, shape)

    def backward(self, g):
        return SumTo.apply(g, shape=self.in_shape)


class SumTo(Op):
    """Sum a broadcast gradient back down to `shape`."""

    saves_inputs = False

    def forward(self, g, shape):
        xp = xp_of_array(g)
        self.in_shape = tuple(g.shape)
        lead = g.ndim - len(shape)
        if lead:
            g = xp.sum(g, axis=tuple(range(lead)))
        axes = tuple(i for i, s in enumerate(shape) if s == 1 and g.shape[i] != 1)
        if axes:
            g = xp.sum(g, axis=axes, keepdims=True)
        return g

    def backward(self, gg):
        return Expand.apply(gg, shape=self.in_shape)


def _has_integer_array(key) -> bool:
    """Whether `key` holds an integer index array: only those can name a position twice."""
    keys = key if isinstance(key, tuple) else (key,)
    for k in keys:
        dt = getattr(k, "dtype", None)
        if dt is not None and "bool" not in str(dt):
            return True
    return False


def _has_index_array(key) -> bool:
    """Whether `key` holds an index array or mask (advanced indexing, which copies)."""
    keys = key if isinstance(key, tuple) else (key,)
    for k in keys:
        if hasattr(k, "shape"):
            return True
    return False


def _private_key(key):
    """`key` with its index arrays copied: changing the caller's index tensor afterwards must not
    move where backward scatters (PyTorch raises there instead; a copy gives the right gradient)."""
    if isinstance(key, tuple):
        return tuple(xp_of_array(k).asarray(k, copy=True) if hasattr(k, "shape") else k for k in key)
    return xp_of_array(key).asarray(key, copy=True)


class Index(Op):
    """x[key] for slices, integers, integer arrays and boolean masks (NumPy's rules on every backend).

    Basic keys (integers, slices, None, ...) give a view that shares the input's
    version counter; index arrays and masks give a copy.
    """

    saves_inputs = False

    @classmethod
    def apply(cls, x, key):
        out = super().apply(x, key=key)
        if type(out._data) is np.ndarray:
            if _numpy_view_of(out._data, x._data):
                out._version = x._version
        elif not _has_index_array(key):
            out._version = x._version
        return out

    def forward(self, x, key):
        self.in_shape = tuple(x.shape)
        if _has_index_array(key):
            key = _private_key(key)
        self.key = key
        if type(x) is np.ndarray:
            return x[key]
        return backend_of_array(x).getitem(x, key)

    def backward(self, g):
        return IndexAdd.apply(g, key=self.key, shape=self.in_shape)


class IndexAdd(Op):
    """zeros(shape) with g added at `key`; repeated indices accumulate (the backward of Index)."""

    saves_inputs = False

    def forward(self, g, key, shape):
        backend = backend_of_array(g)
        self.key = key
        out = backend.xp.zeros(shape, dtype=g.dtype)
        if _has_integer_array(key):
            backend.scatter_add(out, key, g)  # x[[0, 0]] reads x[0] twice: its gradient is the sum
        else:
            backend.setitem(out, key, g)  # slices and masks never repeat a position
        return out

    def backward(self, gg):
        return Index.apply(gg, key=self.key)


class Cat(Op):
    saves_inputs = False

    def forward(self, *arrays, dim=0):
        xp = xp_of_array(arrays[0])
        ndim = arrays[0].ndim
        self.dim = dim % ndim
        self.sizes = [a.shape[self.dim] for a in arrays]
        return xp.concat(list(arrays), axis=self.dim)

    def backward(self, g):
        grads = []
        start = 0
        lead = (slice(None),) * self.dim
        for size in self.sizes:
            grads.append(g[lead + (slice(start, start + size),)])
            start += size
        return tuple(grads)


def cat(tensors, dim=0):
    """Join tensors along an existing dimension."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat needs at least one tensor")
    return Cat.apply(*tensors, dim=dim)


def stack(tensors, dim=0):
    """Join tensors along a new dimension."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack needs at least one tensor")
    shape = tensors[0].shape
    for t in tensors:
        if t.shape != shape:
            raise RuntimeError(f"stack expects tensors of equal shape, got {shape} and {t.shape}")
    dim = dim % (len(shape) + 1)
    return Cat.apply(*[t.unsqueeze(dim) for t in tensors], dim=dim)


def _is_tensor(x):
    return isinstance(x, Tensor)
