"""How tensors print: as PyTorch prints them, so that outputs read alike in both.

>>> import gradsolve as gs
>>> gs.tensor([[1.0, 2.5], [1e-5, 3.0]], dtype=gs.float32)
tensor([[1.0000e+00, 2.5000e+00],
        [1.0000e-05, 3.0000e+00]], dtype=gradsolve.float32)
"""
from __future__ import annotations

import builtins
import math

import numpy as np

from gradsolve._dtypes import bool_, dtype_of_array, float64, int64

# PyTorch's layout (torch/_tensor_str.py): one format for all elements of a tensor, chosen
# from its nonzero finite values: integral floats as `1.`, otherwise 4 decimals, and
# scientific notation when the values span more than 1000x or leave [1e-4, 1e8]. Elements
# are right-aligned to one width, lines wrap at 80 columns, and tensors of more than 1000
# elements show the first and last 3 along each dim.
_PRECISION, _THRESHOLD, _EDGEITEMS, _LINEWIDTH = 4, 1000, 3, 80


class _Formatter:
    def __init__(self, values: np.ndarray, floating: bool):
        self.floating = floating
        self.int_mode = True
        self.sci_mode = False
        self.width = 1
        flat = values.reshape(-1)
        if not floating:
            for v in flat.tolist():
                self.width = builtins.max(self.width, len(str(v)))
            return
        shown = flat[np.isfinite(flat) & (flat != 0)]
        if shown.size == 0:
            return
        self.int_mode = builtins.bool(np.all(shown == np.ceil(shown)))
        magnitude = np.abs(shown.astype(np.float64))
        low, high = magnitude.min(), magnitude.max()
        self.sci_mode = builtins.bool(high / low > 1000.0 or high > 1.0e8 or low < 1.0e-4)
        if self.sci_mode:
            texts = [f"{v:.{_PRECISION}e}" for v in shown.tolist()]
        elif self.int_mode:
            texts = [f"{v:.0f}." for v in shown.tolist()]
        else:
            texts = [f"{v:.{_PRECISION}f}" for v in shown.tolist()]
        self.width = builtins.max(len(t) for t in texts)

    def format(self, value) -> str:
        if not self.floating:
            text = str(value)
        elif self.sci_mode:
            text = f"{value:.{_PRECISION}e}"
        elif self.int_mode:
            text = f"{value:.0f}" + ("" if math.isinf(value) or math.isnan(value) else ".")
        else:
            text = f"{value:.{_PRECISION}f}"
        return " " * (self.width - len(text)) + text


def _summarized(host: np.ndarray) -> np.ndarray:
    """The elements a summarized print shows (edge items along every dim), for choosing the format."""
    if host.ndim == 0:
        return host
    n, e = host.shape[0], _EDGEITEMS
    if host.ndim == 1:
        return np.concatenate([host[:e], host[-e:]]) if n > 2 * e else host
    rows = list(range(e)) + list(range(n - e, n)) if n > 2 * e else range(n)
    return np.stack([_summarized(host[i]) for i in rows])


def _array_str(host: np.ndarray, indent: int, summarize: bool, fmt: _Formatter) -> str:
    if host.ndim == 0:
        return fmt.format(host.item())
    n, e = host.shape[0], _EDGEITEMS
    cut = summarize and n > 2 * e
    if host.ndim == 1:
        if cut:
            items = [fmt.format(v) for v in host[:e].tolist()] + [" ..."] + [fmt.format(v) for v in host[-e:].tolist()]
        else:
            items = [fmt.format(v) for v in host.tolist()]
        per_line = builtins.max(1, (_LINEWIDTH - indent) // (fmt.width + 2))
        lines = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
        return "[" + (",\n" + " " * (indent + 1)).join(lines) + "]"
    if cut:
        parts = ([_array_str(host[i], indent + 1, summarize, fmt) for i in range(e)] + ["..."]
                 + [_array_str(host[i], indent + 1, summarize, fmt) for i in range(n - e, n)])
    else:
        parts = [_array_str(host[i], indent + 1, summarize, fmt) for i in range(n)]
    return "[" + ("," + "\n" * (host.ndim - 1) + " " * (indent + 1)).join(parts) + "]"


def tensor_repr(t) -> str:
    """repr(t) and str(t): the values, then the device, dtype and grad facts that are not the defaults."""
    prefix = "tensor("
    indent = len(prefix)
    host = t._backend.to_numpy(t._data)
    dt = dtype_of_array(t._data)
    suffixes = []
    if t._backend.name != "cpu":
        suffixes.append(f"device='{t._backend.name}'")
    if host.size == 0:
        if host.ndim != 1:
            suffixes.append(f"size={tuple(host.shape)}")
        if dt is not float64:  # nothing shows what kind of numbers an empty tensor holds
            suffixes.append(f"dtype={dt!r}")
        body = "[]"
    else:
        if dt not in (float64, int64, bool_):  # the defaults go unsaid
            suffixes.append(f"dtype={dt!r}")
        summarize = host.size > _THRESHOLD
        fmt = _Formatter(_summarized(host) if summarize else host, dt.is_floating_point)
        body = _array_str(host, indent, summarize, fmt)
    if t.grad_fn is not None:
        suffixes.append(f"grad_fn=<{t.grad_fn.name()}>")
    elif t._requires_grad:
        suffixes.append("requires_grad=True")
    text = prefix + body
    last_line = len(text) - text.rfind("\n") + 1  # PyTorch's count, which it wraps suffixes by
    for suffix in suffixes:
        if last_line + len(suffix) + 2 > _LINEWIDTH:
            text += ",\n" + " " * indent + suffix
            last_line = indent + len(suffix)
        else:
            text += ", " + suffix
            last_line += len(suffix) + 2
    return text + ")"
