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
import inspect


class GradMode:
    """Whether operations record the graph now; the classes below switch it."""

    # A class attribute read on every operation: the cheapest global flag in CPython.
    enabled = True


def is_grad_enabled() -> bool:
    return GradMode.enabled


class _GradModeContext:
    """Sets grad mode inside a `with` block or a decorated function (generators included).

    As in PyTorch 2, ``no_grad`` and ``enable_grad`` also decorate without
    parentheses: ``@gs.no_grad`` is ``@gs.no_grad()``.
    """

    _mode = True

    def __new__(cls, func=None):
        self = super().__new__(cls)
        if func is None:
            return self
        if not callable(func):
            raise TypeError(f"{cls.__name__}() takes no arguments, or a function to decorate")
        return self(func)

    def __enter__(self):
        self._prev = GradMode.enabled
        GradMode.enabled = self._mode
        return self

    def __exit__(self, *exc):
        GradMode.enabled = self._prev
        return False

    def __call__(self, func):
        mode = self._mode
        if inspect.isgeneratorfunction(func):
            return _wrap_generator(func, mode)

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            prev = GradMode.enabled
            GradMode.enabled = mode
            try:
                return func(*args, **kwargs)
            finally:
                GradMode.enabled = prev

        return wrapper


def _wrap_generator(func, mode):
    """The mode holds while the generator runs and is restored each time it yields (as PyTorch does)."""

    @functools.wraps(func)
    def generator(*args, **kwargs):
        gen = func(*args, **kwargs)
        try:
            with _Mode(mode):
                response = gen.send(None)
            while True:
                try:
                    request = yield response
                except GeneratorExit:
                    with _Mode(mode):
                        gen.close()
                    raise
                except BaseException as exc:  # thrown in by the caller: pass it on
                    with _Mode(mode):
                        response = gen.throw(exc)
                else:
                    with _Mode(mode):
                        response = gen.send(request)
        except StopIteration as stop:  # caught here, inside the frame, so PEP 479 does not apply
            return stop.value

    return generator


class _Mode:
    __slots__ = ("mode", "prev")

    def __init__(self, mode):
        self.mode = mode

    def __enter__(self):
        self.prev = GradMode.enabled
        GradMode.enabled = self.mode

    def __exit__(self, *exc):
        GradMode.enabled = self.prev
        return False


class no_grad(_GradModeContext):
    """Operations inside record no graph (for updates and evaluation)."""

    _mode = False


class enable_grad(_GradModeContext):
    """Operations inside record the graph, even within `no_grad`."""

    _mode = True


class set_grad_enabled(_GradModeContext):
    """Record the graph or not, by argument: `with set_grad_enabled(False): ...`.

    Like PyTorch's, it also works as a plain call (``gs.set_grad_enabled(False)``
    switches the mode at once) and as a decorator, which leaves the mode as it was.
    """

    def __new__(cls, mode):
        return object.__new__(cls)

    def __init__(self, mode: bool):
        self._mode = bool(mode)
        self._prev = GradMode.enabled
        GradMode.enabled = self._mode

    def __enter__(self):
        GradMode.enabled = self._mode
        return self

    def __call__(self, func):
        GradMode.enabled = self._prev  # decorating is not a call: undo what __init__ switched
        return super().__call__(func)
