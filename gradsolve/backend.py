"""Array backends: which array namespace holds a tensor's data.

Every tensor keeps a `Backend`; all array calls on tensor data go through its
namespace `xp`, which follows the Array API standard (NumPy >= 2 and CuPy both
do). What the standard lacks lives here as named helpers with a portable
fallback: `scatter_add` (indexing backward) and random numbers.

Devices:
    "cpu"               NumPy
    "cuda"              CuPy, when installed and a GPU is present
    "array-api-strict"  the strict reference implementation (tests only: it
                        catches calls that only NumPy accepts)

>>> get_backend("cpu").xp.__name__
'numpy'
"""
from __future__ import annotations

import numpy as np


class DeviceError(RuntimeError):
    """A device was asked for that this machine cannot provide."""


class Backend:
    """One array namespace plus the helpers the Array API standard lacks."""

    def __init__(self, name: str, xp, *, native_scatter=None, rng_factory=None, numpy_indexing=None):
        self.name = name
        self.xp = xp
        self._native_scatter = native_scatter
        self._rng_factory = rng_factory
        self._rng = None
        self.is_numpy = xp is np
        # Whether `array[key]` already follows NumPy's rules (mixed slices and index arrays, masks in tuples).
        self.numpy_indexing = self.is_numpy if numpy_indexing is None else numpy_indexing

    def __repr__(self):
        return f"Backend({self.name!r})"

    # -- arrays -----------------------------------------------------------
    def asarray(self, data, dtype=None):
        arr = self.xp.asarray(data, dtype=dtype)
        return arr

    def to_numpy(self, array) -> np.ndarray:
        """A NumPy copy (or view on the CPU) of a backend array."""
        if self.is_numpy:
            return np.asarray(array)
        if self.name == "cuda":
            return array.get()
        # Array API strict and others: DLPack is the standard way out.
        return to_host(array)

    def from_numpy(self, array: np.ndarray):
        if self.is_numpy:
            return array
        if self.name == "cuda":
            return self.xp.asarray(array)
        return self.xp.asarray(array.tolist() if array.ndim == 0 else array, dtype=_dtype_in(self.xp, array.dtype))

    # -- what the standard lacks -----------------------------------------
    def getitem(self, array, index):
        """array[index], with NumPy's indexing rules on every backend.

        The Array API allows integer index arrays only when every axis gets an
        integer; NumPy also mixes them with slices (`x[[0, 0, 1], :]`) and puts
        masks inside tuples. Backends that refuse those go through NumPy.
        """
        if self.numpy_indexing:
            return array[index]
        try:
            return array[index]
        except IndexError:
            host = self.to_numpy(array)[_index_to_numpy(self, index)]
            return self.from_numpy(np.ascontiguousarray(host))

    def setitem(self, array, index, values):
        """array[index] = values (in place), with NumPy's indexing rules on every backend."""
        if self.numpy_indexing:
            array[index] = values
            return
        try:
            array[index] = values
        except IndexError:
            host = self.to_numpy(array).copy()
            host[_index_to_numpy(self, index)] = self.to_numpy(values) if hasattr(values, "shape") else values
            array[...] = self.from_numpy(host)

    def scatter_add(self, target, index, values):
        """target[index] += values, accumulating repeated indices (in place)."""
        if self._native_scatter is not None:
            self._native_scatter(target, index, values)
            return target
        return _portable_scatter_add(self, target, index, values)

    def rng(self):
        if self._rng is None:
            self.seed(None)
        return self._rng

    def seed(self, seed):
        if self._rng_factory is not None:
            self._rng = self._rng_factory(seed)
        else:
            self._rng = np.random.default_rng(seed)

    def random_uniform(self, shape, dtype):
        rng = self.rng()
        if self._rng_factory is not None:
            return rng.random(shape, dtype=dtype)
        # Portable: draw on the CPU with NumPy, move across.
        return self.from_numpy(rng.random(shape).astype(np.dtype(_np_name(dtype))))

    def random_normal(self, shape, dtype):
        rng = self.rng()
        if self._rng_factory is not None:
            return rng.standard_normal(shape, dtype=dtype)
        return self.from_numpy(rng.standard_normal(shape).astype(np.dtype(_np_name(dtype))))


def xp_dtype(xp, name: str):
    """The dtype called `name` ("float64", "bool", ...) in namespace `xp`.

    NumPy >= 2 and the Array API spell the boolean dtype `bool`; CuPy (like NumPy 1)
    may only have `bool_`.
    """
    found = getattr(xp, name, None)
    if found is None and name == "bool":
        found = getattr(xp, "bool_", None)
    if found is None:
        raise TypeError(f"the array namespace {getattr(xp, '__name__', xp)} has no dtype {name}")
    return found


def array_device(array) -> str:
    """The gradsolve device of a raw backend array, by its type: 'cpu', 'cuda' or 'array-api-strict'."""
    if isinstance(array, np.ndarray):
        return "cpu"
    module = type(array).__module__
    if module.startswith("cupy"):
        return "cuda"
    if module.startswith("array_api_strict"):
        return "array-api-strict"
    return module.split(".")[0]


