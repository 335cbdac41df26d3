"""Creation functions: `tensor`, `zeros`, `arange`, `rand`, the `*_like` forms, ...

They build on the CPU unless `device` says otherwise, and floats as float64 unless `dtype` does:

>>> import gradsolve as gs
>>> gs.zeros(2, 3).dtype, gs.arange(3.0).dtype, gs.arange(3).dtype
(gradsolve.float64, gradsolve.float64, gradsolve.int64)
"""
from __future__ import annotations

import builtins

import numpy as np

from gradsolve._dtypes import as_dtype, dtype, dtype_of_array, float64, inferred_dtype, int64
from gradsolve.backend import Backend, array_device, get_backend, to_host, xp_dtype


def _xp_dtype(backend: Backend, d: dtype):
    return xp_dtype(backend.xp, d.name)


def tensor(data, dtype=None, device="cpu", requires_grad=False) -> Tensor:
    """A new leaf tensor holding a copy of `data` (numbers, nested lists, arrays).

    >>> tensor([1, 2]).dtype, tensor([1.0, 2.0]).dtype
    (gradsolve.int64, gradsolve.float64)
    """
    backend = get_backend(device)
    d = as_dtype(dtype)
    if isinstance(data, Tensor):
        src = data._data if data._backend is backend else backend.from_numpy(data.numpy())
        d = d or data.dtype
        arr = backend.xp.asarray(src, dtype=_xp_dtype(backend, d), copy=True)
    else:
        if (hasattr(data, "__dlpack__") and not isinstance(data, np.ndarray)
                and array_device(data) != backend.name):
            data = to_host(data)  # another backend's array (CuPy's refuses implicit conversion): copy explicitly
        if d is None:
            if isinstance(data, (list, tuple)) and any(isinstance(x, Tensor) for x in _flatten_list(data)):
                data = [x.tolist() if isinstance(x, Tensor) else x for x in data]
            d = inferred_dtype(data if not hasattr(data, "__dlpack__") or isinstance(data, np.ndarray)
                             else backend.to_numpy(data))
        if backend.is_numpy:
            arr = np.array(data, dtype=d.name)
        elif backend.name == "cuda":  # pragma: no cover - needs a GPU
            arr = backend.xp.array(data, dtype=d.name)
        else:
            host = np.array(data, dtype=d.name) if not hasattr(data, "__dlpack__") else data
            arr = backend.xp.asarray(host.tolist() if isinstance(host, np.ndarray) and host.ndim == 0 else host,
                                     dtype=_xp_dtype(backend, d))
    t = wrap_array(arr, backend)
    if requires_grad:
        t.requires_grad_(True)
    return t


def _flatten_list(data):
    for x in data:
        if isinstance(x, (list, tuple)):
            yield from _flatten_list(x)
        else:
            yield x


def as_tensor(data, dtype=None, device="cpu") -> Tensor:
    if isinstance(data, Tensor) and (dtype is None or as_dtype(dtype) is data.dtype) and data.device == str(device):
        return data
    return tensor(data, dtype=dtype, device=device)


def from_numpy(array: np.ndarray) -> Tensor:
    """A CPU tensor sharing memory with a NumPy array."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy expects a numpy.ndarray, got {type(array).__name__}")
    dtype_of_array(array)
    return wrap_array(array, get_backend("cpu"))


def _size(size):
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        return tuple(size[0])
    return tuple(size)


def _factory(fill, size, dtype, device, requires_grad, default=None):
    backend = get_backend(device)
    d = as_dtype(dtype) or default or float64
    arr = fill(backend, _size(size), _xp_dtype(backend, d))
    t = wrap_array(arr, backend)
    if requires_grad:
        t.requires_grad_(True)
    return t


def zeros(*size, dtype=None, device="cpu", requires_grad=False) -> Tensor:
    return _factory(lambda b, s, d: b.xp.zeros(s, dtype=d), size, dtype, device, requires_grad)


def ones(*size, dtype=None, device="cpu", requires_grad=False) -> Tensor:
    return _factory(lambda b, s, d: b.xp.ones(s, dtype=d), size, dtype, device, requires_grad)


def empty(*size, dtype=None, device="cpu", requires_grad=False) -> Tensor:
    return _factory(lambda b, s, d: b.xp.empty(s, dtype=d), size, dtype, device, requires_grad)


def full(size, fill_value, dtype=None, device="cpu", requires_grad=False) -> Tensor:
    default = inferred_dtype(fill_value)
    return _factory(lambda b, s, d: b.xp.full(s, fill_value, dtype=d), (tuple(size),), dtype, device,
                    requires_grad, default)


def rand(*size, dtype=None, device="cpu", requires_grad=False) -> Tensor:
    """Uniform on [0, 1), from the generator `manual_seed` sets."""
    return _factory(lambda b, s, d: b.random_uniform(s, d), size, dtype, device, requires_grad)


def randn(*size, dtype=None, device="cpu", requires_grad=False) -> Tensor:
    """Standard normal, from the generator `manual_seed` sets."""
    return _factory(lambda b, s, d: b.random_normal(s, d), size, dtype, device, requires_grad)


def arange(start, end=None, step=1, dtype=None, device="cpu", requires_grad=False) -> Tensor:
    if end is None:
        start, end = 0, start
    default = float64 if any(isinstance(v, builtins.float) for v in (start, end, step)) else int64
    return _factory(lambda b, s, d: b.xp.arange(start, end, step, dtype=d), (), dtype, device, requires_grad, default)


def linspace(start, end, steps, dtype=None, device="cpu", requires_grad=False) -> Tensor:
    return _factory(lambda b, s, d: b.xp.linspace(start, end, steps, dtype=d), (), dtype, device, requires_grad)


def eye(n, m=None, dtype=None, device="cpu", requires_grad=False) -> Tensor:
    return _factory(lambda b, s, d: b.xp.eye(n, m, dtype=d), (), dtype, device, requires_grad)


def zeros_like(t: Tensor, dtype=None, requires_grad=False) -> Tensor:
    return zeros(t.shape, dtype=dtype or t.dtype, device=t._backend, requires_grad=requires_grad)


def ones_like(t: Tensor, dtype=None, requires_grad=False) -> Tensor:
    return ones(t.shape, dtype=dtype or t.dtype, device=t._backend, requires_grad=requires_grad)


def full_like(t: Tensor, fill_value, dtype=None, requires_grad=False) -> Tensor:
    return full(t.shape, fill_value, dtype=dtype or t.dtype, device=t._backend, requires_grad=requires_grad)


def rand_like(t: Tensor, dtype=None) -> Tensor:
    return rand(t.shape, dtype=dtype or t.dtype, device=t._backend)


def randn_like(t: Tensor, dtype=None) -> Tensor:
    return randn(t.shape, dtype=dtype or t.dtype, device=t._backend)


def is_tensor(obj) -> bool:
    return isinstance(obj, Tensor)


# Imported last, as in _tensor.py: the two modules import each other, and either may be imported first.
from gradsolve._tensor import Tensor, wrap_array  # noqa: E402
