"""Tensor element types: the dtype objects, PyTorch's aliases, and what `dtype=` accepts.

>>> import gradsolve as gs
>>> gs.tensor([1.0]).dtype, gs.float is gs.float32
(gradsolve.float64, True)
"""
from __future__ import annotations

import builtins
import numbers

import numpy as np


class dtype:
    """A tensor element type, the same object whatever the backend."""

    __slots__ = ("name", "is_floating_point", "itemsize")

    def __init__(self, name, is_floating_point, itemsize):
        self.name = name
        self.is_floating_point = is_floating_point
        self.itemsize = itemsize

    def __repr__(self):
        return f"gradsolve.{self.name}"

    def __reduce__(self):
        return (dtype_from_name, (self.name,))


float32 = dtype("float32", True, 4)
float64 = dtype("float64", True, 8)
int64 = dtype("int64", False, 8)
int32 = dtype("int32", False, 4)
bool_ = dtype("bool", False, 1)
# PyTorch's aliases, meaning what they mean there: gs.float is float32 (as torch.float and
# Tensor.float() are), although gradsolve's *default* float dtype is float64.
float = float32  # noqa: A001
double = float64
long = int64
_DTYPES = {d.name: d for d in (float32, float64, int64, int32, bool_)}


def dtype_from_name(name):
    """The dtype called `name` ("float64", "bool", ...); how pickle and deepcopy rebuild a dtype."""
    return _DTYPES[name]


def dtype_of_array(array) -> dtype:
    """The dtype of a backend array's elements."""
    return dtype_from_array_dtype(array.dtype)


def dtype_from_array_dtype(array_dtype) -> dtype:
    """The dtype matching a backend's own dtype object (NumPy's, CuPy's, array-api-strict's)."""
    name = getattr(array_dtype, "name", None) or str(array_dtype).rsplit(".", 1)[-1]
    found = _DTYPES.get(name)
    if found is None:
        raise TypeError(f"unsupported dtype {array_dtype}: gradsolve tensors hold float32, float64, int64, int32 or bool")
    return found


def inferred_dtype(data) -> dtype:
    """The dtype `tensor(data)` gives numbers, nested lists and NumPy data, as PyTorch infers it."""
    arr = np.asarray(data)
    kind = arr.dtype.kind
    if kind == "f":
        return float32 if arr.dtype == np.float32 else float64
    if kind in "iu":
        return int64 if arr.dtype.itemsize > 4 or kind == "u" or arr.dtype == np.int64 else _DTYPES.get(arr.dtype.name, int64)
    if kind == "b":
        return bool_
    if arr.size == 0:
        return float64
    raise TypeError(f"cannot make a tensor from data of type {arr.dtype}: give numbers")


def as_dtype(d):
    """Accept gradsolve dtypes, their names, NumPy dtypes and the typed-tensor factories."""
    if d is None or isinstance(d, dtype):
        return d
    if isinstance(d, TypedTensor):
        return d.dtype
    if d is builtins.float:
        return float64
    if d is builtins.int:
        return int64
    if d is builtins.bool:
        return bool_
    name = np.dtype(d).name if not isinstance(d, str) else d
    if name in _DTYPES:
        return _DTYPES[name]
    raise TypeError(f"unsupported dtype {d!r}: use gradsolve.float64, float32, int64 or bool")


# ----------------------------------------------------------- typed factories --
class TypedTensor:
    """``gs.FloatTensor``-style factories: call to build, pass to ``.type()`` to convert."""

    def __init__(self, name, dt):
        self.__name__ = name
        self.dtype = dt

    def __call__(self, *data):
        from gradsolve._creation import tensor, zeros  # here: _creation imports this module

        if len(data) == 1 and not isinstance(data[0], numbers.Number):
            return tensor(data[0], dtype=self.dtype)
        return zeros(*data, dtype=self.dtype) if data else tensor([], dtype=self.dtype)

    def __repr__(self):
        return f"gradsolve.{self.__name__}"

    def __instancecheck__(self, obj):
        from gradsolve._tensor import Tensor  # here: _tensor imports this module

        return isinstance(obj, Tensor) and obj.dtype is self.dtype


FloatTensor = TypedTensor("FloatTensor", float32)
DoubleTensor = TypedTensor("DoubleTensor", float64)
LongTensor = TypedTensor("LongTensor", int64)
IntTensor = TypedTensor("IntTensor", int32)
BoolTensor = TypedTensor("BoolTensor", bool_)
TYPED_TENSOR_NAMES = {"float32": "FloatTensor", "float64": "DoubleTensor", "int64": "LongTensor",
                      "int32": "IntTensor", "bool": "BoolTensor"}
