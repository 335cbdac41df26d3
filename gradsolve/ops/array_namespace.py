"""Which array namespace and backend hold a raw array: the ops work on raw arrays, not tensors."""
from __future__ import annotations

import importlib

import numpy as np

from gradsolve.backend import get_backend

_NAMESPACE_BY_TYPE = {np.ndarray: np}


def xp_of_array(x):
    """The array namespace of a backend array (cached per array type)."""
    xp = _NAMESPACE_BY_TYPE.get(type(x))
    if xp is None:
        module = type(x).__module__.split(".")[0]
        xp = importlib.import_module(module)
        _NAMESPACE_BY_TYPE[type(x)] = xp
    return xp


def backend_of_array(x):
    """The backend a raw array belongs to, told by its type."""
    if isinstance(x, np.ndarray):
        return get_backend("cpu")
    module = type(x).__module__
    if module.startswith("cupy"):
        return get_backend("cuda")
    return get_backend("array-api-strict")
