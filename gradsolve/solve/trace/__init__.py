"""Tracing: record a lowered problem's graph once, then evaluate loss and gradient without the engine.

Why.  A step of a small problem (the four-unknown puzzle: a dozen scalar
operations) costs the eager engine about 150 microseconds, nearly all of it
per-operation overhead: a Tensor and a graph node per operation, a topological
sort per backward.  The graph of a parsed problem never changes, so we record it
once and replay it as straight-line code.

What is recorded.  Tracing works on the lowered ``Program`` of
:mod:`gradsolve.problem.lowering` -- our own instruction list, never user text.
Each instruction's engine function is looked up *by identity* in ``DECOMPOSE``
(an allowlist: ``lowering.nary_sum``, ``gs.exp``, ...) and broken into primitive tape
operations (``add``, ``mul``, ``pow_scalar``, ``exp``, ...) in exactly the order
the engine applies its ``Op`` primitives (``functools.reduce`` order for sums and
products, ``1.0 / x`` as a division by a number).  A function that is not in
the table stops tracing, and the solve runs eagerly and says why.

Derivatives.  The reverse sweep over the tape is ours, but its rules are not:
each primitive's derivative is declared once, in :mod:`gradsolve.ops.derivatives`,
and the code generator evaluates the very rules the engine's ``backward`` runs,
on symbolic operands that write source text (``Div``: ``-g * a / (b * b)``;
``PowScalar``: ``g * c * x ** (c - 1)`` with ``x * x`` for the square; ties of
``maximum`` share the gradient).  Adjoints are summed per node as the engine's
``pending`` dict sums them.  So traced values equal eager ones to the
last bit in nearly all cases, and to a few ulps where NumPy's summation order
or SIMD transcendental functions differ from ``math``'s; the tests hold them to
1e-12 and compare 100-step trajectories of every example.  Every trace is also
checked against the engine at the start point before it is used.

Code generation.  The tape becomes the source of a Python function, compiled
once with ``compile``/``exec``.  Only our op names, variable names of the form
``x3``/``v12``/``a12``, helper names from a fixed allowlist and ``repr`` of
finite floats go into it; ``check_source`` tokenizes the text and refuses any
other name, any string and any non-numeric literal before it is compiled.  Two
flavours, chosen by measurement:

* ``float``: plain Python floats and ``math`` -- for float64 problems without
  data.  On the puzzle one loss-and-gradient call takes ~2 microseconds, against
  ~30 for the same tape as NumPy calls on 0-d arrays (NumPy's per-call overhead
  is ~1 microsecond an operation, ``math`` and float arithmetic ~50 ns).  ``math``
  raises where NumPy returns inf or NaN (``log(0)``, ``1/0``, ``sqrt(-1)``); such a
  call is redone by the array flavour, so results keep NumPy's IEEE semantics.
* ``array``: array code over a leading batch dimension: unknowns are ``(K, 1)``
  columns, data columns broadcast to ``(K, rows)``, the loss is ``(K,)``.  Used for
  data problems, float32, batched multistart (K starts in one call) and every
  problem lowered on a device.  The source names its namespace ``_np`` and calls
  only Array API functions and the helpers of ``array_helpers``; these are bound
  to NumPy on the cpu and to the device's namespace otherwise (CuPy for cuda), so
  one generated text runs on every backend and the data never leaves the device.

Graphs that change with the data.  A lowered program is a fixed instruction
list, so it has no Python-level branches on values; value-dependent choices
(``abs``, ``min``/``max``, ``sign``, ``sigmoid``'s two formulas) are selects inside
an operation and are traced as such.  What cannot be traced (an instruction
outside ``DECOMPOSE``, a non-scalar constant, a ``minimize`` expression over data
rows, a trace that disagrees with the engine at the start) raises
:class:`TraceUnavailable` with the reason, and the caller runs eagerly and
reports the reason in the progress output.

The modules, each layer using only the ones before it: ``tape`` (recording:
``record``, ``DECOMPOSE``), ``codegen`` (the source text: ``Emitter``,
``check_source``, ``compile_source``), ``helpers`` (the functions generated code
calls), ``compiled`` (``Trace``, ``trace_problem``), ``optimizers`` (``TracedPoint``,
``TracedLM``, ``ArraySlot``: gs.optim's optimizers over a trace).
"""
from gradsolve.solve.trace.tape import TraceUnavailable
from gradsolve.solve.trace.compiled import MAX_JACOBIAN_LINES, Trace, trace_problem
from gradsolve.solve.trace.optimizers import ArraySlot, TracedLM, TracedPoint

__all__ = ["Trace", "TraceUnavailable", "trace_problem", "TracedPoint", "TracedLM", "ArraySlot", "MAX_JACOBIAN_LINES"]
