"""Jacobians and friends built from reverse-mode products.

`jvp` (a Jacobian-vector product) uses the double-vjp trick: with
g(v) = J^T v computed with create_graph, d/dv <g(v), u> = J u. So forward-mode
products need no separate forward-mode engine, at the cost of one extra
backward pass.
"""
from __future__ import annotations

from gradsolve._tensor import Tensor, wrap_array


def _as_list(x):
    return [x] if isinstance(x, Tensor) else list(x)


def vjp(output: Tensor, params, v: Tensor, create_graph=False):
    """J^T v for the Jacobian J of `output` with respect to `params`."""
    from gradsolve.autograd import grad

    return grad([output], _as_list(params), grad_outputs=[v], retain_graph=True, create_graph=create_graph,
                allow_unused=True, materialize_grads=True)


def jvp(output: Tensor, params, tangents, create_graph=False):
    """J u (u given per parameter) by the double-vjp trick; `output` must have been built with grad on."""
    from gradsolve.autograd import grad

    params = _as_list(params)
    tangents = _as_list(tangents)
    xp = output._backend.xp
    dummy = wrap_array(xp.zeros(output._data.shape, dtype=output._data.dtype), output._backend)
    dummy.requires_grad = True
    g = grad([output], params, grad_outputs=[dummy], retain_graph=True, create_graph=True, allow_unused=True,
             materialize_grads=True)
    inner = None
    for gi, ui in zip(g, tangents):
        if gi.requires_grad:
            term = (gi * ui).sum()
            inner = term if inner is None else inner + term
    if inner is None:
        return wrap_array(xp.zeros(output._data.shape, dtype=output._data.dtype), output._backend)
    (ju,) = grad([inner], [dummy], retain_graph=True, create_graph=create_graph, allow_unused=True,
                 materialize_grads=True)
    return ju


def jacobian(fn, params):
    """The Jacobian of fn() (a 1-D residual vector) with respect to each of `params`.

    Returns one tensor per parameter, of shape (m, *param.shape). Reverse mode
    row by row when there are no more residuals than parameter entries;
    forward-mode columns (double-vjp) otherwise, so a fit over a million rows
    with three parameters costs three products, not a million.
    """
    from gradsolve.autograd import grad
    from gradsolve.autograd.grad_mode import enable_grad

    params = _as_list(params)
    with enable_grad():
        out = fn()
    if out.ndim != 1:
        out = out.reshape(-1)
    m = out.shape[0]
    backend = out._backend
    xp = backend.xp
    n_total = sum(p.numel() for p in params)
    if not out.requires_grad:
        return [wrap_array(xp.zeros((m,) + p.shape, dtype=out._data.dtype), backend) for p in params]
    if m <= n_total:
        rows = [[] for _ in params]
        for i in range(m):
            seed = xp.zeros((m,), dtype=out._data.dtype)
            seed[i] = 1.0
            gs_ = grad([out], params, grad_outputs=[wrap_array(seed, backend)], retain_graph=True, allow_unused=True,
                       materialize_grads=True)
            for k, g in enumerate(gs_):
                rows[k].append(g._data)
        return [wrap_array(xp.stack(r, axis=0), backend) if r
                else wrap_array(xp.zeros((0,) + p.shape, dtype=out._data.dtype), backend)
                for r, p in zip(rows, params)]
    dummy = wrap_array(xp.zeros((m,), dtype=out._data.dtype), backend)
    dummy.requires_grad = True
    with enable_grad():
        g = grad([out], params, grad_outputs=[dummy], retain_graph=True, create_graph=True, allow_unused=True,
                 materialize_grads=True)
    result = []
    for k, p in enumerate(params):
        cols = []
        for j in range(p.numel()):
            if not g[k].requires_grad:
                cols.append(xp.zeros((m,), dtype=out._data.dtype))
                continue
            with enable_grad():
                comp = g[k].reshape(-1)[j]
            (col,) = grad([comp], [dummy], retain_graph=True, allow_unused=True, materialize_grads=True)
            cols.append(col._data)
        jac = xp.stack(cols, axis=1) if cols else xp.zeros((m, 0), dtype=out._data.dtype)
        result.append(wrap_array(xp.reshape(jac, (m,) + p.shape), backend))
    return result


def hvp(fn, params, vectors):
    """Hessian-vector product of the scalar fn() with respect to `params`."""
    from gradsolve.autograd import grad
    from gradsolve.autograd.grad_mode import enable_grad

    params = _as_list(params)
    vectors = _as_list(vectors)
    with enable_grad():
        loss = fn()
        gs_ = grad([loss], params, create_graph=True, allow_unused=True, materialize_grads=True)
        inner = None
        for g, v in zip(gs_, vectors):
            if g.requires_grad:
                term = (g * v).sum()
                inner = term if inner is None else inner + term
    if inner is None:
        return tuple(wrap_array(p._backend.xp.zeros_like(p._data), p._backend) for p in params)
    return grad([inner], params, allow_unused=True, materialize_grads=True)


def hessian(fn, param: Tensor):
    """The dense Hessian of the scalar fn() with respect to one 1-D parameter."""
    from gradsolve.autograd import grad
    from gradsolve.autograd.grad_mode import enable_grad

    n = param.numel()
    with enable_grad():
        loss = fn()
        (g,) = grad([loss], [param], create_graph=True)
    xp = param._backend.xp
    rows = []
    for i in range(n):
        (row,) = grad([g.reshape(-1)[i]], [param], retain_graph=True, allow_unused=True, materialize_grads=True)
        rows.append(xp.reshape(row._data, (-1,)))
    return wrap_array(xp.stack(rows, axis=0), param._backend)
