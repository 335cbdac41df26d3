"""Compare analytic gradients with central finite differences, in float64."""
from __future__ import annotations

import numpy as np

from gradsolve._tensor import Tensor, wrap_array


class GradcheckError(AssertionError):
    """Analytic and numerical gradients disagree; the message names the worst element."""


def _as_outputs(out):
    return (out,) if isinstance(out, Tensor) else tuple(out)


def _numerical_jacobian(fn, inputs, index, eps):
    """Columns d(outputs)/d(inputs[index]) by central differences."""
    x = inputs[index]
    flat = x._data.reshape(-1) if x._backend.is_numpy else None
    host = x.numpy().astype(np.float64).reshape(-1)
    columns = []
    for k in range(host.size):
        values = []
        for delta in (eps, -eps):
            perturbed = host.copy()
            perturbed[k] += delta
            new = x._backend.from_numpy(perturbed.reshape(x.shape).astype(x.numpy().dtype))
            saved = x._data
            x._data = new  # evaluate at the shifted point without touching the version counter
            try:
                outs = _as_outputs(fn(*inputs))
            finally:
                x._data = saved
            values.append(np.concatenate([o.numpy().astype(np.float64).reshape(-1) for o in outs]))
        columns.append((values[0] - values[1]) / (2 * eps))
    del flat
    return np.stack(columns, axis=1) if columns else np.zeros((0, 0))


def _analytic_jacobian(fn, inputs, index):
    from gradsolve.autograd import grad

    outs = _as_outputs(fn(*inputs))
    flat_sizes = [o.numel() for o in outs]
    total = sum(flat_sizes)
    x = inputs[index]
    rows = []
    for oi, o in enumerate(outs):
        for k in range(o.numel()):
            seed = np.zeros(o.numel())
            seed[k] = 1.0
            seed_t = wrap_array(o._backend.from_numpy(seed.reshape(o.shape).astype(o.numpy().dtype)), o._backend)
            if not o.requires_grad:
                rows.append(np.zeros(x.numel()))
                continue
            (g,) = grad([o], [x], grad_outputs=[seed_t], retain_graph=True, allow_unused=True)
            rows.append(np.zeros(x.numel()) if g is None else g.numpy().astype(np.float64).reshape(-1))
    del total
    return np.stack(rows, axis=0) if rows else np.zeros((0, x.numel()))


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True) -> bool:
    """True when every analytic gradient matches central differences.

    >>> import gradsolve as gs
    >>> x = gs.tensor([0.5, 1.5], requires_grad=True)
    >>> gs.autograd.gradcheck(lambda t: (t.sin() * t).sum(), (x,))
    True
    """
    inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    for i, x in enumerate(inputs):
        if not (isinstance(x, Tensor) and x.requires_grad):
            continue
        if x.dtype.name != "float64":
            raise GradcheckError(f"gradcheck needs float64 inputs (input {i} is {x.dtype.name}): float32 differences are too coarse")
        numeric = _numerical_jacobian(fn, inputs, i, eps)
        analytic = _analytic_jacobian(fn, inputs, i)
        if numeric.shape != analytic.shape:
            raise GradcheckError(f"input {i}: Jacobian shapes differ (analytic {analytic.shape}, numerical {numeric.shape})")
        err = np.abs(analytic - numeric)
        bound = atol + rtol * np.abs(numeric)
        bad = err > bound
        if np.any(bad) or np.any(np.isnan(analytic) != np.isnan(numeric)):
            ratio = np.where(bound > 0, err / bound, np.inf)
            ratio = np.where(np.isnan(ratio), np.inf, ratio)
            worst = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
            msg = (f"gradcheck failed for input {i}: output element {worst[0]}, input element {worst[1]}: "
                   f"analytic {float(analytic[worst]):.10g}, numerical {float(numeric[worst]):.10g} (atol={atol}, rtol={rtol})")
            if raise_exception:
                raise GradcheckError(msg)
            return False
    return True


def gradgradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3) -> bool:
    """gradcheck applied to the gradient of sum(fn(inputs) * fixed random weights)."""
    from gradsolve.autograd import grad

    inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    diff = [x for x in inputs if isinstance(x, Tensor) and x.requires_grad]
    rng = np.random.default_rng(0)
    outs = _as_outputs(fn(*inputs))
    weights = [wrap_array(o._backend.from_numpy(rng.standard_normal(o.shape)), o._backend) for o in outs]

    def first_grad(*xs):
        outs_ = _as_outputs(fn(*xs))
        total = sum((o * w).sum() for o, w in zip(outs_, weights))
        return grad([total], [x for x in xs if isinstance(x, Tensor) and x.requires_grad], create_graph=True,
                    allow_unused=True, materialize_grads=True)

    del diff
    return gradcheck(first_grad, inputs, eps=eps, atol=atol, rtol=rtol)
