"""Graph nodes: the primitives' base class `Op` and the public custom `Function`.

A node is created when an operation runs on a tensor that requires grad while
grad mode is on. It points at the nodes of its inputs (`next_functions`: one
`(node, output_nr)` pair or None per input; a leaf's node is the leaf tensor
itself) and knows how to turn the gradient of its output into gradients of its
inputs. Backward formulas are written with tensor operations, so running them
with grad mode on (`create_graph=True`) records a graph of the gradient itself.
"""
from __future__ import annotations

from numpy import asarray as _np_asarray, ndarray as _ndarray

from gradsolve.autograd.grad_mode import GradMode
from gradsolve.backend import foreign_array_error
from gradsolve._tensor import Tensor, wrap_array

_new_tensor = Tensor.__new__

FREED_MESSAGE = (
    "Trying to backward through the graph a second time (or to read saved tensors after they were freed). "
    "Pass retain_graph=True to the first backward() or autograd.grad() call if you need to backward twice."
)


def _modified_message(node, index, saved_version, version):
    return (
        f"one of the tensors needed for gradient computation has been modified by an in-place operation: "
        f"input {index} of {node.name()} is at version {version}; expected version {saved_version}. "
        "Use an out-of-place operation (x = x + y instead of x.add_(y)) or clone() the tensor first."
    )


class Node:
    """Common interface the backward engine relies on."""

    __slots__ = ("next_functions", "__weakref__")
    # (output_nr, weakref to tensor) pairs that asked for retain_grad(); None, the common case, costs nothing.
    _retained = None
    # What the engine reads of every node; Op sets its own per call.
    n_outputs = 1
    input_shapes = None
    input_dtypes = None

    def name(self) -> str:
        return type(self).__name__ + "Backward0"

    def __repr__(self):
        return f"<{self.name()}>"

    # Engine hooks, overridden below.
    def run_backward(self, grad_outputs):  # pragma: no cover - abstract
        raise NotImplementedError

    def release(self):  # pragma: no cover - abstract
        pass