def to_host(array) -> np.ndarray:
    """A NumPy copy of an array from any backend: CuPy through .get() (an explicit device-to-host
    copy; NumPy refuses to convert CuPy arrays implicitly), others through DLPack."""
    if isinstance(array, np.ndarray):
        return array
    if type(array).__module__.startswith("cupy"):
        return array.get()
    try:
        return np.from_dlpack(array)
    except (TypeError, AttributeError, RuntimeError, BufferError):
        return np.asarray(array)


def foreign_array_error(values, backend):
    """The 'same device' error for a raw array (not a tensor) from another backend among `values`, or None."""
    for v in values:
        if hasattr(v, "shape") and hasattr(v, "dtype") and not isinstance(v, np.generic):
            where = array_device(v)
            if where != backend.name:
                return RuntimeError(
                    f"expected all tensors on the same device, found {backend.name} and a raw {where} array "
                    f"({type(v).__module__}.{type(v).__name__}): make it a tensor on {backend.name} with "
                    f"gs.tensor(..., device={backend.name!r})"
                )
    return None


def _np_name(dtype) -> str:
    return str(dtype).replace("numpy.", "").split(".")[-1].strip("'>").replace("<class ", "")


def _dtype_in(xp, np_dtype):
    return xp_dtype(xp, np.dtype(np_dtype).name)


def _portable_scatter_add(backend, target, index, values):
    """Scatter-add through NumPy's `add.at` on a host copy.

    Used by backends without a native scatter (Array API strict). Correct for
    every index kind NumPy supports; slower because it round-trips the data.
    """
    host = backend.to_numpy(target).copy()
    np.add.at(host, _index_to_numpy(backend, index), backend.to_numpy(values))
    target[...] = backend.from_numpy(host)
    return target


def _index_to_numpy(backend, index):
    if isinstance(index, tuple):
        return tuple(_index_to_numpy(backend, i) for i in index)
    if isinstance(index, (slice, int, type(None), type(Ellipsis))):
        return index
    if hasattr(index, "shape") and not isinstance(index, np.ndarray):
        return backend.to_numpy(index)
    return index


def _numpy_scatter(target, index, values):
    np.add.at(target, index, values)


_BACKENDS: dict[str, Backend] = {}
_NUMPY = Backend("cpu", np, native_scatter=_numpy_scatter, rng_factory=np.random.default_rng)
_BACKENDS["cpu"] = _NUMPY


def _make_cuda_backend() -> Backend:
    try:
        import cupy  # noqa: F401 - optional dependency
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise DeviceError(
            "device 'cuda' needs CuPy: install gradsolve[gpu] (CUDA 12) or gradsolve[gpu-cuda13] (CUDA 13)"
        ) from exc
    try:  # pragma: no cover - needs a GPU
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # pragma: no cover
        raise DeviceError(f"device 'cuda': CuPy is installed but no usable GPU was found ({exc})") from exc
    if count < 1:  # pragma: no cover
        raise DeviceError("device 'cuda': CuPy is installed but no GPU is present")

    add_at = getattr(getattr(cupy, "add", None), "at", None)  # cupyx.scatter_add is deprecated
    if add_at is None:  # pragma: no cover - CuPy before ufunc.at
        import cupyx

        add_at = cupyx.scatter_add

    def scatter(target, index, values):  # pragma: no cover - needs a GPU
        add_at(target, index, values)

    def rng_factory(seed):  # pragma: no cover - needs a GPU
        return cupy.random.default_rng(seed)

    return Backend("cuda", cupy, native_scatter=scatter, rng_factory=rng_factory, numpy_indexing=True)


def _make_strict_backend() -> Backend:
    try:
        import array_api_strict
    except ImportError as exc:
        raise DeviceError("device 'array-api-strict' needs the array-api-strict package (pip install array-api-strict)") from exc
    return Backend("array-api-strict", array_api_strict)


_FACTORIES = {"cuda": _make_cuda_backend, "array-api-strict": _make_strict_backend}


def get_backend(device) -> Backend:
    """The backend for a device name ("cpu", "cuda", "cuda:0", "array-api-strict")."""
    if isinstance(device, Backend):
        return device
    if device is None:
        return _NUMPY
    name = str(device)
    if name.startswith("cuda"):
        name = "cuda"
    backend = _BACKENDS.get(name)
    if backend is not None:
        return backend
    factory = _FACTORIES.get(name)
    if factory is None:
        raise DeviceError(f"unknown device {device!r}: use 'cpu' or 'cuda'")
    backend = factory()
    if _DEFAULT_SEED is not None:
        backend.seed(_DEFAULT_SEED)
    _BACKENDS[name] = backend
    return backend


def cuda_available() -> bool:
    """True when CuPy imports and sees at least one GPU."""
    try:
        get_backend("cuda")
    except DeviceError:
        return False
    return True


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when usable, else 'cpu'; other names pass through."""
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    return device


def manual_seed(seed: int) -> None:
    """Seed the random generators of every backend created so far and later."""
    global _DEFAULT_SEED
    _DEFAULT_SEED = seed
    for backend in _BACKENDS.values():
        backend.seed(seed)


_DEFAULT_SEED = None
