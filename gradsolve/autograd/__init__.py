"""Reverse-mode automatic differentiation: the graph, backward, and tools around it."""
from __future__ import annotations

from gradsolve.autograd.grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled  # noqa: F401
from gradsolve.autograd.function import Function, InplaceFunction, once_differentiable  # noqa: F401
from gradsolve.autograd.gradcheck import GradcheckError, gradcheck, gradgradcheck  # noqa: F401
from gradsolve.autograd import functional  # noqa: F401
from gradsolve._tensor import Tensor, _wrap, tensor


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False, allow_unused=False,
         materialize_grads=False):
    """Gradients of `outputs` with respect to `inputs`, returned (not added into `.grad`).

    >>> import gradsolve as gs
    >>> x = gs.tensor(3.0, requires_grad=True)
    >>> gs.autograd.grad(x ** 2, x)
    (tensor(6.),)
    """
    from gradsolve.autograd.engine import run_backward

    single_output = isinstance(outputs, Tensor)
    outputs = [outputs] if single_output else list(outputs)
    inputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    if grad_outputs is None:
        grad_outputs = [None] * len(outputs)
    elif isinstance(grad_outputs, Tensor):
        grad_outputs = [grad_outputs]
    else:
        grad_outputs = list(grad_outputs)
    if len(grad_outputs) != len(outputs):
        raise RuntimeError(f"grad_outputs has {len(grad_outputs)} entries for {len(outputs)} outputs")
    for i, t in enumerate(inputs):
        if not t.requires_grad:
            raise RuntimeError(f"input {i} of autograd.grad does not require grad")
    roots, seeds = [], []
    for out, g in zip(outputs, grad_outputs):
        if not out.requires_grad:
            raise RuntimeError("an output of autograd.grad does not require grad and has no grad_fn")
        if g is None:
            if out.numel() != 1:
                raise RuntimeError(
                    f"grad can be implicitly created only for scalar outputs; pass grad_outputs for shape {out.shape}"
                )
            g = _wrap(out._backend.xp.ones(out._data.shape, dtype=out._data.dtype), out._backend)
        elif not isinstance(g, Tensor):
            g = tensor(g, dtype=out.dtype, device=out._backend)
        roots.append(out)
        seeds.append(g)
    if retain_graph is None:
        retain_graph = create_graph
    grads = run_backward(roots, seeds, retain_graph=retain_graph, create_graph=create_graph, inputs=inputs,
                         allow_unused=allow_unused or materialize_grads)
    if materialize_grads:
        from gradsolve._tensor import zeros_like

        grads = tuple(zeros_like(t) if g is None else g for g, t in zip(grads, inputs))
    return grads


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False):
    """Backpropagate from several outputs at once, adding into the leaves' `.grad`."""
    from gradsolve.autograd.engine import run_backward

    tensors = [tensors] if isinstance(tensors, Tensor) else list(tensors)
    if grad_tensors is None:
        grad_tensors = [None] * len(tensors)
    seeds = []
    for t, g in zip(tensors, grad_tensors):
        if g is None:
            if t.numel() != 1:
                raise RuntimeError("grad can be implicitly created only for scalar outputs")
            g = _wrap(t._backend.xp.ones(t._data.shape, dtype=t._data.dtype), t._backend)
        seeds.append(g)
    run_backward(tensors, seeds, retain_graph=create_graph if retain_graph is None else retain_graph,
                 create_graph=create_graph)


def Variable(data, requires_grad=False, volatile=False):
    """Old PyTorch spelling: returns a Tensor (that shares the data when given a tensor)."""
    t = data if isinstance(data, Tensor) else tensor(data)
    if requires_grad and not t.requires_grad:
        if t.grad_fn is not None:
            t = t.detach()
        t.requires_grad_(True)
    return t
