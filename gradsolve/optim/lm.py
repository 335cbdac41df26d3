"""Levenberg-Marquardt for nonlinear least squares, with an exact autograd Jacobian."""

from __future__ import annotations

import math

import numpy as np

import gradsolve as gs

from .optimizer import Optimizer

__all__ = ["LevenbergMarquardt"]

_EPS = float(np.finfo(np.float64).eps)
_TINY = float(np.finfo(np.float64).tiny)


class LevenbergMarquardt(Optimizer):
    r"""Levenberg-Marquardt: minimize ``F(theta) = sum(r(theta)**2)`` for a residual vector r.

    ``residuals`` is a closure that takes no arguments and returns the 1-D residual
    tensor built from ``params``.  Each :meth:`step` performs one *accepted* iteration
    (it may try several trust-region radii) and returns the loss ``F`` at the new point
    as a Python float.  When a stopping test fires, ``stop_reason`` is set (``"atol"``,
    ``"gtol"``, ``"xtol"``, ``"ftol"``; ``"stalled"`` when ``max_tries`` trials in a
    row give no decrease, ``"nonfinite"`` when the residuals or the Jacobian at the
    point are NaN or infinite) and ``converged`` is True (False for ``"stalled"`` and
    ``"nonfinite"``); later calls return the loss without moving.

    The algorithm is MINPACK's ``lmder`` (Moré, "The Levenberg-Marquardt algorithm:
    implementation and theory", 1978): a trust region in the scaled norm |D h| whose
    radius ``delta`` decides the step, and a Levenberg parameter ``lam`` found for that
    radius (MINPACK's ``lmpar``).  One iteration, with J = QR the Jacobian of r at
    theta and ``F = |r|^2``::

        first iteration: d = column norms of J (1 for a zero column);
                         delta = factor * |D theta|  (factor if that is 0)
        d = max(d, column norms of J)                          # D = diag(d)
        repeat:
            lam, h = the step for radius delta:
                h(lam) minimizes |J h + r|^2 + lam |D h|^2 (a QR of [R; sqrt(lam) D]);
                lam = 0 if the Gauss-Newton step has |D h| <= 1.1 delta, else Newton's
                iteration on lam (safeguarded within [lam_low, lam_up], from the
                previous lam) until | |D h| - delta | <= 0.1 delta (at most 10 times)
            first iteration: delta = min(delta, |D h|)
            actual    = 1 - F(theta + h) / F                   (-1 if F grew 100-fold)
            predicted = (|J h|^2 + 2 lam |D h|^2) / F
            rho = actual / predicted
            rho <= 0.25:  delta = t * min(delta, 10 |D h|);  lam = lam / t
                          (t = 0.5, or the minimizer of the quadratic along h when the
                          loss grew, kept within [0.1, 0.5])
            rho >= 0.75 or lam == 0:  delta = 2 |D h|;  lam = lam / 2
            rho >= 1e-4: accept theta + h
            stop on ftol / xtol (below), else until accepted

    ``factor`` sets the first radius.  It defaults to 10, where MINPACK recommends 100 and
    accepts 0.1 to 100: a first step that long can throw a parameter onto a plateau of the
    model it never comes back from (NIST's BoxBOD from its first start; see
    docs/optimizers.md).

    Rank-deficient Jacobians (four unknowns tied by three independent equations)
    are fine: the Gauss-Newton step is the minimum-norm one in the scaled variables
    D h, and for lam > 0 the damped matrix has full rank.  With D from column norms
    the method is invariant to rescaling a parameter.  The linear algebra runs in
    float64 NumPy on p x p matrices after one QR of the m x p Jacobian per iteration
    (p = number of parameter entries); the Jacobian is copied to the host for it,
    whatever the backend.

    Bounds: ``lower`` / ``upper`` give one entry per parameter tensor (None, a number,
    or an array of the parameter's shape; None means unbounded).  The point is
    projected into the box (the start, and any point the parameters were moved to
    between steps); coordinates that sit on a bound while the gradient pushes outward
    are held fixed for the iteration (their column is left out of the solve), and the
    step of the others is clipped into the box (projected step).  The predicted
    reduction ``-(2 r.J h + |J h|^2) / F`` is then computed for the clipped step, so a
    poor clipped step is rejected like any other.

    The Jacobian comes from ``gs.autograd.functional.jacobian`` - exact derivatives of
    the same graph that computes r, not finite differences: it builds J row by row in
    reverse mode (one vector-Jacobian product per residual) when m <= p, and column by
    column with forward-mode products (the double-vjp trick) when m > p, so it costs
    min(m, p) passes.  Residuals and Jacobian are cached between steps and evaluated
    again when the parameters no longer hold the point they were taken at (for
    example after ``x.data = ...``).

    ``row_weights`` (one w_i per residual, default none) minimizes sum (w_i r_i)^2
    instead: the same roots, and with w_i = 1 / (size of equation i) a path that
    does not change when an equation is multiplied by a constant (gradsolve.solve
    weights equations so); ``residuals``, ``jacobian`` and ``loss`` are then the weighted ones.

    Stopping tests (all optional; set a tolerance to 0 to switch its test off, though
    MINPACK's machine-precision versions of ftol, xtol and the gradient test stay on):

    * ``atol``: F <= atol.
    * ``gtol``: max |2 J^T r| <= gtol over the free coordinates (small gradient), or
      every column of J orthogonal to r to machine precision.
    * ``xtol``: delta <= xtol * |D theta| (the trust region has shrunk to the last
      digits of theta).
    * ``ftol``: actual and predicted relative reductions of F both at most ftol
      (and rho <= 2).

    Attributes after a step: ``jacobian`` (m x p float64 NumPy array at the last
    accepted point, columns in parameter order, each parameter flattened),
    ``residuals`` (float64 NumPy vector), ``loss``, ``lam``, ``delta``, ``n_iter``,
    ``nfev``, ``njev``, ``stop_reason``, ``converged``.

    Example::

        >>> import gradsolve as gs
        >>> x = gs.tensor(-1.2, requires_grad=True); y = gs.tensor(1.0, requires_grad=True)
        >>> lm = LevenbergMarquardt([x, y], residuals=lambda: gs.stack([10 * (y - x**2), 1 - x]))
        >>> while not lm.converged:
        ...     loss = lm.step()
        >>> round(x.item(), 8), round(y.item(), 8)
        (1.0, 1.0)
    """

    def __init__(self, params, residuals, factor: float = 10.0, xtol: float = 1e-12,
                 gtol: float = 0.0, ftol: float = 1e-15, atol: float = 0.0,
                 lower=None, upper=None, max_tries: int = 60, row_weights=None) -> None:
        if residuals is None or not callable(residuals):
            raise TypeError("residuals must be a closure returning the residual vector")
        for name, value in (("xtol", xtol), ("gtol", gtol), ("ftol", ftol), ("atol", atol)):
            if not 0.0 <= value:
                raise ValueError(f"Invalid {name} value: {value}")
        if not 0.0 < factor < math.inf:
            raise ValueError(f"Invalid factor value: {factor}")
        if max_tries < 1:
            raise ValueError(f"Invalid max_tries value: {max_tries}")
        defaults = dict(factor=factor, xtol=xtol, gtol=gtol, ftol=ftol, atol=atol, max_tries=max_tries)
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
        # w_i: minimize sum (w_i r_i)^2, the same roots as sum r_i^2 (residuals, jacobian and loss are weighted)
        self.row_weights = None if row_weights is None else np.asarray(row_weights, dtype=np.float64).reshape(-1)
        self.jacobian = None
        self.residuals = None
        self._cached_at = None  # the point `residuals` and `jacobian` were evaluated at
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

    def _evaluate_at(self, x: np.ndarray) -> None:
        r, J = self._eval_jacobian()
        if self.row_weights is not None:
            r, J = r * self.row_weights, J * self.row_weights[:, None]
        self.residuals, self.jacobian = r, J
        self._cached_at = x.copy()

    def _trial_residuals(self) -> np.ndarray:
        r = self._eval_residuals()
        return r * self.row_weights if self.row_weights is not None else r

    @property
    def converged(self) -> bool:
        return self.stop_reason is not None and self.stop_reason not in ("stalled", "nonfinite")

    @property
    def lam(self) -> float:
        """The Levenberg parameter of the last step (0 for a Gauss-Newton step)."""
        return self.state[self._params[0]].get("lam", 0.0)

    @property
    def delta(self) -> float | None:
        """The trust-region radius in the scaled norm |D h| (None before the first step)."""
        return self.state[self._params[0]].get("delta")

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

    def _gradient_test(self, group, x, r, J) -> bool:
        """gtol at x: max |2 J^T r| over the free coordinates, or J's columns all orthogonal to r."""
        g = J.T @ r  # half the gradient of F
        free = self._free(x, g)
        if np.max(np.abs(2 * g[free]), initial=0.0) <= group["gtol"]:
            return True
        fnorm = math.sqrt(float(r @ r))
        norms = np.linalg.norm(J, axis=0)
        cosines = np.abs(g[free]) / np.where(norms[free] > 0, norms[free] * fnorm, math.inf)
        return fnorm > 0 and float(np.max(cosines, initial=0.0)) <= _EPS

    def _free(self, x, g) -> np.ndarray:
        """Coordinates not held by a bound (descent, -g, would leave the box there)."""
        return ~(((x <= self.lower) & (g > 0)) | ((x >= self.upper) & (g < 0)))

    def _step(self) -> float:
        group = self.param_groups[0]
        state = self.state[self._params[0]]
        x = self._get_x()
        moved = self._cached_at is None or not np.array_equal(x, self._cached_at)
        if moved:
            projected = np.clip(x, self.lower, self.upper)
            if np.any(projected != x):
                x = projected
                self._set_x(x)
        if not state:
            state["lam"] = 0.0
            state["delta"] = None
            state["xnorm"] = None
            state["n_iter"] = 0
            state["diag"] = None
            state["stop_reason"] = None
        self.stop_reason = state["stop_reason"]
        if self.stop_reason is not None and not moved:
            return self.loss if self.loss is not None else float(self.residuals @ self.residuals)
        if moved or self.jacobian is None or self.residuals is None:
            self._evaluate_at(x)
            if state["diag"] is not None and self.stop_reason is None:
                state["xnorm"] = float(np.linalg.norm(state["diag"] * x))
        r, J = self.residuals, self.jacobian
        F = float(r @ r)
        self.loss = F
        if self.stop_reason is not None:
            return F
        if not (math.isfinite(F) and np.all(np.isfinite(J))):
            # sqrt or log at the edge of its domain, say: no linear model to step with
            return self._stop(state, "nonfinite", F)
        if F <= group["atol"]:
            return self._stop(state, "atol", F)
        if self._gradient_test(group, x, r, J):
            return self._stop(state, "gtol", F)

        norms = np.linalg.norm(J, axis=0)
        first = state["diag"] is None
        if first:
            diag = np.where(norms > 0, norms, 1.0)
            state["xnorm"] = xnorm = float(np.linalg.norm(diag * x))
            state["delta"] = group["factor"] * xnorm if xnorm > 0 else group["factor"]
        else:
            diag = np.maximum(state["diag"], norms)
        state["diag"] = diag
        delta, lam, xnorm = state["delta"], state["lam"], state["xnorm"]

        g = J.T @ r
        free = self._free(x, g)
        Jf, df = J[:, free], diag[free]
        k = int(np.count_nonzero(free))
        if Jf.shape[0] < k:  # fewer residuals than unknowns: QR of J padded with zero rows
            Jf = np.concatenate([Jf, np.zeros((k - Jf.shape[0], k))], axis=0)
            rf = np.concatenate([r, np.zeros(k - r.shape[0])])
        else:
            rf = r
        Q, R = np.linalg.qr(Jf)
        qtr = Q.T @ rf

        solver = _TrustRegionStep(R, qtr, df)
        fnorm = math.sqrt(F)
        accepted = False
        reason = None
        for _ in range(group["max_tries"]):
            lam, hf = solver.step(delta, lam)
            h = np.zeros_like(x)
            h[free] = hf
            x_new = np.clip(x + h, self.lower, self.upper)
            clipped = bool(np.any(x_new != x + h))
            if clipped:
                h = x_new - x  # the step actually taken (otherwise lmpar's own, as MINPACK measures it)
            pnorm = float(np.linalg.norm(diag * h))
            if first:
                delta = min(delta, pnorm)
            self._set_x(x_new)
            r_new = self._trial_residuals()
            F_new = float(r_new @ r_new)
            fnorm_new = math.sqrt(F_new) if math.isfinite(F_new) else math.inf
            actual = 1.0 - (fnorm_new / fnorm) ** 2 if 0.1 * fnorm_new < fnorm else -1.0
            Jh = J @ h
            if clipped:  # the reduction the linear model predicts for this (projected) step
                slope = float(g @ h) / F
                predicted = -(2.0 * slope + float(Jh @ Jh) / F)
            else:
                model = float(Jh @ Jh) / F
                damping = lam * pnorm * pnorm / F
                predicted = model + 2.0 * damping
                slope = -(model + damping)
            rho = actual / predicted if predicted != 0 else 0.0
            if rho <= 0.25:
                if actual >= 0:
                    t = 0.5
                else:  # minimizer of the quadratic through F, the slope and F_new, along h
                    t = 0.5 * slope / (slope + 0.5 * actual)
                if 0.1 * fnorm_new >= fnorm or not t >= 0.1:
                    t = 0.1
                delta = t * min(delta, pnorm / 0.1)
                lam = lam / t
            elif lam == 0 or rho >= 0.75:
                delta = pnorm / 0.5
                lam = 0.5 * lam
            if rho >= 1e-4:
                accepted = True
                xnorm = float(np.linalg.norm(diag * x_new))
            else:
                self._set_x(x)  # rejected: back to theta, with a smaller trust region
            small_f = abs(actual) <= group["ftol"] and predicted <= group["ftol"] and 0.5 * rho <= 1
            if small_f or (abs(actual) <= _EPS and predicted <= _EPS and 0.5 * rho <= 1):
                reason = "ftol"
            elif delta <= group["xtol"] * xnorm or delta <= _EPS * xnorm:
                reason = "xtol"
            if accepted or reason is not None:
                break
        state["lam"], state["delta"], state["xnorm"] = lam, delta, xnorm
        if not accepted:
            return self._stop(state, reason or "stalled", F)

        state["n_iter"] += 1
        self._evaluate_at(x_new)
        r, J = self.residuals, self.jacobian
        F_new = float(r @ r)
        self.loss = F_new
        if F_new <= group["atol"]:
            return self._stop(state, "atol", F_new)
        if reason is not None:
            return self._stop(state, reason, F_new)
        if not (math.isfinite(F_new) and np.all(np.isfinite(J))):
            return self._stop(state, "nonfinite", F_new)
        if self._gradient_test(group, x_new, r, J):
            return self._stop(state, "gtol", F_new)
        return F_new

    def _stop(self, state, reason: str, F: float) -> float:
        state["stop_reason"] = reason
        self.stop_reason = reason
        self.loss = F
        return F

    def load_state_dict(self, state_dict) -> None:
        super().load_state_dict(state_dict)
        state = self.state[self._params[0]]
        if state.get("diag") is not None:  # host float64, whatever the parameters' backend
            state["diag"] = np.array(_host(state["diag"]), dtype=np.float64)
        self.jacobian = None
        self.residuals = None
        self._cached_at = None
        self.stop_reason = self.state[self._params[0]].get("stop_reason")


