"""Solving: the loop that drives every optimizer, results, fitting and analysis of solutions.

`gs.solve(problem)` is also the API's solve function. Importing this package
makes Python set the attribute `gradsolve.solve` to this module, so the module
itself is callable and forwards to `gradsolve.api.solve`: whichever of the two
a user reaches, `gs.solve(...)` solves.
"""
import sys as _sys
import types as _types


class _CallableModule(_types.ModuleType):
    def __call__(self, *args, **kwargs):
        from gradsolve.api import solve

        return solve(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
