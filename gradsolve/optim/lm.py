"""Levenberg-Marquardt for nonlinear least squares, with an exact autograd Jacobian."""

from __future__ import annotations

import math

import numpy as np

import gradsolve as gs

from .optimizer import Optimizer

__all__ = ["LevenbergMarquardt"]


class LevenbergMarquardt(Optimizer):
    r"""Levenberg-Marquardt: minimize ``F(theta) = sum(r(theta)**2)`` for a residual vector r.

    ``residuals`` is a closure that takes no arguments and returns the 1-D residual
    tensor built from ``params``.  Each :meth:`step` performs one *accepted* iteration
    (it may try several damping values) and returns the loss ``F`` at the new point as
    a Python float.  When a stopping test fires, ``stop_reason`` is set (``"atol"``,
    ``"gtol"``, ``"xtol"``, ``"ftol"``; ``"stalled"`` when no damping gives a
    decrease, ``"nonfinite"`` when the residuals or the Jacobian at the point are
    NaN or infinite) and ``converged`` is True (False for ``"stalled"`` and
    ``"nonfinite"``); later calls return the loss without moving.

    One iteration, with J the Jacobian of r at theta and D = diag(d)::

        d = max over the iterations of J's column norms (MINPACK's scaling; 1 for a
            column that has been zero so far)
        solve  min_h |J h + r|^2 + lam |D h|^2
            by least squares (SVD) on the augmented matrix [J; sqrt(lam) D], [-r; 0]
        theta_new = clip(theta + h, lower, upper);  h = theta_new - theta
        rho = (F(theta) - F(theta_new)) / (F(theta) - |J h + r|^2)    # gain ratio
        rho > 0: accept; lam *= max(1/3, 1 - (2 rho - 1)^3); nu = 2   (Nielsen's rule)
        else:    reject; lam *= nu; nu *= 2; try again

    The damping term makes the augmented matrix full rank even when J is rank
    deficient (e.g. four unknowns tied by three independent equations), so the step
    is always defined; with D from column norms the method is invariant to rescaling
    a parameter.  The linear algebra is on p x p sized problems (p = number of
    parameter entries) and runs in float64 NumPy: the Jacobian is copied to the host
    for it, whatever the backend.

    Bounds: ``lower`` / ``upper`` give one entry per parameter tensor (None, a number,
    or an array of the parameter's shape; None means unbounded).  The start is
    projected into the box; coordinates that sit on a bound while the gradient pushes
    outward are held fixed for the iteration (their column is left out of the solve),
    and the step of the others is clipped into the box (projected step).  The gain
    ratio is computed for the clipped step, so a poor clipped step is rejected like
    any other.

    The Jacobian comes from ``gs.autograd.functional.jacobian`` - exact derivatives of
    the same graph that computes r, not finite differences: it builds J row by row in
    reverse mode (one vector-Jacobian product per residual) when m <= p, and column by
    column with forward-mode products (the double-vjp trick) when m > p, so it costs
    min(m, p) passes.

    Stopping tests, checked after each accepted step (all optional):

    * ``atol``: F <= atol.
    * ``gtol``: max |2 J^T r| <= gtol over the free coordinates (small gradient).
    * ``xtol``: |D h| <= xtol * (|D theta| + xtol) (small scaled step).
    * ``ftol``: F_old - F_new <= ftol * F_old (small relative reduction).

    Attributes after a step: ``jacobian`` (m x p float64 NumPy array at the last
    accepted point, columns in parameter order, each parameter flattened),
    ``residuals`` (float64 NumPy vector), ``loss``, ``lam``, ``n_iter``, ``nfev``,
    ``njev``, ``stop_reason``, ``converged``.

    Example::

        >>> import gradsolve as gs
        >>> x = gs.tensor(-1.2, requires_grad=True); y = gs.tensor(1.0, requires_grad=True)
        >>> lm = LevenbergMarquardt([x, y], residuals=lambda: gs.stack([10 * (y - x**2), 1 - x]))
        >>> while not lm.converged:
        ...     loss = lm.step()
        >>> round(x.item(), 8), round(y.item(), 8)
        (1.0, 1.0)
    """

    def __init__(self, params, residuals, lam: float = 1e-3, xtol: float = 1e-12,
                 gtol: float = 0.0, ftol: float = 1e-15, atol: float = 0.0,
                 lower=None, upper=None, max_tries: int = 60) -> None:
        if residuals is None or not callable(residuals):
            raise TypeError("residuals must be a closure returning the residual vector")
        for name, value in (("lam", lam), ("xtol", xtol), ("gtol", gtol), ("ftol", ftol),
                            ("atol", atol)):
            if not 0.0 <= value:
                raise ValueError(f"Invalid {name} value: {value}")
        if max_tries < 1:
            raise ValueError(f"Invalid max_tries value: {max_tries}")
        defaults = dict(lam=lam, xtol=xtol, gtol=gtol, ftol=ftol, atol=atol, max_tries=max_tries)
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError("LevenbergMarquardt doesn't support parameter groups")
        self._params = self.param_groups[0]["params"]
        self.residual_fn = residuals
        self._sizes = [int(np.prod(p.shape)) for p in self._params]
        self.lower = self._flat_bound(lower, -math.inf)
        self.upper = self._flat_bound(upper, math.inf)
        if np.any(self.lower > self.upper):
            raise ValueError("lower bound above upper bound")
        self.jacobian = None
        self.residuals = None
        self.loss = None
        self.stop_reason = None
        self.nfev = 0
        self.njev = 0

    # ------------------------------------------------------------------ helpers
    def _flat_bound(self, bound, fill):
        if bound is None:
            return np.full(sum(self._sizes), fill)
        if len(bound) != len(self._params):
            raise ValueError("bounds need one entry (None, number or array) per parameter tensor")
        parts = []
        for b, p, n in zip(bound, self._params, self._sizes):
            b = fill if b is None else b
            parts.append(np.broadcast_to(np.asarray(b, dtype=np.float64), p.shape).reshape(n))
        return np.concatenate(parts) if parts else np.zeros(0)

    def _get_x(self) -> np.ndarray:
        # host float64 copy of the parameters: the p-sized linear algebra runs in NumPy
        return np.concatenate([np.asarray(p.detach().numpy(), dtype=np.float64).reshape(-1)
                               for p in self._params])

    def _set_x(self, x: np.ndarray) -> None:
        offset = 0
        for p, n in zip(self._params, self._sizes):
            xp = p._xp
            p._assign_(xp.asarray(x[offset:offset + n].reshape(p.shape), dtype=p._data.dtype))
            offset += n

    def _eval_residuals(self) -> np.ndarray:
        with gs.no_grad():
            r = self.residual_fn()
        self.nfev += 1
        return _residual_array(r)

    def _eval_jacobian(self):
        r_holder = {}

        def fn():
            r = self.residual_fn()
            r_holder["r"] = r
            return r

        blocks = gs.autograd.functional.jacobian(fn, list(self._params))
        self.nfev += 1
        self.njev += 1
        r = _residual_array(r_holder["r"])
        m = r.shape[0]
        J = np.concatenate([np.asarray(b.detach().numpy(), dtype=np.float64).reshape(m, n)
                            for b, n in zip(blocks, self._sizes)], axis=1)
        return r, J

    @property
    def converged(self) -> bool:
        return self.stop_reason is not None and self.stop_reason not in ("stalled", "nonfinite")

    @property
    def lam(self) -> float:
        return self.state[self._params[0]].get("lam", self.param_groups[0]["lam"])

    @property
    def n_iter(self) -> int:
        return self.state[self._params[0]].get("n_iter", 0)

    # ------------------------------------------------------------------ step
    def step(self, closure=None) -> float:
        """One accepted LM iteration; returns the loss sum(r**2) at the new point (a float)."""
        if closure is not None:
            raise TypeError("LevenbergMarquardt takes its residual closure in the constructor")
        with gs.no_grad():
            return self._step()

    def _step(self) -> float:
        group = self.param_groups[0]
        state = self.state[self._params[0]]
        x = self._get_x()
        if not state:
            state["lam"] = float(group["lam"])
            state["nu"] = 2.0
            state["n_iter"] = 0
            state["diag"] = np.zeros(x.shape[0])
            state["stop_reason"] = None
            projected = np.clip(x, self.lower, self.upper)
            if np.any(projected != x):
                x = projected
                self._set_x(x)
        if self.jacobian is None or self.residuals is None:
            self.residuals, self.jacobian = self._eval_jacobian()
        r, J = self.residuals, self.jacobian
        F = float(r @ r)
        self.loss = F
        self.stop_reason = state["stop_reason"]
        if self.stop_reason is not None:
            return F
        if not (math.isfinite(F) and np.all(np.isfinite(J))):
            # sqrt or log at the edge of its domain, say: no linear model to step with
            return self._stop(state, "nonfinite", F)
        if F <= group["atol"]:
            return self._stop(state, "atol", F)

        diag = np.maximum(state["diag"], np.linalg.norm(J, axis=0))
        state["diag"] = diag
        d = np.where(diag > 0, diag, 1.0)

        g = J.T @ r  # half the gradient of F
        free = ~(((x <= self.lower) & (g > 0)) | ((x >= self.upper) & (g < 0)))
        if np.max(np.abs(2 * g[free]), initial=0.0) <= group["gtol"]:
            return self._stop(state, "gtol", F)

        lam, nu = state["lam"], state["nu"]
        Jf, df = J[:, free], d[free]
        accepted = False
        for _ in range(group["max_tries"]):
            # damped least squares on the free coordinates: [J; sqrt(lam) D] h = [-r; 0]
            A = np.concatenate([Jf, np.diag(math.sqrt(lam) * df)], axis=0)
            b = np.concatenate([-r, np.zeros(df.shape[0])])
            h = np.zeros_like(x)
            h[free] = np.linalg.lstsq(A, b, rcond=None)[0]
            x_new = np.clip(x + h, self.lower, self.upper)
            h = x_new - x
            predicted = F - float(np.sum((J @ h + r) ** 2))
            self._set_x(x_new)
            r_new = self._eval_residuals()
            F_new = float(r_new @ r_new)
            actual = F - F_new
            if predicted > 0 and actual > 0 and math.isfinite(F_new):
                rho = actual / predicted
                lam *= max(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
                nu = 2.0
                accepted = True
                break
            self._set_x(x)  # reject: back to theta, more damping
            lam *= nu
            nu *= 2.0
            if lam > 1e300:
                break
        state["lam"], state["nu"] = lam, nu
        if not accepted:
            return self._stop(state, "stalled", F)

        state["n_iter"] += 1
        self.residuals, self.jacobian = self._eval_jacobian()
        r = self.residuals
        F_new = float(r @ r)
        self.loss = F_new
        if F_new <= group["atol"]:
            return self._stop(state, "atol", F_new)
        g = self.jacobian.T @ r
        free = ~(((x_new <= self.lower) & (g > 0)) | ((x_new >= self.upper) & (g < 0)))
        if np.max(np.abs(2 * g[free]), initial=0.0) <= group["gtol"]:
            return self._stop(state, "gtol", F_new)
        if np.linalg.norm(d * h) <= group["xtol"] * (np.linalg.norm(d * x_new) + group["xtol"]):
            return self._stop(state, "xtol", F_new)
        if F - F_new <= group["ftol"] * F:
            return self._stop(state, "ftol", F_new)
        return F_new

    def _stop(self, state, reason: str, F: float) -> float:
        state["stop_reason"] = reason
        self.stop_reason = reason
        self.loss = F
        return F

    def load_state_dict(self, state_dict) -> None:
        super().load_state_dict(state_dict)
        state = self.state[self._params[0]]
        if "diag" in state:  # host float64, whatever the parameters' backend
            state["diag"] = np.array(_host(state["diag"]), dtype=np.float64)
        self.jacobian = None
        self.residuals = None
        self.stop_reason = self.state[self._params[0]].get("stop_reason")


def _host(array):
    get = getattr(array, "get", None)  # CuPy arrays copy to the host with .get()
    return get() if callable(get) else array


def _residual_array(r) -> np.ndarray:
    if not isinstance(r, gs.Tensor):
        raise TypeError("the residual closure must return a Tensor")
    if r.ndim != 1:
        raise ValueError(f"the residual closure must return a 1-D tensor, got shape {tuple(r.shape)}")
    return np.asarray(r.detach().numpy(), dtype=np.float64)