class Op(Node):
    """A differentiable primitive: `forward` on raw arrays, `backward` on tensors.

    Subclasses define

    * ``forward(self, *args)``: receives backend arrays (or Python numbers for
      non-tensor arguments) and returns the output array; it may keep small
      non-tensor facts on ``self`` (shapes, axes).
    * ``backward(self, grad)``: returns one gradient tensor (or None) per
      positional argument, using ``self.inputs`` (the original arguments) and
      ``self.result()`` (the output) where the formula needs them.

    ``saves_inputs`` / ``saves_result`` say which values ``backward`` reads,
    so that only those are kept alive and checked against in-place changes.
    Gradients need not match their input's shape: the engine sums broadcast
    dimensions away.
    """

    __slots__ = ("inputs", "input_shapes", "input_dtypes", "needs_input_grad", "_out", "_versions", "_out_version",
                 "_out_version_at_save", "_freed", "__dict__")
    saves_inputs = True
    saves_result = False
    changes_device = False

    @classmethod
    def apply(cls, *args, **kwargs):
        backend = None
        requires = False
        raws = []
        for a in args:
            if type(a) is Tensor or isinstance(a, Tensor):
                if backend is None:
                    backend = a._backend
                elif a._backend is not backend:
                    raise RuntimeError(
                        f"expected all tensors on the same device, found {backend.name} and {a._backend.name}: "
                        "move one with .to(device)"
                    )
                if a._requires_grad:
                    requires = True
                raws.append(a._data)
            else:
                raws.append(a)
        op = cls.__new__(cls)
        try:  # free when nothing is raised
            out_data = op.forward(*raws, **kwargs) if kwargs else op.forward(*raws)
        except TypeError:
            if backend is not None:
                error = foreign_array_error([a for a in args if not isinstance(a, Tensor)], backend)
                if error is not None:  # a raw array from another backend: say so, not the backend's TypeError
                    raise error from None
            raise
        if backend is None:  # pragma: no cover - ops always get a tensor
            raise TypeError(f"{cls.__name__} needs at least one tensor argument")
        if cls.changes_device:
            backend = op.target
        return op._output(out_data, backend, requires, args, kwargs)

    @classmethod
    def apply_binary(cls, a, b):
        """``apply(a, b)`` for the arithmetic operators (one side a Tensor), without the argument loop.

        The common cases -- tensor with tensor on one device, tensor with a Python
        float or int -- take this path; anything else goes through `apply`.
        """
        ta, tb = type(a), type(b)
        if ta is Tensor:
            backend = a._backend
            if tb is Tensor:
                if b._backend is not backend:
                    return cls.apply(a, b)  # says which devices
                requires = a._requires_grad or b._requires_grad
                raw_a, raw_b = a._data, b._data
            elif tb is float or tb is int:
                requires = a._requires_grad
                raw_a, raw_b = a._data, b
            else:
                return cls.apply(a, b)
        elif tb is Tensor and (ta is float or ta is int):
            backend = b._backend
            requires = b._requires_grad
            raw_a, raw_b = a, b._data
        else:
            return cls.apply(a, b)
        op = cls.__new__(cls)
        return op._output(op.forward(raw_a, raw_b), backend, requires, (a, b), None)

    def _output(self, out_data, backend, requires, args, kwargs):
        """The result tensor around `out_data` (wrap_array, inlined: the hot path of every operation), recorded."""
        if backend.is_numpy and type(out_data) is not _ndarray:
            out_data = _np_asarray(out_data)  # NumPy returns scalars from 0-d arithmetic; keep arrays
        out = _new_tensor(Tensor)
        out._data = out_data
        out._backend = backend
        out._requires_grad = False
        out.grad = None
        out.grad_fn = None
        out._version = [0]
        out._output_nr = 0
        out._retains_grad = False
        if requires and GradMode.enabled:
            self._record(args, out, kwargs)
        return out

    def _record(self, args, out, kwargs):
        # One pass over the arguments; this runs for every recorded operation, so no generators.
        edges = []
        needs = []
        shapes = []
        versions = []
        out_dtype = out._data.dtype
        mixed = False
        saves_inputs = self.saves_inputs
        for a in args:
            if type(a) is Tensor or isinstance(a, Tensor):
                data = a._data
                shapes.append(data.shape)
                if saves_inputs:
                    versions.append(a._version[0])
                if data.dtype is not out_dtype:
                    mixed = True
                if a._requires_grad:
                    fn = a.grad_fn
                    edges.append((a, 0) if fn is None else (fn, a._output_nr))
                    needs.append(True)
                    continue
            else:
                shapes.append(None)
                if saves_inputs:
                    versions.append(None)
            edges.append(None)
            needs.append(False)
        self.next_functions = tuple(edges)
        self.needs_input_grad = tuple(needs)
        self.input_shapes = shapes
        # Where inputs differ in dtype from the output (float32 * 0-d float64, casts), the engine
        # casts each gradient back to its input's dtype; otherwise the formulas already keep it.
        self.input_dtypes = [a._data.dtype if isinstance(a, Tensor) else None for a in args] if mixed else None
        self._freed = False
        if saves_inputs:
            self.inputs = args
            self._versions = versions
        else:
            self.inputs = None
        if self.saves_result:
            self._out = out._data
            self._out_version = out._version
            self._out_version_at_save = out._version[0]
        if kwargs:
            self._kwargs = kwargs
        out._requires_grad = True
        out.grad_fn = self

    # -- used by backward formulas ---------------------------------------
    def result(self) -> Tensor:
        """The forward output: recomputed (and so differentiable) under create_graph."""
        if GradMode.enabled:
            return type(self).apply(*self.inputs, **getattr(self, "_kwargs", {}))
        return wrap_array(self._out, self._backend_of_inputs())

    def _backend_of_inputs(self):
        for a in self.inputs:
            if isinstance(a, Tensor):
                return a._backend
        raise AssertionError("no tensor input")  # pragma: no cover

    # -- engine hooks -----------------------------------------------------
    def run_backward(self, grad_outputs):
        if self._freed:
            raise RuntimeError(FREED_MESSAGE)
        if self.saves_inputs:
            for i, a in enumerate(self.inputs):
                if isinstance(a, Tensor) and a._version[0] != self._versions[i]:
                    raise RuntimeError(_modified_message(self, i, self._versions[i], a._version[0]))
        if self.saves_result and self._out_version[0] != self._out_version_at_save:
            raise RuntimeError(_modified_message(self, "output", self._out_version_at_save, self._out_version[0]))
        grads = self.backward(grad_outputs[0])
        if type(grads) is not tuple:
            grads = (grads,)
        return grads

    def release(self):
        if self.saves_inputs or self.saves_result:
            self._freed = True
            self.inputs = None
            self._out = None


