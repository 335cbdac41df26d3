"""Trace: the compiled loss, gradient, residuals and Jacobian of one lowered problem.

``trace_problem`` records the tape, generates and compiles the code in the
flavours the problem needs, and checks the result against the engine at the
start point before anyone uses it.
"""
from __future__ import annotations

import numpy as np

import gradsolve as gs
from gradsolve.solve.trace.codegen import ARRAY, FLOAT, Emitter, compile_source, indent
from gradsolve.solve.trace.helpers import CPU_HELPERS, FLOAT_HELPERS, array_helpers
from gradsolve.solve.trace.tape import TraceUnavailable, record

__all__ = ["Trace", "trace_problem", "MAX_JACOBIAN_LINES"]

#: Limit on the generated Jacobian's size (outputs x tape length); beyond it LM runs eagerly.
MAX_JACOBIAN_LINES = 200_000


class Trace:
    """Compiled loss, gradient, residuals and Jacobian of one lowered problem.

    Single point (`x`: a sequence of p floats): ``loss_grad(x) -> (loss, [g...])``,
    ``residuals(x)``, ``residuals_jacobian(x) -> (r, J)`` (NumPy, float64).
    Batched (`X`: (K, p) array): ``batch_loss_grad(X) -> (loss (K,), G (K, p))``,
    ``batch_residuals_jacobian(X) -> (R (K, m), J (K, m, p))``.

    ``flavour`` is ``"float"`` (straight-line Python floats for single points) or
    ``"array"`` (array code for everything); ``label`` says so in words, and
    ``batch_label`` says how batches are evaluated.

    Devices.  The array code runs in the namespace of the device the problem was
    lowered on (``backend``: NumPy on the cpu, CuPy for cuda, the Array API strict
    namespace in tests), with the data columns kept there.  Batched calls take a
    (K, p) array on that device (a NumPy array is moved there) and return arrays
    on it, so a batched optimizer can keep everything on the device; single-point
    calls take and return host values.  A float64 problem without data gets the
    float flavour on every device: its single points are a dozen scalar
    operations, ~2 microseconds as Python floats on the host against tens of
    microseconds of kernel launches and a device round trip per call on a GPU,
    while its batches still run as array code on the device.
    """

    def __init__(self, lowered):
        self.kind = lowered.kind
        self.n_params = len(lowered.params)
        self.np_dtype = np.float64 if lowered.dtype == gs.float64 else np.float32
        self.backend = backend = gs.backend.get_backend(lowered.device)
        self.xp = xp = backend.xp
        self.dtype = getattr(xp, np.dtype(self.np_dtype).name)  # the same dtype in the device's namespace
        self._helpers = CPU_HELPERS if backend.is_numpy else {**FLOAT_HELPERS, **array_helpers(xp)}
        self.tape = tape = record(lowered)
        nodes = tape.nodes
        if self.kind == "minimize" and nodes[tape.outputs[0]].rows:
            raise TraceUnavailable("the minimized expression depends on data rows")
        n_rows = lowered.spec.n_rows or 1
        self.widths = [n_rows if nodes[o].rows else 1 for o in tape.outputs]
        self.data = [xp.asarray(t.detach()._data, dtype=self.dtype) for t in lowered.data.values()]
        on_cpu = backend.is_numpy
        self.flavour = FLOAT if (self.np_dtype == np.float64 and not self.data) else ARRAY
        self._array_loss_grad = self._build_array_loss_grad()
        self._array_jacobian = None
        self._jacobian_reason = None
        if self.kind != "minimize":
            lines = len(tape.outputs) * len(nodes)
            if lines <= MAX_JACOBIAN_LINES:
                self._array_jacobian = self._build_array_jacobian()
            else:
                self._jacobian_reason = f"the Jacobian would take {lines} generated lines"
        if self.flavour == FLOAT:
            self._float_loss_grad = self._build_float_loss_grad()
            self._float_jacobian = self._build_float_jacobian() if self._array_jacobian is not None else None
        self.batch_label = "traced: NumPy arrays" if on_cpu else f"traced: array code on {backend.name}"
        floats = "traced: straight-line Python floats" + ("" if on_cpu else f" on the host (a scalar problem; "
                                                          f"batches run on {backend.name})")
        self.label = floats if self.flavour == FLOAT else self.batch_label

    # -- builders --------------------------------------------------------------------
    def _begin(self, flavour):
        """An emitter with the forward pass written: (emitter, argument list, output references).

        Float code takes the unknowns as arguments x0, x1, ...; array code takes one
        (K, p) array X and slices (K, 1) columns from it.
        """
        e = Emitter(self.tape, flavour)
        p = self.n_params
        if flavour == ARRAY:
            args = "X"
            e.lines.extend(["K = X.shape[0]"] + [f"x{j} = X[:, {j}:{j + 1}]" for j in range(p)])
        else:
            args = ", ".join(f"x{j}" for j in range(p))
        e.emit_forward()
        return e, args, [e.ref(o) for o in self.tape.outputs]

    def _bindings(self, emitter):
        bound = {}
        for name, value in emitter.names.items():
            bound[name] = self.data[int(name[1:])] if name.startswith("d") else value
        return bound

    def _seeds(self, emitter):
        seeds = {}
        for o in self.tape.outputs:
            if not self.tape.nodes[o].active:
                continue
            r = emitter.ref(o)
            expr = "1.0" if self.kind == "minimize" else f"{r} + {r}"
            seeds[o] = expr if o not in seeds else f"{seeds[o]} + {expr}"
        return seeds

    def _build_float_loss_grad(self):
        e, args, outs = self._begin(FLOAT)
        if self.kind == "minimize":
            e.lines.append(f"loss = {outs[0]}")
        else:
            e.lines.append("loss = " + " + ".join(f"{r} * {r}" for r in outs))
        grads = e.emit_reverse(self._seeds(e), reduce_rows=False)
        result = ", ".join(["loss"] + [grads.get(j, "0.0") for j in range(self.n_params)])
        e.lines.append(f"return ({result},)")
        source = f"def _loss_grad({args}):\n" + indent(e.lines)
        self.float_source = source
        return compile_source(source, "_loss_grad", self._bindings(e), self._helpers)

    def _build_array_loss_grad(self):
        e, args, outs = self._begin(ARRAY)
        if self.kind == "minimize":
            e.lines.append(f"loss = _np.reshape(_np.broadcast_to({outs[0]}, (K, 1)), (K,))")
        else:
            e.lines.append(f"R = _cat([{', '.join(outs)}], {self.widths!r}, K, X.dtype)")
            e.lines.append("loss = _np.sum(R * R, axis=1)")
        grads = e.emit_reverse(self._seeds(e), reduce_rows=True)
        columns = ", ".join(grads.get(j, "0.0") for j in range(self.n_params))
        e.lines.append(f"return loss, _cols([{columns}], K, X.dtype)")
        source = f"def _loss_grad({args}):\n" + indent(e.lines)
        self.array_source = source
        return compile_source(source, "_loss_grad", self._bindings(e), self._helpers)

    def _jacobian_lines(self, e):
        """One reverse sweep per output (seed 1.0, rows kept); `j<i>` holds output i's row of adjoints."""
        names = []
        for i, o in enumerate(self.tape.outputs):
            adjoints = e.emit_reverse({o: "1.0"}, reduce_rows=False) if self.tape.nodes[o].active else {}
            e.lines.append(f"j{i} = (" + "".join(f"{adjoints.get(k, '0.0')}, " for k in range(self.n_params)) + ")")
            names.append(f"j{i}")
        return names

    def _build_array_jacobian(self):
        e, args, outs = self._begin(ARRAY)
        e.lines.append(f"R = _cat([{', '.join(outs)}], {self.widths!r}, K, X.dtype)")
        blocks = self._jacobian_lines(e)
        e.lines.append(f"return R, _jac([{', '.join(blocks)}], {self.widths!r}, K, {self.n_params}, X.dtype)")
        source = f"def _jacobian({args}):\n" + indent(e.lines)
        return compile_source(source, "_jacobian", self._bindings(e), self._helpers)

    def _build_float_jacobian(self):
        e, args, outs = self._begin(FLOAT)
        blocks = self._jacobian_lines(e)
        e.lines.append(f"return [{', '.join(outs)}], [{', '.join(blocks)}]")
        source = f"def _jacobian({args}):\n" + indent(e.lines)
        return compile_source(source, "_jacobian", self._bindings(e), self._helpers)

    # -- evaluation ------------------------------------------------------------------
    @property
    def has_jacobian(self) -> bool:
        return self._array_jacobian is not None

    @property
    def jacobian_reason(self) -> str | None:
        return self._jacobian_reason

    def _on_device(self, X):
        """X as an array of the trace's dtype on its device (a NumPy array is moved there)."""
        if self.backend.is_numpy:
            return np.asarray(X, dtype=self.np_dtype)
        if isinstance(X, np.ndarray):
            X = self.backend.from_numpy(np.ascontiguousarray(X, dtype=self.np_dtype))
        return self.xp.asarray(X, dtype=self.dtype)

    def batch_loss_grad(self, X):
        """Loss (K,) and gradient (K, p) at the K rows of X, as arrays on the trace's device."""
        X = self._on_device(X)
        with np.errstate(all="ignore"):
            return self._array_loss_grad(X)

    def batch_residuals_jacobian(self, X):
        """Residuals (K, m) and Jacobian (K, m, p) at the K rows of X, as arrays on the trace's device."""
        X = self._on_device(X)
        with np.errstate(all="ignore"):
            return self._array_jacobian(X)

    def loss_grad(self, x):
        """(loss, gradient list) at one point: the float code, or array code where math raises."""
        if isinstance(x, np.ndarray):
            x = x.tolist()
        if self.flavour == FLOAT:
            try:
                out = self._float_loss_grad(*x)
                return out[0], list(out[1:])
            except (ArithmeticError, ValueError):
                pass
        loss, G = self.batch_loss_grad(np.asarray(x, dtype=np.float64).reshape(1, -1))
        loss, G = self.backend.to_numpy(loss), self.backend.to_numpy(G)
        return float(loss[0]), [float(v) for v in G[0]]

    @property
    def fast_loss_grad(self):
        """The raw float function ``f(*x) -> (loss, g0, ...)`` (it may raise; see loss_grad)."""
        return self._float_loss_grad if self.flavour == FLOAT else None

    def residuals_jacobian(self, x):
        """Residual vector (m,) and Jacobian (m, p), float64 NumPy, at one point."""
        if isinstance(x, np.ndarray):
            x = x.tolist()
        if self.flavour == FLOAT:
            try:
                r, J = self._float_jacobian(*x)
                return np.array(r, dtype=np.float64), np.array(J, dtype=np.float64).reshape(len(r), self.n_params)
            except (ArithmeticError, ValueError):
                pass
        R, J = self.batch_residuals_jacobian(np.asarray(x, dtype=np.float64).reshape(1, -1))
        R, J = self.backend.to_numpy(R), self.backend.to_numpy(J)
        return np.asarray(R[0], dtype=np.float64), np.asarray(J[0], dtype=np.float64)

    def residuals(self, x):
        return self.residuals_jacobian(x)[0]


def trace_problem(lowered, *, verify: bool = True) -> Trace:
    """Trace `lowered`; raise TraceUnavailable (with the reason) when it cannot be traced or disagrees with eager."""
    trace = Trace(lowered)
    if verify:
        _verify(trace, lowered)
    return trace


def _verify(trace: Trace, lowered) -> None:
    """The trace must reproduce the engine's loss and gradient at the current point."""
    x = lowered.values()
    for p in lowered.params:
        p.grad = None
    loss = lowered.loss()
    loss.backward()
    eager_loss = float(loss.item())
    eager_grad = np.array([0.0 if p.grad is None else float(p.grad.item()) for p in lowered.params])
    lowered.zero_grad()
    traced_loss, traced_grad = trace.loss_grad(x)
    rtol = 1e-9 if trace.np_dtype == np.float64 else 1e-4
    got = np.array([traced_loss] + list(traced_grad))
    want = np.concatenate([[eager_loss], eager_grad])
    if not np.allclose(got, want, rtol=rtol, atol=rtol * 1e-3, equal_nan=True):
        raise TraceUnavailable("the traced loss or gradient differs from the engine's at the start point")
