"""L-BFGS with an optional strong-Wolfe line search (PyTorch's port of minFunc)."""

from __future__ import annotations

import math

import gradsolve as gs

from .optimizer import Optimizer

__all__ = ["LBFGS"]


def _dot(xp, a, b) -> float:
    return float(xp.sum(a * b))


def _abs_max(xp, a) -> float:
    return float(xp.max(xp.abs(a)))


def _cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None):
    """Minimizer of the cubic through (x1, f1, g1) and (x2, f2, g2), clipped to ``bounds``.

    minFunc's polyinterp for two points; falls back to the bisection when the cubic
    has no real minimizer.
    """
    if bounds is not None:
        xmin_bound, xmax_bound = bounds
    else:
        xmin_bound, xmax_bound = (x1, x2) if x1 <= x2 else (x2, x1)
    if x1 == x2 or not all(map(math.isfinite, (f1, g1, f2, g2))):
        # an end outside the loss's domain (see _strong_wolfe) has no cubic through it: bisect
        return (xmin_bound + xmax_bound) / 2.0
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1 * d1 - g1 * g2
    if d2_square >= 0:
        d2 = math.sqrt(d2_square)
        # A zero denominator (piecewise-linear losses such as abs: g1 = g2, no curvature) has no
        # cubic minimizer; PyTorch's tensors turn it into inf/nan, we take the bisection instead.
        if x1 <= x2:
            denominator = g2 - g1 + 2 * d2
            if denominator != 0:
                min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / denominator)
                return min(max(min_pos, xmin_bound), xmax_bound)
        else:
            denominator = g1 - g2 + 2 * d2
            if denominator != 0:
                min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / denominator)
                return min(max(min_pos, xmin_bound), xmax_bound)
    return (xmin_bound + xmax_bound) / 2.0


def _strong_wolfe(obj_func, xp, x, t, d, f, g, gtd, c1=1e-4, c2=0.9,
                  tolerance_change=1e-9, max_ls=25):
    """Line search along ``d`` for a step ``t`` meeting the strong Wolfe conditions.

    Phase 1 brackets an acceptable step (growing t by cubic extrapolation), phase 2
    zooms into the bracket by cubic interpolation, guarding against steps too close
    to the bracket's ends.  Returns (f_new, g_new, t, number of evaluations).
    """
    d_norm = _abs_max(xp, d)
    user_func = obj_func

    def obj_func(x, t, d):
        # A trial step outside the loss's domain (log or sqrt of a negative number) gives NaN; PyTorch's
        # search then compares NaNs and fails. Here it counts as an infinitely high loss: too long a step,
        # so the bracket shrinks back towards t = 0 by bisection.
        f_value, g_value = user_func(x, t, d)
        return (f_value, g_value) if math.isfinite(f_value) else (math.inf, g_value)

    f_new, g_new = obj_func(x, t, d)
    ls_func_evals = 1
    gtd_new = _dot(xp, g_new, d)

    t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
    done = False
    ls_iter = 0
    while ls_iter < max_ls:
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new], [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new], [gtd_prev, gtd_new]
            break
        # extrapolate
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        tmp = t
        t = _cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new,
                               bounds=(min_step, max_step))
        t_prev, f_prev, g_prev, gtd_prev = tmp, f_new, g_new, gtd_new
        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = _dot(xp, g_new, d)
        ls_iter += 1

    if ls_iter == max_ls:  # reached the maximum number of evaluations
        bracket, bracket_f, bracket_g = [0, t], [f, f_new], [g, g_new]

    # zoom: shrink the bracket until a point satisfies the conditions
    insuf_progress = False
    low_pos, high_pos = (0, 1) if len(bracket) == 1 or bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = _cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0],
                               bracket[1], bracket_f[1], bracket_gtd[1])
        # keep t away from the bracket's ends (minFunc's safeguard)
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insuf_progress or t >= max(bracket) or t <= min(bracket):
                if abs(t - max(bracket)) < abs(t - min(bracket)):
                    t = max(bracket) - eps
                else:
                    t = min(bracket) + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False

        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = _dot(xp, g_new, d)
        ls_iter += 1

        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:
            bracket[high_pos], bracket_f[high_pos] = t, f_new
            bracket_g[high_pos], bracket_gtd[high_pos] = g_new, gtd_new
            low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:
                bracket[high_pos], bracket_f[high_pos] = bracket[low_pos], bracket_f[low_pos]
                bracket_g[high_pos], bracket_gtd[high_pos] = bracket_g[low_pos], bracket_gtd[low_pos]
            bracket[low_pos], bracket_f[low_pos] = t, f_new
            bracket_g[low_pos], bracket_gtd[low_pos] = g_new, gtd_new

    t = bracket[low_pos]
    return bracket_f[low_pos], bracket_g[low_pos], t, ls_func_evals


