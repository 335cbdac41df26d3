"""gradsolve: an optimization solver with its own automatic-differentiation engine.

>>> import gradsolve as gs
>>> x = gs.tensor(3.6, requires_grad=True)
>>> (x * x).backward()
>>> x.grad
tensor(7.2000)

Float tensors default to float64. Heavy modules (sympy for problems, the
solver, the CLI) load on first use, so ``import gradsolve`` stays quick.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# `gradsolve --help` must start fast, so importing the package loads nothing heavy: the
# tensor API (and NumPy) comes in on the first attribute used, the problem layer (sympy) later.
_SUBMODULES = {"autograd", "backend", "nn", "ops", "optim", "problem", "solve", "cli", "core", "api"}


def __getattr__(name):
    if name in ("Problem", "solve", "Result"):
        return getattr(importlib.import_module("gradsolve.api"), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"gradsolve.{name}")
    core = importlib.import_module("gradsolve.core")
    try:
        value = getattr(core, name)
    except AttributeError:
        raise AttributeError(f"module 'gradsolve' has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__():
    core = importlib.import_module("gradsolve.core")
    return sorted(set(globals()) | {n for n in dir(core) if not n.startswith("_")} | _SUBMODULES)
