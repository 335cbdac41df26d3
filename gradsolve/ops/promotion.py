"""Type promotion: the dtype an operation on mixed arrays and numbers gives, by PyTorch's rules.

The ops call `promote_operands` on their raw operands before computing.
"""
from __future__ import annotations

import builtins
import numbers

import numpy as np

from gradsolve.backend import xp_dtype
from gradsolve.ops.array_namespace import xp_of_array

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


def category_of(dt):
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


def promote_operands(a, b, floating=False):
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
            if da is db and (not floating or category_of(da) == 2):
                return a, b
        elif type(b) is float or type(b) is int:
            kind = category_of(da)
            if kind == 2 or (kind == 1 and type(b) is int and not floating):
                return a, b
    elif db is not None and (type(a) is float or type(a) is int):
        kind = category_of(db)
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
        xp = xp_of_array(v)
        return xp.astype(v, xp_dtype(xp, name))
    kind = _CATEGORY[name]
    return builtins.float(v) if kind == 2 else int(v) if kind == 1 else v