class _TrustRegionStep:
    """MINPACK's lmpar on the k x k factor R of J = QR (with qtr = Q^T r and the scaling d).

    ``step(delta, lam)`` returns (lam, h): h minimizes |R h + qtr|^2 + lam |D h|^2 (that
    is |J h + r|^2 + lam |D h|^2), with lam = 0 when the Gauss-Newton step fits the trust
    region (|D h| <= 1.1 delta), else lam > 0 such that | |D h| - delta | <= 0.1 delta,
    found by Newton's method on phi(lam) = |D h(lam)| - delta from the previous lam,
    safeguarded by the bounds lam_low (from phi's slope at 0; 0 when J is rank
    deficient) and lam_up (|D^-1 J^T r| / delta); at most 10 Newton iterations.  What
    does not depend on delta (the Gauss-Newton step, the bounds' numerators) is
    computed once, here, for all the trials of an iteration.
    """

    def __init__(self, R, qtr, d):
        self.R, self.qtr, self.d = R, qtr, d
        k = d.shape[0]
        self.k = k
        if k == 0:
            return
        # Gauss-Newton step, the minimum-norm one in the scaled variables z = D h
        U, s, Vt = np.linalg.svd(R / d)
        self.rank = rank = int(np.count_nonzero(s > s[0] * k * _EPS)) if s[0] > 0 else 0
        z = -(Vt[:rank].T @ ((U[:, :rank].T @ qtr) / s[:rank]))
        self.gauss_newton = z / d
        self.gn_norm = float(np.linalg.norm(z))
        # phi's slope at lam = 0 is -|R^-T D (D h) / |D h||^2 |D h| (full rank only)
        self.slope_norm2 = None
        if rank == k and self.gn_norm > 0:
            y = _solve_lower(R.T, d * (z / self.gn_norm))
            self.slope_norm2 = float(y @ y)
        self.gnorm = float(np.linalg.norm((R.T @ qtr) / d))  # |D^-1 J^T r|

    def step(self, delta, lam):
        if self.k == 0:
            return 0.0, np.zeros(0)
        R, qtr, d, k = self.R, self.qtr, self.d, self.k
        dxnorm = self.gn_norm
        fp = dxnorm - delta
        if fp <= 0.1 * delta:
            return 0.0, self.gauss_newton
        low = fp / delta / self.slope_norm2 if self.slope_norm2 else 0.0
        up = self.gnorm / delta
        if up == 0:
            up = _TINY / min(delta, 0.1)
        lam = min(max(lam, low), up)
        if lam == 0:
            lam = self.gnorm / dxnorm
        rhs = np.concatenate([qtr, np.zeros(k)])[:, None]
        for iteration in range(1, 11):
            if lam == 0:
                lam = max(_TINY, 0.001 * up)
            # one QR of [R, qtr; sqrt(lam) D, 0]: S h = -(the transformed right-hand side)
            top = np.concatenate([R, np.diag(math.sqrt(lam) * d)], axis=0)
            T = np.linalg.qr(np.concatenate([top, rhs], axis=1), mode="r")
            S = T[:k, :k]
            h = -_solve_upper(S, T[:k, k])
            dh = d * h
            dxnorm = float(np.linalg.norm(dh))
            previous, fp = fp, dxnorm - delta
            if abs(fp) <= 0.1 * delta or (low == 0 and fp <= previous < 0) or iteration == 10:
                break
            y = _solve_lower(S.T, d * (dh / dxnorm))
            correction = fp / delta / float(y @ y)
            if fp > 0:
                low = max(low, lam)
            elif fp < 0:
                up = min(up, lam)
            lam = max(low, lam + correction)
        return lam, h


def _solve_upper(U, b):
    """U x = b for an upper-triangular U (back substitution)."""
    x = np.array(b, dtype=np.float64)
    for i in range(x.shape[0] - 1, -1, -1):
        x[i] = (x[i] - U[i, i + 1:] @ x[i + 1:]) / U[i, i]
    return x


def _solve_lower(L, b):
    """L x = b for a lower-triangular L (forward substitution)."""
    x = np.array(b, dtype=np.float64)
    for i in range(x.shape[0]):
        x[i] = (x[i] - L[i, :i] @ x[:i]) / L[i, i]
    return x


def _host(array):
    get = getattr(array, "get", None)  # CuPy arrays copy to the host with .get()
    return get() if callable(get) else array


def _residual_array(r) -> np.ndarray:
    if not isinstance(r, gs.Tensor):
        raise TypeError("the residual closure must return a Tensor")
    if r.ndim != 1:
        raise ValueError(f"the residual closure must return a 1-D tensor, got shape {tuple(r.shape)}")
    return np.asarray(r.detach().numpy(), dtype=np.float64)
