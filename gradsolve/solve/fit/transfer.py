"""Moving arrays between the host (NumPy) and the array namespace ``xp`` a fit runs in.

Chunks are read on the host; the data-sized work runs in ``xp`` (NumPy, CuPy,
or the strict Array API reference in the tests).  Arrays cross once, here;
what comes back to the host is small.
"""
from __future__ import annotations

import numpy as np

__all__ = ["to_host", "on_device", "to_device"]


def to_host(xp, array) -> np.ndarray:
    """A (small) array of namespace xp as a float64 NumPy array on the host."""
    if xp is np or isinstance(array, (np.ndarray, np.generic, float, int)):
        return np.asarray(array, dtype=np.float64)
    get = getattr(array, "get", None)
    if callable(get):  # CuPy: device -> host copy
        return np.asarray(get(), dtype=np.float64)
    return np.asarray(np.from_dlpack(array), dtype=np.float64)  # the Array API's standard way out


def on_device(xp, array):
    """One host (NumPy) array -> namespace ``xp`` (as float64); an array already in ``xp`` passes through."""
    if xp is np:
        return np.asarray(array)
    if isinstance(array, (np.ndarray, np.generic)):
        # host -> device, once, from one contiguous float64 buffer (the table's columns already are)
        host = np.asarray(array, dtype=np.float64)
        return xp.asarray(host if host.flags.c_contiguous else np.ascontiguousarray(host))
    return xp.asarray(array)  # already in xp: no copy


def to_device(xp, xs, y=None, weights=None):
    """A chunk ``(xs, y, weights)`` read on the host -> the same arrays in namespace ``xp``.

    NumPy arrays cross to the device once here (no copy at all when ``xp`` is
    NumPy); arrays already in ``xp`` pass through.  Every map step calls this
    first, so the arithmetic after it never mixes namespaces.
    """
    return ([on_device(xp, x) for x in xs], None if y is None else on_device(xp, y),
            None if weights is None else on_device(xp, weights))
