"""The backward pass: walk the graph in reverse topological order, applying the chain rule.

No recursion (a chain of 100,000 operations backpropagates). Every node runs
once, after all the gradients flowing into it have been summed; gradients
live in a dict keyed by node, never inside the graph. Saved values are freed
as each node finishes unless `retain_graph`.
"""
from __future__ import annotations

from gradsolve._dtypes import dtype_from_array_dtype
from gradsolve.autograd.grad_mode import GradMode
from gradsolve._tensor import Tensor, wrap_array


def _topological_counts(root_nodes):
    """Number of graph edges pointing into each node reachable from the roots.

    Nodes are dict keys by identity (Tensor leaves hash by id; dicts test
    identity before equality, so a tensor's elementwise == is never called).
    """
    dependencies = {}
    seen = set(root_nodes)
    stack = list(root_nodes)
    while stack:
        node = stack.pop()
        if type(node) is Tensor:
            continue
        for edge in node.next_functions:
            if edge is None:
                continue
            child = edge[0]
            if child in dependencies:
                dependencies[child] += 1
            else:
                dependencies[child] = 1
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return dependencies


def run_backward(roots, root_grads, *, retain_graph, create_graph, inputs=None, allow_unused=False,
                 accumulate_into_leaves=True):
    """Backpropagate from `roots` seeded with `root_grads`.

    With `inputs` (autograd.grad), returns the gradient reaching each of them
    and leaves `.grad` untouched; otherwise adds into the leaves' `.grad`.
    """
    captured = None
    wanted = None
    if inputs is not None:
        captured = {}
        wanted = {}
        for i, t in enumerate(inputs):
            key = t if t.grad_fn is None else (t.grad_fn, t._output_nr)
            wanted.setdefault(key, []).append(i)

    # Gradients waiting at each node: output 0 in `pending`, other outputs of
    # multi-output custom Functions in `pending_other[(node, nr)]`.
    pending = {}
    pending_other = {}
    root_nodes = []
    for t, g in zip(roots, root_grads):
        node = t if t.grad_fn is None else t.grad_fn
        nr = 0 if t.grad_fn is None else t._output_nr
        _add(pending, pending_other, node, nr, g)
        if not any(n is node for n in root_nodes):  # identity: `in` would compare tensors elementwise
            root_nodes.append(node)

    dependencies = _topological_counts(root_nodes)
    ready = [n for n in root_nodes if dependencies.get(n, 0) == 0]
    prev_mode = GradMode.enabled
    GradMode.enabled = bool(create_graph)
    # Without create_graph, gradients meeting at a node are summed on the raw arrays: the sum
    # needs no node of its own, and a solver runs this loop thousands of times.
    add = _add_recorded if create_graph else _add_raw
    try:
        while ready:
            node = ready.pop()
            grad0 = pending.pop(node, None)
            if type(node) is Tensor:
                _finish_leaf(node, grad0, captured, wanted, create_graph, accumulate_into_leaves)
                continue
            n_out = node.n_outputs
            if n_out == 1:
                grad_outputs = (grad0,)
                nothing = grad0 is None
            else:
                grad_outputs = (grad0,) + tuple(pending_other.pop((node, k), None) for k in range(1, n_out))
                nothing = all(g is None for g in grad_outputs)
            if node._retained is not None and (
                    accumulate_into_leaves if captured is None else _leads_to_inputs(node, n_out, wanted)):
                # As in PyTorch, autograd.grad too fills retained grads, on the nodes it needs.
                _fill_retained(node, grad_outputs, create_graph)
            if captured is not None:
                for nr, g in enumerate(grad_outputs):
                    if g is not None:
                        for i in wanted.get((node, nr), ()):
                            captured[i] = g
            if nothing:
                grads = ()  # nothing flowed here; still count down the edges below
            else:
                grads = node.run_backward(grad_outputs)
                if not retain_graph:
                    node.release()
            shapes = node.input_shapes
            dtypes = node.input_dtypes
            n_grads = len(grads)
            for k, edge in enumerate(node.next_functions):
                if edge is None:
                    continue
                child, nr = edge
                g = grads[k] if k < n_grads else None
                if g is not None:
                    if type(g) is not Tensor and not isinstance(g, Tensor):
                        raise RuntimeError(f"{node.name()} returned a gradient of type {type(g).__name__}, expected a tensor")
                    if shapes is not None and g._data.shape != shapes[k]:
                        g = _sum_to(g, shapes[k])
                    if dtypes is not None:
                        dt = dtypes[k]
                        # An input's gradient has the input's dtype, as in PyTorch (`is`: dtypes are cached).
                        if dt is not None and g._data.dtype is not dt and g._data.dtype != dt:
                            g = _cast(g, dt)
                    if nr == 0:
                        prev = pending.get(child)
                        pending[child] = g if prev is None else add(prev, g)
                    else:
                        _add(pending, pending_other, child, nr, g)
                remaining = dependencies[child] - 1
                dependencies[child] = remaining
                if remaining == 0:
                    ready.append(child)
    finally:
        GradMode.enabled = prev_mode

    if captured is None:
        return None
    results = []
    for i, t in enumerate(inputs):
        g = captured.get(i)
        if g is None and not allow_unused:
            raise RuntimeError(
                f"input {i} of autograd.grad was not used to compute the outputs (or does not require grad); "
                "pass allow_unused=True to get None for it"
            )
        results.append(g)
    return tuple(results)


