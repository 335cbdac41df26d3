"""Reductions: sum, prod, amax/amin, max/min along a dim, p-norms; mean and the 1- and inf-norms are composites."""
from __future__ import annotations

import collections

from gradsolve.autograd.function import Op
from gradsolve.autograd.grad_mode import GradMode
from gradsolve.ops.array_namespace import xp_of_array
from gradsolve.ops.elementwise import Clone, sign, where
from gradsolve.ops.promotion import category_of
from gradsolve._tensor import Tensor, constant_like, wrap_array


def _axes(dim, ndim):
    if dim is None:
        return None
    if ndim == 0:  # as in PyTorch, a 0-d tensor reduces over dim 0 or -1 to itself
        for d in dim:
            if d not in (0, -1):
                raise IndexError(f"dimension out of range (expected to be in range of [-1, 0], but got {d})")
        return ()
    return tuple(sorted(d % ndim for d in dim))


def _keep_shape(shape, axes):
    """The reduced shape with size-1 dims kept: what gradients broadcast back from."""
    if axes is None:
        return (1,) * len(shape)
    return tuple(1 if i in axes else s for i, s in enumerate(shape))


class _Reduction(Op):
    saves_inputs = False

    def _setup(self, x, dim, keepdim):
        self.in_shape = tuple(x.shape)
        self.axes = _axes(dim, x.ndim)
        self.keepdim = keepdim
        self.keep_shape = _keep_shape(self.in_shape, self.axes)
        return self.axes

    def _expand_grad(self, g):
        """Broadcast an output gradient back over the reduced dims."""
        if g.shape != self.keep_shape:
            g = g.reshape(self.keep_shape)
        return g.expand(self.in_shape)


def _counts(xp, x):
    """Bools summed or multiplied count as int64, as in PyTorch (the Array API refuses bool sums)."""
    return xp.astype(x, xp.int64) if category_of(x.dtype) == 0 else x


class Sum(_Reduction):
    def forward(self, x, dim=None, keepdim=False):
        axes = self._setup(x, dim, keepdim)
        xp = xp_of_array(x)
        return xp.sum(_counts(xp, x), axis=axes, keepdims=keepdim)

    def backward(self, g):
        return self._expand_grad(g)


class Prod(_Reduction):
    saves_inputs = True
    saves_result = True

    def forward(self, x, dim=None, keepdim=False):
        axes = self._setup(x, dim, keepdim)
        xp = xp_of_array(x)
        return xp.prod(_counts(xp, x), axis=axes, keepdims=keepdim)

    def backward(self, g):
        x = self.inputs[0]
        xp = x._backend.xp
        g_full = self._expand_grad(g)
        if not bool(xp.any(x._data == 0)):
            out = self.result().reshape(self.keep_shape)
            return g_full * out / x
        # With zeros, out / x is 0/0: the gradient is the product of the other elements.
        if GradMode.enabled:  # create_graph: a formula whose own derivatives are right at the zeros
            return g_full * _products_of_others(x, self.axes)
        data = x._data
        zero = data == 0
        one = xp.asarray(1.0, dtype=data.dtype)
        nonzero_prod = xp.prod(xp.where(zero, one, data), axis=self.axes, keepdims=True)
        zeros_count = xp.sum(xp.astype(zero, data.dtype), axis=self.axes, keepdims=True)
        full_prod = xp.prod(data, axis=self.axes, keepdims=True)
        safe = xp.where(zero, one, data)
        others = xp.where(zeros_count == 0, full_prod / safe,
                          xp.where((zeros_count == 1) & zero, nonzero_prod, xp.zeros_like(data)))
        return g_full * constant_like(others, x)


