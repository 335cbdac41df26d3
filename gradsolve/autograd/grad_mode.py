"""Whether operations record the graph: `no_grad`, `enable_grad`, `set_grad_enabled`.

Each works as a context manager and as a decorator:

>>> import gradsolve as gs
>>> x = gs.tensor(2.0, requires_grad=True)
>>> with gs.no_grad():
...     y = x * 2
>>> y.requires_grad
False
"""
from __future__ import annotations

import functools


class _State:
    # A class attribute read on every operation: the cheapest global flag in CPython.
    enabled = True


def is_grad_enabled() -> bool:
    return _State.enabled


class _GradModeContext:
    _mode = True

    def __enter__(self):
        self._prev = _State.enabled
        _State.enabled = self._mode
        return self

    def __exit__(self, *exc):
        _State.enabled = self._prev
        return False

    def __call__(self, func):
        mode = self._mode

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            prev = _State.enabled
            _State.enabled = mode
            try:
                return func(*args, **kwargs)
            finally:
                _State.enabled = prev

        return wrapper


class no_grad(_GradModeContext):
    """Operations inside record no graph (for updates and evaluation)."""

    _mode = False


class enable_grad(_GradModeContext):
    """Operations inside record the graph, even within `no_grad`."""

    _mode = True


class set_grad_enabled(_GradModeContext):
    """Record the graph or not, by argument: `with set_grad_enabled(False): ...`."""

    def __init__(self, mode: bool):
        self._mode = bool(mode)
        self._prev = _State.enabled
        _State.enabled = self._mode  # like PyTorch, it also works as a plain call

    def __enter__(self):
        return self