class BackwardCFunction(Node):
    """The node (and `ctx`) of one call of a custom `Function`."""

    __slots__ = ("_cls", "_saved", "_saved_versions", "needs_input_grad", "_freed", "n_outputs",
                 "_materialize", "input_shapes", "input_dtypes", "__dict__")

    def __init__(self, cls):
        self._cls = cls
        self._saved = None
        self._saved_versions = None
        self._freed = False
        self.n_outputs = 1
        self.next_functions = ()
        self.needs_input_grad = ()
        self.input_shapes = None
        self.input_dtypes = None

    def name(self) -> str:
        return self._cls.__name__ + "Backward"

    # -- the ctx interface ------------------------------------------------
    def save_for_backward(self, *tensors):
        self._saved = tensors
        self._saved_versions = [t._version[0] if isinstance(t, Tensor) else None for t in tensors]

    @property
    def saved_tensors(self):
        if self._freed:
            raise RuntimeError(FREED_MESSAGE)
        if self._saved is None:
            return ()
        for i, t in enumerate(self._saved):
            if isinstance(t, Tensor) and t._version[0] != self._saved_versions[i]:
                raise RuntimeError(_modified_message(self, i, self._saved_versions[i], t._version[0]))
        return self._saved

    def mark_non_differentiable(self, *tensors):
        self._non_diff = {id(t) for t in tensors}

    def set_materialize_grads(self, value: bool):
        self._materialize = value

    # -- engine hooks -----------------------------------------------------
    def run_backward(self, grad_outputs):
        if self._freed:
            raise RuntimeError(FREED_MESSAGE)
        grads = self._cls.backward(self, *grad_outputs)
        if not isinstance(grads, tuple):
            grads = (grads,)
        n_inputs = len(self.next_functions)
        if len(grads) < n_inputs:
            # Trailing Nones may be omitted, as PyTorch allows for non-tensor arguments.
            extra = grads[n_inputs:]
            if any(g is not None for g in extra):
                raise RuntimeError(
                    f"function {self.name()} returned {len(grads)} gradients, expected {n_inputs}"
                )
        if len(grads) != n_inputs:
            if len(grads) > n_inputs and all(g is None for g in grads[n_inputs:]):
                grads = grads[:n_inputs]
            else:
                raise RuntimeError(
                    f"function {self.name()} returned an incorrect number of gradients (expected {n_inputs}, "
                    f"got {len(grads)})"
                )
        # User code: check each gradient against its input's shape (the engine then sums broadcast
        # dims away). Only a shape the input broadcasts to is accepted, as in PyTorch.
        for i, g in enumerate(grads):
            if g is not None and self.next_functions[i] is not None and isinstance(g, Tensor):
                shape = self.input_shapes[i]
                if g._data.shape != shape and not _broadcasts_to(shape, g._data.shape):
                    raise RuntimeError(
                        f"Function {self.name()} returned an invalid gradient at index {i} - got {list(g.shape)} "
                        f"but expected shape compatible with {list(shape)}"
                    )
        return grads

    def release(self):
        self._freed = True
        self._saved = None


def _broadcasts_to(shape, target):
    """Whether an array of `shape` broadcasts to `target` (so a gradient of `target` sums back to it)."""
    if len(shape) > len(target):
        return False
    lead = len(target) - len(shape)
    return all(s == 1 or s == t for s, t in zip(shape, target[lead:]))


class FunctionMeta(type):
    pass


class Function(metaclass=FunctionMeta):
    """A custom differentiable operation, as in PyTorch.

    >>> import gradsolve as gs
    >>> class Cube(gs.autograd.Function):
    ...     @staticmethod
    ...     def forward(ctx, x):
    ...         ctx.save_for_backward(x)
    ...         return x ** 3
    ...     @staticmethod
    ...     def backward(ctx, grad):
    ...         x, = ctx.saved_tensors
    ...         return grad * 3 * x ** 2
    >>> x = gs.tensor(2.0, requires_grad=True)
    >>> Cube.apply(x).backward(); x.grad
    tensor(12.)
    """

    @staticmethod
    def forward(ctx, *args, **kwargs):  # pragma: no cover - user code
        raise NotImplementedError("a Function subclass must define forward(ctx, *args)")

    @staticmethod
    def backward(ctx, *grad_outputs):  # pragma: no cover - user code
        raise NotImplementedError("a Function subclass must define backward(ctx, *grad_outputs)")

    @classmethod
    def apply(cls, *args, **kwargs):
        ctx = BackwardCFunction(cls)
        tensor_args = [a for a in args if isinstance(a, Tensor)]
        ctx.needs_input_grad = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        record = GradMode.enabled and any(ctx.needs_input_grad)
        prev = GradMode.enabled
        GradMode.enabled = False
        try:
            outputs = cls.forward(ctx, *args, **kwargs)
        finally:
            GradMode.enabled = prev
        if not record:
            return outputs
        single = not isinstance(outputs, tuple)
        outs = (outputs,) if single else outputs
        edges = []
        for a in args:
            if isinstance(a, Tensor) and a.requires_grad:
                edges.append((a, 0) if a.grad_fn is None else (a.grad_fn, a._output_nr))
            else:
                edges.append(None)
        ctx.next_functions = tuple(edges)
        ctx.input_dtypes = [a._data.dtype if isinstance(a, Tensor) else None for a in args]
        ctx.input_shapes = [a._data.shape if isinstance(a, Tensor) else None for a in args]
        ctx.n_outputs = len(outs)
        non_diff = getattr(ctx, "_non_diff", set())
        wrapped = []
        for nr, o in enumerate(outs):
            if not isinstance(o, Tensor):
                wrapped.append(o)
                continue
            if id(o) in non_diff:
                wrapped.append(o)
                continue
            if any(o is t for t in tensor_args) or o.grad_fn is not None or o.requires_grad:
                o = o.detach()  # a fresh tensor that shares storage (and version counter)
            o._requires_grad = True
            o.grad_fn = ctx
            o._output_nr = nr
            wrapped.append(o)
        return wrapped[0] if single else tuple(wrapped)


class InplaceFunction(Function):
    """Kept for compatibility with code written against older PyTorch."""


def once_differentiable(fn):
    """Accepted for compatibility; gradsolve's backward formulas may still be differentiated."""
    return fn