def _add_recorded(a, b):
    return a + b


def _add_raw(a, b):
    if a._backend is not b._backend or a._data.shape != b._data.shape:
        return a + b  # pragma: no cover - the engine sums every gradient to its input's shape first
    return wrap_array(a._data + b._data, a._backend)


def _add(pending, pending_other, node, nr, grad):
    if nr == 0:
        prev = pending.get(node)
        pending[node] = grad if prev is None else prev + grad
    else:
        key = (node, nr)
        prev = pending_other.get(key)
        pending_other[key] = grad if prev is None else prev + grad


def _finish_leaf(leaf, grad, captured, wanted, create_graph, accumulate):
    if grad is None:
        return
    if grad._data.shape != leaf._data.shape:
        grad = _sum_to(grad, leaf._data.shape)
    if captured is not None:
        for i in wanted.get(leaf, ()):
            captured[i] = grad
        return
    if not accumulate:
        return
    _accumulate(leaf, grad, create_graph)


def _accumulate(t, grad, create_graph):
    """Add `grad` into `t.grad` (a leaf, or a result that asked for retain_grad).

    As in PyTorch, without create_graph the sum goes in place into the existing
    ``.grad`` tensor (``g = x.grad`` still is ``x.grad`` after another backward).
    """
    existing = t.grad
    if create_graph:
        t.grad = grad if existing is None else existing + grad
        return
    if existing is None:
        # A fresh array: a pass-through gradient may alias another tensor's or the user's seed.
        t.grad = wrap_array(t._backend.xp.asarray(grad._data, copy=True), t._backend)
        return
    data = existing._data
    if existing._requires_grad or data.shape != grad._data.shape or data.dtype != grad._data.dtype:
        t.grad = existing + grad  # a differentiable .grad (from create_graph), or one the user set
        return
    try:
        data += grad._data
    except (ValueError, TypeError):  # a read-only .grad the user set (a broadcast view, say)
        t.grad = existing + grad
        return
    existing._data = data  # the same array, unless a backend's += made a new one
    existing._version[0] += 1


def seed_gradient(output, gradient, hint="backward(gradient=...)"):
    """The gradient that starts backward at `output`: ones for a scalar, else `gradient`
    checked against the output's shape and device and cast to its dtype (as PyTorch does)."""
    backend = output._backend
    if gradient is None:
        if output.numel() != 1:
            raise RuntimeError(
                f"grad can be implicitly created only for scalar outputs; this one has shape {output.shape}: "
                f"pass {hint} with a tensor of that shape"
            )
        return wrap_array(backend.xp.ones(output._data.shape, dtype=output._data.dtype), backend)
    if not isinstance(gradient, Tensor):
        from gradsolve._creation import tensor

        return tensor(gradient, dtype=output.dtype, device=backend)
    if gradient._data.shape != output._data.shape:
        raise RuntimeError(f"gradient has shape {gradient.shape}, expected the output's shape {output.shape}")
    if gradient._backend is not backend:
        raise RuntimeError(f"gradient is on device {gradient._backend.name}, the output on {backend.name}: "
                           "expected all tensors on the same device")
    if gradient._data.dtype != output._data.dtype:
        gradient = _cast(gradient, output._data.dtype)
    return gradient


def accumulate_into(inputs, roots, seeds, *, retain_graph, create_graph):
    """backward(inputs=...): add gradients into the `.grad` of those tensors only (leaves or not)."""
    inputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    if not inputs:
        raise RuntimeError("'inputs' argument to backward() cannot be empty")
    unique = []
    for t in inputs:
        if not isinstance(t, Tensor):
            raise TypeError(f"backward(inputs=...) takes tensors, got {type(t).__name__}")
        if not t._requires_grad:
            raise RuntimeError("one of the tensors in backward(inputs=...) does not require grad")
        if not any(t is u for u in unique):
            unique.append(t)
    grads = run_backward(roots, seeds, retain_graph=retain_graph, create_graph=create_graph, inputs=unique,
                         allow_unused=True)
    prev = GradMode.enabled
    GradMode.enabled = bool(create_graph)
    try:
        for t, g in zip(unique, grads):
            if g is not None:
                _accumulate(t, g, create_graph)
    finally:
        GradMode.enabled = prev


def _fill_retained(node, grad_outputs, create_graph):
    """Give the gradient reaching each retained output of `node` to its tensor."""
    for nr, ref in node._retained:
        t = ref()
        g = grad_outputs[nr] if nr < len(grad_outputs) else None
        if t is not None and g is not None:
            _accumulate(t, g, create_graph)


def _leads_to_inputs(node, n_out, wanted):
    """Whether autograd.grad needs `node`: one of its outputs, or a node behind it, is a wanted input."""
    if any((node, nr) in wanted for nr in range(n_out)):
        return True
    seen = {node}
    stack = [node]
    while stack:
        for edge in stack.pop().next_functions:
            if edge is None:
                continue
            child = edge[0]
            if type(child) is Tensor:
                if child in wanted:
                    return True
                continue
            if edge in wanted:
                return True
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return False


def _cast(grad, array_dtype):
    from gradsolve.ops.elementwise import Cast

    return Cast.apply(grad, dtype=dtype_from_array_dtype(array_dtype))


def _sum_to(grad, shape):
    from gradsolve.ops.shape import SumTo

    return SumTo.apply(grad, shape=tuple(shape))
