"""Expressions over data columns, compiled once by the engine and evaluated on chunk after chunk.

sympy and the problem layer's compiler load when a program is built: a ``--degree`` fit with a column as
its response never builds one, and never imports sympy.
"""
from __future__ import annotations

import numpy as np

import gradsolve as gs
from gradsolve._tensor import wrap_array

__all__ = ["ColumnProgram"]


class ColumnProgram:
    """Expressions over data columns compiled once; evaluated on any chunk by rebinding the inputs.

    The program lives on ``device``: ``__call__`` takes and returns host (NumPy) arrays, ``raw`` takes and
    returns arrays of that device's namespace (no transfer).
    """

    def __init__(self, expressions, names, params=None, device="cpu"):
        import sympy

        from gradsolve.problem.lowering import compile_program

        self.backend = gs.backend.get_backend(device)
        self.device = self.backend.name
        self.names = list(names)
        self._placeholders = {n: gs.tensor(np.zeros(1), device=self.device) for n in self.names}
        inputs = {sympy.Symbol(n, real=True): t for n, t in self._placeholders.items()}
        for name, value in (params or {}).items():
            inputs[sympy.Symbol(name, real=True)] = value if hasattr(value, "shape") else gs.tensor(
                float(value), device=self.device)
        self.program = compile_program(expressions, inputs, device=self.device)
        self._slot = {n: next(i for i, leaf in enumerate(self.program.leaves) if leaf is t)
                      for n, t in self._placeholders.items() if any(leaf is t for leaf in self.program.leaves)}

    def _run(self, arrays: dict, wrap):
        for name, slot in self._slot.items():
            value = arrays[name]
            self.program.leaves[slot] = value if isinstance(value, gs.Tensor) else wrap(value)
        with gs.no_grad():
            return self.program.run()

    def __call__(self, arrays: dict):
        """Host arrays in, host float64 arrays out."""
        backend = self.backend

        def wrap(value):
            host = np.ascontiguousarray(value, dtype=np.float64)
            return gs.from_numpy(host) if backend.is_numpy else gs.tensor(host, dtype=gs.float64, device=self.device)

        outs = self._run(arrays, wrap)
        return [o.numpy() if isinstance(o, gs.Tensor) else np.asarray(o, dtype=np.float64) for o in outs]

    def raw(self, arrays: dict):
        """Arrays of the device's namespace in and out (0-d for an output that is a constant)."""
        backend = self.backend
        if backend.is_numpy:
            outs = self._run(arrays, lambda v: gs.from_numpy(np.ascontiguousarray(v, dtype=np.float64)))
        else:
            # an array of the device is taken as it is (no copy, no transfer); a host one crosses over
            outs = self._run(arrays, lambda v: wrap_array(backend.from_numpy(np.ascontiguousarray(v, dtype=np.float64))
                                                     if isinstance(v, np.ndarray) else v, backend))
        xp = backend.xp
        return [o._data if isinstance(o, gs.Tensor) else xp.asarray(float(o), dtype=xp.float64)
                for o in outs]