def _products_of_others(x: Tensor, axes):
    """For each element, the product of the other elements of its reduced slice, as a
    differentiable tensor: the slice (n elements) is laid out n times with a 1 in place of
    one element each time, and multiplied out. O(n^2), used only under create_graph with
    zeros present (PyTorch uses exclusive cumulative products there)."""
    ndim = x.ndim
    axes = tuple(range(ndim)) if axes is None else axes
    kept = [i for i in range(ndim) if i not in axes]
    order = tuple(kept) + tuple(axes)
    shape = x.shape
    kept_shape = tuple(shape[i] for i in kept)
    n = 1
    for i in axes:
        n *= shape[i]
    moved = x.permute(order) if order != tuple(range(ndim)) else x
    flat = moved.reshape(kept_shape + (n,))
    xp = x._backend.xp
    diagonal = constant_like(xp.eye(n, dtype=x._data.dtype) != 0, x)
    rows = where(diagonal, 1.0, flat.unsqueeze(-2).expand(kept_shape + (n, n)))  # row i: x with x_i -> 1
    others = Prod.apply(rows, dim=(len(kept_shape) + 1,)).reshape(kept_shape + tuple(shape[i] for i in axes))
    if order == tuple(range(ndim)):
        return others
    inverse = [0] * ndim
    for position, d in enumerate(order):
        inverse[d] = position
    return others.permute(tuple(inverse))


class _Extreme(_Reduction):
    """amax/amin over dims; ties share the gradient equally."""

    saves_inputs = True
    saves_result = True

    def backward(self, g):
        x = self.inputs[0]
        xp = x._backend.xp
        out = self.result()._data
        out_k = xp.reshape(out, self.keep_shape)
        hit = xp.astype(x._data == out_k, x._data.dtype)
        count = xp.sum(hit, axis=self.axes, keepdims=True)
        return self._expand_grad(g) * constant_like(hit / count, x)


class Amax(_Extreme):
    def forward(self, x, dim=None, keepdim=False):
        axes = self._setup(x, dim, keepdim)
        return xp_of_array(x).max(x, axis=axes, keepdims=keepdim)


class Amin(_Extreme):
    def forward(self, x, dim=None, keepdim=False):
        axes = self._setup(x, dim, keepdim)
        return xp_of_array(x).min(x, axis=axes, keepdims=keepdim)


class _ExtremeAlong(_Reduction):
    """The values of x.max(dim) / x.min(dim): the gradient goes to the position returned as the
    index, ties or not (PyTorch's rule; amax/amin and the full max()/min() share it among ties)."""

    saves_inputs = False

    def _setup_along(self, x, index, dim, keepdim):
        self.index = index  # the argmax/argmin, with the reduced dim kept
        return self._setup(x, (dim,), keepdim)

    def backward(self, g):
        xp = g._backend.xp
        axis = self.axes[0]
        n = self.in_shape[axis]
        positions = xp.reshape(xp.arange(n, dtype=self.index.dtype),
                               tuple(n if i == axis else 1 for i in range(len(self.in_shape))))
        hit = xp.astype(positions == self.index, g._data.dtype)
        return self._expand_grad(g) * constant_like(hit, g)


class Max(_ExtremeAlong):
    def forward(self, x, index, dim, keepdim=False):
        axes = self._setup_along(x, index, dim, keepdim)
        return xp_of_array(x).max(x, axis=axes, keepdims=keepdim)


class Min(_ExtremeAlong):
    def forward(self, x, index, dim, keepdim=False):
        axes = self._setup_along(x, index, dim, keepdim)
        return xp_of_array(x).min(x, axis=axes, keepdims=keepdim)


class Norm2(_Reduction):
    """The Euclidean norm; its gradient at zero is zero (a subgradient), as in PyTorch."""

    saves_inputs = True
    saves_result = True

    def forward(self, x, dim=None, keepdim=False):
        axes = self._setup(x, dim, keepdim)
        xp = xp_of_array(x)
        return xp.sqrt(xp.sum(x * x, axis=axes, keepdims=keepdim))

    def backward(self, g):
        x = self.inputs[0]
        out = self.result().reshape(self.keep_shape)
        is_zero = constant_like(out._data == 0, x)
        safe = where(is_zero, 1.0, out)
        return self._expand_grad(g) * x / safe


