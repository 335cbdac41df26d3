"""The backward pass: walk the graph in reverse topological order, applying the chain rule.

No recursion (a chain of 100,000 operations backpropagates). Every node runs
once, after all the gradients flowing into it have been summed; gradients
live in a dict keyed by node, never inside the graph. Saved values are freed
as each node finishes unless `retain_graph`.
"""
from __future__ import annotations

from gradsolve.autograd.grad_mode import _State
from gradsolve._tensor import Tensor, _wrap


def _edge_key(node, nr):
    return node if nr == 0 else (node, nr)


def _topological_counts(root_nodes):
    """Number of graph edges pointing into each node reachable from the roots."""
    dependencies = {}
    seen = set()
    stack = list(root_nodes)
    for node in root_nodes:
        seen.add(id(node))
    while stack:
        node = stack.pop()
        if type(node) is Tensor:
            continue
        for edge in node.next_functions:
            if edge is None:
                continue
            child = edge[0]
            dependencies[id(child)] = dependencies.get(id(child), 0) + 1
            if id(child) not in seen:
                seen.add(id(child))
                stack.append(child)
    return dependencies


def _accumulate(buffers, node, nr, grad):
    slot = buffers.get(id(node))
    if slot is None:
        slot = buffers[id(node)] = [node, {}]
    grads = slot[1]
    prev = grads.get(nr)
    grads[nr] = grad if prev is None else prev + grad


def run_backward(roots, root_grads, *, retain_graph, create_graph, inputs=None, allow_unused=False,
                 accumulate_into_leaves=True):
    """Backpropagate from `roots` seeded with `root_grads`.

    With `inputs` (autograd.grad), returns the gradient reaching each of them
    and leaves `.grad` untouched; otherwise adds into the leaves' `.grad`.
    """
    captured = None
    if inputs is not None:
        captured = {}
        wanted = {}
        for i, t in enumerate(inputs):
            if t.grad_fn is None:
                wanted.setdefault(("leaf", id(t)), []).append(i)
            else:
                wanted.setdefault(("node", id(t.grad_fn), t._output_nr), []).append(i)

    buffers = {}
    root_nodes = []
    for t, g in zip(roots, root_grads):
        node = t if t.grad_fn is None else t.grad_fn
        nr = 0 if t.grad_fn is None else t._output_nr
        _accumulate(buffers, node, nr, g)
        if all(node is not n for n in root_nodes):
            root_nodes.append(node)

    dependencies = _topological_counts(root_nodes)
    ready = [n for n in root_nodes if dependencies.get(id(n), 0) == 0]
    prev_mode = _State.enabled
    _State.enabled = bool(create_graph)
    try:
        while ready:
            node = ready.pop()
            node_grads = buffers.pop(id(node))[1]
            if type(node) is Tensor:
                _finish_leaf(node, node_grads.get(0), captured, wanted if captured is not None else None,
                             create_graph, accumulate_into_leaves and captured is None)
                continue
            if captured is not None:
                for nr, g in node_grads.items():
                    for i in wanted.get(("node", id(node), nr), ()):
                        captured[i] = g
            if not node_grads:
                grads = ()
            else:
                grads = None
            n_out = getattr(node, "n_outputs", 1)
            if n_out == 1:
                grad_outputs = (node_grads.get(0),)
            else:
                grad_outputs = tuple(_materialize(node_grads.get(k), node, k) for k in range(n_out))
            if grads is None:
                grads = node.run_backward(grad_outputs)
                if not retain_graph:
                    node.release()
            shapes = getattr(node, "input_shapes", None)
            for k, edge in enumerate(node.next_functions):
                if edge is None:
                    continue
                child, nr = edge
                g = grads[k] if k < len(grads) else None
                if g is not None:
                    if not isinstance(g, Tensor):
                        raise RuntimeError(f"{node.name()} returned a gradient of type {type(g).__name__}, expected a tensor")
                    if shapes is not None:
                        shape = shapes[k]
                        if g._data.shape != shape:
                            g = _sum_to(g, shape)
                    _accumulate(buffers, child, nr, g)
                key = id(child)
                remaining = dependencies[key] - 1
                dependencies[key] = remaining
                if remaining == 0:
                    if key in buffers:
                        ready.append(child)
                    elif type(child) is not Tensor:
                        # Nothing flowed into this branch: its nodes still count down so
                        # that nodes shared with other branches become ready.
                        buffers[key] = [child, {}]
                        ready.append(child)
    finally:
        _State.enabled = prev_mode

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


def _materialize(grad, node, nr):
    return grad  # custom Functions receive None for outputs that got no gradient


def _finish_leaf(leaf, grad, captured, wanted, create_graph, accumulate):
    if grad is None:
        return
    if grad._data.shape != leaf._data.shape:
        grad = _sum_to(grad, leaf._data.shape)
    if captured is not None:
        for i in wanted.get(("leaf", id(leaf)), ()):
            captured[i] = grad
        return
    if not accumulate:
        return
    if create_graph:
        leaf.grad = grad if leaf.grad is None else leaf.grad + grad
        return
    xp = leaf._backend.xp
    if leaf.grad is None:
        # A fresh array: a pass-through gradient may alias another leaf's or the user's seed.
        leaf.grad = _wrap(xp.asarray(grad._data, copy=True), leaf._backend)
    else:
        leaf.grad = _wrap(leaf.grad._data + grad._data, leaf._backend)


def _sum_to(grad, shape):
    from gradsolve.ops.shape import SumTo

    return SumTo.apply(grad, shape=tuple(shape))
