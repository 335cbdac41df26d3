"""Reductions: sum, prod, amax/amin, the 2-norm; mean and other norms are composites."""
from __future__ import annotations

from gradsolve.autograd.function import Op
from gradsolve.ops.elementwise import _const, _xp_of_array, where
from gradsolve._tensor import Tensor, _wrap, namedtuple_values_indices


def _axes(dim, ndim):
    if dim is None:
        return None
    return tuple(sorted(d % ndim if ndim else 0 for d in dim))


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


class Sum(_Reduction):
    def forward(self, x, dim=None, keepdim=False):
        axes = self._setup(x, dim, keepdim)
        return _xp_of_array(x).sum(x, axis=axes, keepdims=keepdim)

    def backward(self, g):
        return self._expand_grad(g)


class Prod(_Reduction):
    saves_inputs = True
    saves_result = True

    def forward(self, x, dim=None, keepdim=False):
        axes = self._setup(x, dim, keepdim)
        return _xp_of_array(x).prod(x, axis=axes, keepdims=keepdim)

    def backward(self, g):
        x = self.inputs[0]
        xp = x._backend.xp
        g_full = self._expand_grad(g)
        if not bool(xp.any(x._data == 0)):
            out = self.result().reshape(self.keep_shape)
            return g_full * out / x
        # With zeros, out / x is 0/0: use the product of the other elements instead.
        data = x._data
        zero = data == 0
        one = xp.asarray(1.0, dtype=data.dtype)
        nonzero_prod = xp.prod(xp.where(zero, one, data), axis=self.axes, keepdims=True)
        zeros_count = xp.sum(xp.astype(zero, data.dtype), axis=self.axes, keepdims=True)
        full_prod = xp.prod(data, axis=self.axes, keepdims=True)
        safe = xp.where(zero, one, data)
        others = xp.where(zeros_count == 0, full_prod / safe,
                          xp.where((zeros_count == 1) & zero, nonzero_prod, xp.zeros_like(data)))
        return g_full * _const(others, x)


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
        return self._expand_grad(g) * _const(hit / count, x)


class Amax(_Extreme):
    def forward(self, x, dim=None, keepdim=False):
        axes = self._setup(x, dim, keepdim)
        return _xp_of_array(x).max(x, axis=axes, keepdims=keepdim)


class Amin(_Extreme):
    def forward(self, x, dim=None, keepdim=False):
        axes = self._setup(x, dim, keepdim)
        return _xp_of_array(x).min(x, axis=axes, keepdims=keepdim)


class Norm2(_Reduction):
    """The Euclidean norm; its gradient at zero is zero (a subgradient), as in PyTorch."""

    saves_inputs = True
    saves_result = True

    def forward(self, x, dim=None, keepdim=False):
        axes = self._setup(x, dim, keepdim)
        xp = _xp_of_array(x)
        return xp.sqrt(xp.sum(x * x, axis=axes, keepdims=keepdim))

    def backward(self, g):
        x = self.inputs[0]
        out = self.result().reshape(self.keep_shape)
        is_zero = _const(out._data == 0, x)
        safe = where(is_zero, 1.0, out)
        return self._expand_grad(g) * x / safe


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
        return Sum.apply(x.abs() ** p, dim=dim, keepdim=keepdim) ** (1.0 / p)
    raise ValueError(f"unsupported norm order p={p!r}: use 2, 1, inf, -inf or a positive number")


def reduce_extreme(x: Tensor, dim, keepdim, which):
    """x.max() / x.max(dim) like PyTorch: a value, or (values, indices) along one dim."""
    op = Amax if which == "max" else Amin
    if dim is None:
        return op.apply(x)
    values = op.apply(x, dim=(dim,), keepdim=keepdim)
    return namedtuple_values_indices(values, argextreme(x, dim, keepdim, "arg" + which))


def argextreme(x: Tensor, dim, keepdim, which):
    xp = x._backend.xp
    fn = getattr(xp, which)
    if dim is None:
        return _wrap(fn(xp.reshape(x._data, (-1,))), x._backend)
    return _wrap(fn(x._data, axis=dim % x.ndim, keepdims=keepdim), x._backend)