class NormP(_Reduction):
    """(sum |x|^p)^(1/p) for other orders p > 0; the gradient is zero where the norm is, as in PyTorch."""

    saves_inputs = True
    saves_result = True

    def forward(self, x, p, dim=None, keepdim=False):
        axes = self._setup(x, dim, keepdim)
        self.p = p
        xp = xp_of_array(x)
        return xp.sum(xp.abs(x) ** p, axis=axes, keepdims=keepdim) ** (1.0 / p)

    def backward(self, g):
        # d/dx_i = sign(x_i) |x_i|^(p-1) / norm^(p-1), with 0 where x_i = 0 and where norm = 0
        x = self.inputs[0]
        p = self.p
        out = self.result().reshape(self.keep_shape)
        norm_zero = constant_like(out._data == 0, x)
        x_zero = constant_like(x._data == 0, x)
        magnitude = where(x_zero, 0.0, where(x_zero, 1.0, x.abs()) ** (p - 1))
        scale = self._expand_grad(g) / where(norm_zero, 1.0, out) ** (p - 1)
        return where(norm_zero, 0.0, scale * sign(x) * magnitude)


def mean(x: Tensor, dim=None, keepdim=False):
    axes = _axes(dim, x.ndim)
    count = 1
    for i, s in enumerate(x.shape):
        if axes is None or i in axes:
            count *= s
    return Sum.apply(x, dim=dim, keepdim=keepdim) / count


def norm(x: Tensor, p=2, dim=None, keepdim=False):
    """The p-norm over all elements or `dim`: p = 2 ("fro"), 1, inf, -inf or any positive number."""
    if p in (2, "fro", None):
        return Norm2.apply(x, dim=dim, keepdim=keepdim)
    if p == 1:
        return Sum.apply(x.abs(), dim=dim, keepdim=keepdim)
    if p == float("inf"):
        return Amax.apply(x.abs(), dim=dim, keepdim=keepdim)
    if p == float("-inf"):
        return Amin.apply(x.abs(), dim=dim, keepdim=keepdim)
    if isinstance(p, (int, float)) and p > 0:
        return NormP.apply(x, p=p, dim=dim, keepdim=keepdim)
    raise ValueError(f"unsupported norm order p={p!r}: use 2, 1, inf, -inf or a positive number")


def _return_type(name):
    """PyTorch's torch.return_types.max / min: a named tuple (values, indices)."""
    cls = collections.namedtuple(name, ["values", "indices"])
    cls.__repr__ = lambda self: f"gradsolve.return_types.{name}(\nvalues={self.values!r},\nindices={self.indices!r})"
    return cls


return_types = {"max": _return_type("max"), "min": _return_type("min")}


def reduce_extreme(x: Tensor, dim, keepdim, which):
    """x.max() / x.max(dim) like PyTorch: a value, or (values, indices) along one dim."""
    if dim is None:
        return (Amax if which == "max" else Amin).apply(x)
    if isinstance(dim, (tuple, list)):
        raise TypeError(f"{which}(dim) reduces one dim; use a{which}(dim=...) for several")
    xp = x._backend.xp
    result = return_types[which]
    if x.ndim == 0:
        if dim not in (0, -1):
            raise IndexError(f"dimension out of range (expected to be in range of [-1, 0], but got {dim})")
        return result(Clone.apply(x), wrap_array(xp.zeros((), dtype=xp.int64), x._backend))
    axis = dim % x.ndim
    index = getattr(xp, "arg" + which)(x._data, axis=axis, keepdims=True)
    values = (Max if which == "max" else Min).apply(x, index=index, dim=axis, keepdim=keepdim)
    indices = index if keepdim else xp.squeeze(index, axis=axis)
    return result(values, wrap_array(indices, x._backend))


def argextreme(x: Tensor, dim, keepdim, which):
    xp = x._backend.xp
    fn = getattr(xp, which)
    if dim is None or x.ndim == 0:
        _axes(None if dim is None else (dim,), x.ndim)  # checks the dim of a 0-d tensor
        return wrap_array(fn(xp.reshape(x._data, (-1,))), x._backend)
    return wrap_array(fn(x._data, axis=dim % x.ndim, keepdims=keepdim), x._backend)
