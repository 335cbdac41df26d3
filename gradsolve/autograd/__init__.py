"""Reverse-mode automatic differentiation: the graph, backward, and tools around it."""
from __future__ import annotations

# The Tensor module first: it ends by importing gradsolve.ops, whose primitives subclass
# autograd.function.Op, so function.py must not be the module that starts the chain (it
# would be half-initialised when ops asks it for Op).
import gradsolve._tensor  # noqa: F401,E402 - import order, see above
from gradsolve.autograd.grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled  # noqa: F401
from gradsolve.autograd.function import Function, InplaceFunction, once_differentiable  # noqa: F401
from gradsolve.autograd.gradcheck import GradcheckError, gradcheck, gradgradcheck  # noqa: F401
from gradsolve.autograd import functional  # noqa: F401
from gradsolve._creation import tensor
from gradsolve._tensor import Tensor


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False, allow_unused=False,
         materialize_grads=False):
    """Gradients of `outputs` with respect to `inputs`, returned (not added into `.grad`).

    >>> import gradsolve as gs
    >>> x = gs.tensor(3.0, requires_grad=True)
    >>> gs.autograd.grad(x ** 2, x)
    (tensor(6.),)
    """
    from gradsolve.autograd.engine import run_backward, seed_gradient

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
        roots.append(out)
        seeds.append(seed_gradient(out, g, hint="grad_outputs"))
    if retain_graph is None:
        retain_graph = create_graph
    grads = run_backward(roots, seeds, retain_graph=retain_graph, create_graph=create_graph, inputs=inputs,
                         allow_unused=allow_unused or materialize_grads)
    if materialize_grads:
        from gradsolve._creation import zeros_like

        grads = tuple(zeros_like(t) if g is None else g for g, t in zip(grads, inputs))
    return grads


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False, inputs=None):
    """Backpropagate from several outputs at once, adding into the leaves' `.grad` (or only `inputs`')."""
    from gradsolve.autograd.engine import accumulate_into, run_backward, seed_gradient

    tensors = [tensors] if isinstance(tensors, Tensor) else list(tensors)
    if grad_tensors is None:
        grad_tensors = [None] * len(tensors)
    elif isinstance(grad_tensors, Tensor):
        grad_tensors = [grad_tensors]
    for t in tensors:
        if not t.requires_grad:
            raise RuntimeError("element 0 of tensors does not require grad and does not have a grad_fn")
    seeds = [seed_gradient(t, g, hint="grad_tensors") for t, g in zip(tensors, grad_tensors)]
    if retain_graph is None:
        retain_graph = create_graph
    if inputs is None:
        run_backward(tensors, seeds, retain_graph=retain_graph, create_graph=create_graph)
    else:
        accumulate_into(inputs, tensors, seeds, retain_graph=retain_graph, create_graph=create_graph)


def Variable(data, requires_grad=False, volatile=False):
    """Old PyTorch spelling. As there, a new tensor sharing `data`'s storage (and version
    counter), detached from any graph, with `requires_grad` as given."""
    t = data.detach() if isinstance(data, Tensor) else tensor(data)
    return t.requires_grad_(requires_grad)