class LBFGS(Optimizer):
    r"""Limited-memory BFGS, PyTorch's algorithm (a port of Mark Schmidt's minFunc).

    All parameters are flattened into one vector ``x`` with gradient ``g``.  One call to
    ``step(closure)`` runs up to ``max_iter`` iterations (and ``max_eval`` closure
    evaluations)::

        d = -H g         (two-loop recursion over the last history_size pairs (s, y),
                          initial H = (s.y)/(y.y); pairs with s.y <= 1e-10 are skipped;
                          d = -g on the very first iteration)
        t = min(1, 1/|g|_1) * lr on the very first iteration, lr afterwards
        stop if g.d > -tolerance_change
        t = strong-Wolfe line search along d from t   if line_search_fn == "strong_wolfe"
        x = x + t d
        stop if max|g| <= tolerance_grad, max|t d| <= tolerance_change,
                |f - f_prev| < tolerance_change, or max_iter / max_eval is reached

    The history and the last direction live in ``state`` (of the first parameter) and
    carry over between calls.  The closure is required; it must zero the gradients,
    compute the loss, call ``backward`` and return the loss.

    Args:
        params: tensors (one parameter group only).
        lr: step length (default 1).
        max_iter: iterations per ``step`` (default 20).
        max_eval: closure evaluations per ``step`` (default ``max_iter * 5 // 4``).
        tolerance_grad: first-order optimality tolerance (default 1e-7).
        tolerance_change: tolerance on changes of the loss and the parameters (default 1e-9).
        history_size: number of (s, y) pairs kept (default 100).
        line_search_fn: ``None`` (fixed step ``lr``) or ``"strong_wolfe"``.

    Example::

        >>> import gradsolve as gs
        >>> w = gs.tensor([0.0, 0.0], requires_grad=True)
        >>> opt = LBFGS([w], line_search_fn="strong_wolfe")
        >>> def closure():
        ...     opt.zero_grad(); loss = ((w - gs.tensor([1.0, 2.0])) ** 2).sum(); loss.backward()
        ...     return loss
        >>> _ = opt.step(closure); [round(v, 6) for v in w.tolist()]
        [1.0, 2.0]
    """

    def __init__(self, params, lr: float = 1, max_iter: int = 20, max_eval: int | None = None,
                 tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9,
                 history_size: int = 100, line_search_fn: str | None = None) -> None:
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        if line_search_fn not in (None, "strong_wolfe"):
            raise ValueError(f"only 'strong_wolfe' is supported, got line_search_fn={line_search_fn!r}")
        defaults = dict(lr=lr, max_iter=max_iter, max_eval=max_eval, tolerance_grad=tolerance_grad,
                        tolerance_change=tolerance_change, history_size=history_size,
                        line_search_fn=line_search_fn)
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")
        self._params = self.param_groups[0]["params"]
        self._xp = self._params[0]._xp

    def add_param_group(self, param_group) -> None:
        if self.param_groups:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")
        super().add_param_group(param_group)

    # --------------------------------------------------------------- flat views
    def _gather_flat_grad(self):
        xp = self._xp
        views = []
        for p in self._params:
            if p.grad is None:
                views.append(xp.zeros(_numel(p), dtype=p._data.dtype))
            else:
                views.append(xp.reshape(p.grad._data, (-1,)))
        return xp.concat(views)

    def _add_grad(self, step_size, update) -> None:
        xp = self._xp
        offset = 0
        for p in self._params:
            n = _numel(p)
            p._assign_(p._data + step_size * xp.reshape(update[offset:offset + n], p._data.shape))
            offset += n

    def _clone_param(self):
        return [self._xp.asarray(p._data, copy=True) for p in self._params]

    def _set_param(self, params_data) -> None:
        for p, data in zip(self._params, params_data):
            p._assign_(data)

    def _evaluate(self, closure) -> float:
        with gs.enable_grad():
            return float(closure())

    def _directional_evaluate(self, closure, x, t, d):
        self._add_grad(t, d)
        loss = self._evaluate(closure)
        flat_grad = self._gather_flat_grad()
        self._set_param(x)
        return loss, flat_grad

    # --------------------------------------------------------------- step
    def step(self, closure=None):
        """Run up to ``max_iter`` L-BFGS iterations; return the loss at the start of the call."""
        if closure is None:
            raise RuntimeError("LBFGS requires a closure that re-evaluates the loss")
        with gs.no_grad():
            return self._step(closure)

    def _step(self, closure):
        xp = self._xp
        group = self.param_groups[0]
        lr = group["lr"]
        max_iter, max_eval = group["max_iter"], group["max_eval"]
        tolerance_grad, tolerance_change = group["tolerance_grad"], group["tolerance_change"]
        line_search_fn, history_size = group["line_search_fn"], group["history_size"]

        # all state is global; it is kept in the first parameter's entry
        state = self.state[self._params[0]]
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)

        with gs.enable_grad():
            orig_loss = closure()
        loss = float(orig_loss)
        current_evals = 1
        state["func_evals"] += 1

        flat_grad = self._gather_flat_grad()
        if _abs_max(xp, flat_grad) <= tolerance_grad:
            return orig_loss

        d = state.get("d")
        t = state.get("t")
        old_dirs = state.get("old_dirs")
        old_stps = state.get("old_stps")
        ro = state.get("ro")
        H_diag = state.get("H_diag")
        prev_flat_grad = state.get("prev_flat_grad")
        prev_loss = state.get("prev_loss")

        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1

            # ---- descent direction
            if state["n_iter"] == 1:
                d = -flat_grad
                old_dirs, old_stps, ro = [], [], []
                H_diag = 1
            else:
                y = flat_grad - prev_flat_grad
                s = d * t
                ys = _dot(xp, y, s)
                if ys > 1e-10:
                    if len(old_dirs) == history_size:
                        old_dirs.pop(0)
                        old_stps.pop(0)
                        ro.pop(0)
                    old_dirs.append(y)
                    old_stps.append(s)
                    ro.append(1.0 / ys)
                    H_diag = ys / _dot(xp, y, y)
                num_old = len(old_dirs)
                al = [None] * num_old
                q = -flat_grad
                for i in range(num_old - 1, -1, -1):
                    al[i] = _dot(xp, old_stps[i], q) * ro[i]
                    q = q + (-al[i]) * old_dirs[i]
                r = q * H_diag
                for i in range(num_old):
                    be_i = _dot(xp, old_dirs[i], r) * ro[i]
                    r = r + (al[i] - be_i) * old_stps[i]
                d = r

            prev_flat_grad = xp.asarray(flat_grad, copy=True)
            prev_loss = loss

            # ---- step length
            if state["n_iter"] == 1:
                t = min(1.0, 1.0 / float(xp.sum(xp.abs(flat_grad)))) * lr
            else:
                t = lr

            gtd = _dot(xp, flat_grad, d)
            if gtd > -tolerance_change:
                break

            ls_func_evals = 0
            if line_search_fn is not None:
                x_init = self._clone_param()

                def obj_func(x, t, d):
                    return self._directional_evaluate(closure, x, t, d)

                loss, flat_grad, t, ls_func_evals = _strong_wolfe(
                    obj_func, xp, x_init, t, d, loss, flat_grad, gtd,
                    max_ls=max_eval - current_evals)  # PyTorch keeps the search's own 1e-9
                self._add_grad(t, d)
                opt_cond = _abs_max(xp, flat_grad) <= tolerance_grad
            else:
                self._add_grad(t, d)
                if n_iter != max_iter:
                    # re-evaluate only if another iteration follows
                    loss = self._evaluate(closure)
                    flat_grad = self._gather_flat_grad()
                    opt_cond = _abs_max(xp, flat_grad) <= tolerance_grad
                    ls_func_evals = 1

            current_evals += ls_func_evals
            state["func_evals"] += ls_func_evals

            # ---- stopping tests
            if n_iter == max_iter:
                break
            if current_evals >= max_eval:
                break
            if opt_cond:
                break
            if _abs_max(xp, d * t) <= tolerance_change:
                break
            if abs(loss - prev_loss) < tolerance_change:
                break

        state["d"] = d
        state["t"] = t
        state["old_dirs"] = old_dirs
        state["old_stps"] = old_stps
        state["ro"] = ro
        state["H_diag"] = H_diag
        state["prev_flat_grad"] = prev_flat_grad
        state["prev_loss"] = prev_loss
        return orig_loss


def _numel(p) -> int:
    n = 1
    for s in p._data.shape:
        n *= s
    return n
