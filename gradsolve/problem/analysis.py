"""Structure of a problem: linearity, Jacobian rank, null space, minimum-norm solution.

* ``is_linear(spec)``: exact, by sympy: every expression is proven affine in
  the unknowns (data columns count as constants); fast, because a numeric
  test rules out nonlinear expressions before any symbolic rewriting.
* ``jacobian_rank(lowered, values=None)``: numeric rank of the residual
  Jacobian at a point (autograd, then an SVD of the numpy copy), with the
  null-space directions, so an underdetermined system is reported as a family
  of solutions.
* ``linear_solution(spec)``: for a linear problem, the exact coefficient matrix
  (sympy), the minimum-norm least-squares solution (numpy.linalg.lstsq) and the
  null space of the coefficient matrix.

The SVD and lstsq run on small dense numpy copies (n = number of unknowns);
that is deliberate and fine on any device.
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass

import numpy as np
import sympy

from .spec import ProblemSpec

__all__ = [
    "constant_term_sizes",
    "constant_scales",
    "MultipleRoot",
    "multiple_root",
    "is_affine_in",
    "is_identically_zero",
    "is_linear",
    "is_nonnegative",
    "nonlinear_expressions",
    "jacobian_matrix",
    "jacobian_rank",
    "null_space",
    "JacobianRank",
    "LinearSolution",
    "linear_solution",
]

#: Largest derivative (sympy operation count) that is rewritten (expand, cancel, trigsimp) to show
#: that it is free of the unknowns; past it, an expression that is not structurally affine counts
#: as nonlinear.
_REWRITE_LIMIT = 400
#: Largest derivative that ``sympy.simplify`` is tried on (simplify is the slow step: seconds
#: on a few hundred operations).
_SIMPLIFY_LIMIT = 60
#: Random point pairs of the numeric test for nonlinearity, and the digits it evaluates at.
_SAMPLES = 3
_SAMPLE_DIGITS = 30


def is_affine_in(expr: sympy.Expr, unknowns: set[sympy.Symbol]) -> bool:
    """True when *expr* is proven affine in *unknowns* (other symbols count as constants).

    Cached: the solver asks about the same expressions more than once.
    """
    return _affine_cached(expr, frozenset(unknowns))


@functools.lru_cache(maxsize=4096)
def _affine_cached(expr: sympy.Expr, unknowns: frozenset) -> bool:
    present = sorted(expr.free_symbols & unknowns, key=lambda s: s.name)
    if not present:
        return True
    # 1. Structure: every first derivative free of the unknowns means a constant gradient.
    #    This decides every expression written as a sum of constant multiples of unknowns.
    unresolved = []
    for u in present:
        first = sympy.diff(expr, u)
        if first.free_symbols & unknowns:
            unresolved.append(first)
    if not unresolved:
        return True
    # 2. Numbers: f(p) + f(q) - 2 f((p + q)/2) is 0 for an affine f; clearly non-zero proves nonlinear.
    if _numerically_nonlinear(expr, present):
        return False
    # 3. Rewriting, within a size budget: sin(y)^2 + cos(y)^2 is 1.
    return all(_free_of(first, unknowns) for first in unresolved)


def _numerically_nonlinear(expr: sympy.Expr, unknowns: list[sympy.Symbol]) -> bool:
    """True when a second difference of *expr* at random points is clearly non-zero.

    Points are exact rationals in [-2, 2] (the same for every run: a fixed
    seed), other symbols (data columns) get one random value per pair, and
    values are computed by ``evalf`` at 30 digits in complex arithmetic, so an
    affine expression gives a difference near 1e-30 of its size.  A point where
    the expression is undefined tells nothing and is skipped.
    """
    rng = random.Random(20240611)
    others = sorted(expr.free_symbols - set(unknowns), key=lambda s: s.name)

    def draw():
        return sympy.Rational(rng.randint(-2000, 2000), 1000)

    for _ in range(_SAMPLES):
        fixed = {s: draw() for s in others}
        p = {u: draw() for u in unknowns}
        q = {u: draw() for u in unknowns}
        m = {u: (p[u] + q[u]) / 2 for u in unknowns}
        values = []
        for point in (p, q, m):
            value = _complex_value(expr, {**fixed, **point})
            if value is None:
                break
            values.append(value)
        if len(values) < 3:
            continue
        second = values[0] + values[1] - 2.0 * values[2]
        scale = max(1.0, *(abs(v) for v in values))
        if abs(second) > 1e-9 * scale:
            return True
    return False


def _complex_value(expr: sympy.Expr, point: dict) -> complex | None:
    try:
        value = complex(expr.evalf(_SAMPLE_DIGITS, subs=point))
    except (TypeError, ValueError, OverflowError, ZeroDivisionError, AttributeError, RecursionError):
        return None
    if not (math.isfinite(value.real) and math.isfinite(value.imag)):
        return None
    return value


def _free_of(first: sympy.Expr, unknowns: frozenset) -> bool:
    """True when rewriting *first* (a derivative) shows it does not depend on *unknowns*."""
    return _rewrite_shows(first, lambda rewritten: not (rewritten.free_symbols & unknowns))


def _rewrite_shows(expr: sympy.Expr, holds) -> bool:
    """True when *holds* is true of *expr* or of one of its rewritings (within the size budget)."""
    size = sympy.count_ops(expr)
    if size > _REWRITE_LIMIT:
        return False
    rewrites = [sympy.expand, sympy.cancel, sympy.trigsimp]
    if size <= _SIMPLIFY_LIMIT:
        rewrites.append(sympy.simplify)
    for rewrite in rewrites:
        try:
            if holds(rewrite(expr)):
                return True
        except (TypeError, ValueError, RecursionError, sympy.PolynomialError):
            continue
    return False


def is_identically_zero(expr: sympy.Expr) -> bool:
    """True when *expr* is proven identically zero (structurally, or after rewriting within the budget).

    A value clearly away from zero at a random point answers False at once,
    before any rewriting.
    """
    if expr == 0 or expr.is_zero:
        return True
    symbols = sorted(expr.free_symbols, key=lambda s: s.name)
    rng = random.Random(20240611)
    for _ in range(_SAMPLES):
        value = _complex_value(expr, {s: sympy.Rational(rng.randint(-2000, 2000), 1000) for s in symbols})
        if value is not None and abs(value) > 1e-9:
            return False
    return _rewrite_shows(expr, lambda rewritten: rewritten == 0)


#: Expressions with more nodes than this are not asked about their sign (sympy's
#: assumption system takes about a second at 1,500 operations).
_SIGN_LIMIT = 600


def is_nonnegative(expr: sympy.Expr | None) -> bool:
    """True when sympy proves *expr* >= 0 for every real value of its symbols.

    >>> x, y = sympy.symbols("x y", real=True)
    >>> is_nonnegative(abs(x - y)), is_nonnegative(x**2 - 1)
    (True, False)
    """
    if expr is None or sympy.count_ops(expr) > _SIGN_LIMIT:
        return False
    return bool(expr.is_nonnegative)


def nonlinear_expressions(spec: ProblemSpec) -> list[int]:
    """Indices (0-based) of the expressions that are not affine in the unknowns."""
    unknowns = set(spec.unknown_symbols)
    return [i for i, expr in enumerate(spec.expressions) if not is_affine_in(expr, unknowns)]


def is_linear(spec: ProblemSpec) -> bool:
    """True when every residual (or the loss, for minimize) is proven affine in the unknowns.

    Never True for a nonlinear problem.  An expression is affine when every
    first derivative (``sympy.diff``) is free of the unknowns, as written or
    after rewriting (expand, cancel, trigsimp; simplify for small ones).  A
    numeric test first rules out nonlinear expressions quickly: a second
    difference at random points that is clearly non-zero.  Rewriting has a
    size budget; an expression that is not affine as written and too large to
    rewrite counts as nonlinear.  Data columns are treated as constants, so
    ``y = a*x^2 + b*x + c`` over data x, y is linear in a, b, c.  Non-smooth
    functions (``abs``, ``min``, ``sign`` of an unknown) make a problem nonlinear.
    """
    return not nonlinear_expressions(spec)


def constant_term_sizes(spec: ProblemSpec) -> np.ndarray | None:
    """Per equation, the sum of |t| over its top-level terms free of the unknowns (``lhs - rhs`` as written).

    With ``sum_j |J_ij x_j|`` this is the size of an equation's terms, against
    which its residual's rounding is judged (gradsolve.solve.verdicts): ``x^2 - 2*x
    + 1 = 0`` has the constant 1 even where its linear part vanishes.  None for
    a problem with data rows or none of equations (minimize).

    >>> from gradsolve.problem.files import from_text
    >>> constant_term_sizes(from_text("x^2 - 2*x + 1 = 0\\nI = (0.5 - V)/1e10"))
    array([1.e+00, 5.e-11])
    """
    if spec.kind == "minimize" or spec.data:
        return None
    sizes = _constant_terms(tuple(spec.residuals), frozenset(spec.unknown_symbols))
    return None if sizes is None else np.array(sizes, dtype=np.float64)


@functools.lru_cache(maxsize=256)
def _constant_terms(residuals: tuple, unknowns: frozenset) -> tuple | None:
    """constant_term_sizes' sums, cached: each solve asks several times (weights, verdicts, probes)."""
    sizes = []
    for expr in residuals:
        total = 0.0
        for term in sympy.Add.make_args(sympy.expand_mul(expr) if expr.is_Add or expr.is_Mul else expr):
            if not (term.free_symbols & unknowns):
                try:
                    total += abs(complex(term.evalf(17)))
                except (TypeError, ValueError):
                    return None
        sizes.append(total)
    return tuple(sizes)


def constant_scales(lowered, point, jacobian=None) -> np.ndarray | None:
    """Per unknown, the scale its equations' constants give it: max over equations of c_i / |J_ij| at `point`.

    ``I = (0.5 - V)/1e10`` gives I the scale 5e-11 and V the scale 0.5: the size
    an unknown must have to balance an equation's constant.  Zero where no
    equation has a constant and a slope in that unknown; None without equations.
    """
    constants = constant_term_sizes(lowered.spec)
    if constants is None:
        return None
    J = np.abs(jacobian_matrix(lowered, point) if jacobian is None else jacobian)  # `jacobian`: J at point
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where((J > 0) & np.isfinite(J), constants[:, None] / J, 0.0)
    return np.max(ratios, axis=0) if ratios.size else np.zeros(J.shape[1])


def null_space(matrix: np.ndarray, rank: int | None = None, vt: np.ndarray | None = None) -> np.ndarray:
    """Orthonormal basis of the null space of *matrix*, one direction per row.

    Each direction has unit length and its first non-zero component (|c| >
    1e-10) positive.
    """
    matrix = np.atleast_2d(np.asarray(matrix, dtype=np.float64))
    n = matrix.shape[1]
    if vt is None or rank is None:
        _, s, vt = np.linalg.svd(matrix) if matrix.size else (None, np.zeros(0), np.eye(n))
        if rank is None:
            rank = _rank_from(s, matrix.shape)
    directions = np.array(vt[rank:], dtype=np.float64).reshape(-1, n)
    for row in directions:
        row /= np.linalg.norm(row)
        nonzero = np.flatnonzero(np.abs(row) > 1e-10)
        if nonzero.size and row[nonzero[0]] < 0:
            row *= -1.0
    return directions


def _rank_from(singular_values: np.ndarray, shape: tuple[int, int]) -> int:
    if singular_values.size == 0:
        return 0
    tol = max(shape) * np.finfo(np.float64).eps * float(singular_values.max())
    return int(np.count_nonzero(singular_values > tol))


@dataclass
class JacobianRank:
    """Rank analysis of the residual Jacobian at one point.

    ``jacobian`` is m x n (residuals x unknowns); ``tol`` =
    max(m, n) * eps * sigma_max; ``null_space`` is k x n, k = n - rank, each row a
    unit direction (first non-zero component positive) along which the
    residuals do not change to first order.
    """

    rank: int
    n_unknowns: int
    n_residuals: int
    singular_values: np.ndarray
    tol: float
    null_space: np.ndarray
    jacobian: np.ndarray
    point: np.ndarray

    @property
    def deficiency(self) -> int:
        """n_unknowns - rank: the dimension of the solution family near the point."""
        return self.n_unknowns - self.rank


def jacobian_matrix(lowered, values=None) -> np.ndarray:
    """The m x n residual Jacobian at *values* (default: current parameters), as float64 numpy.

    Uses ``gs.autograd.functional.jacobian``; falls back to one
    ``gs.autograd.grad`` row per residual when that is missing.  The
    parameters are restored afterwards.
    """
    import gradsolve as gs

    if lowered.kind == "minimize":
        raise ValueError("a Jacobian needs residuals; this problem is a minimize problem")
    saved = lowered.values()
    try:
        if values is not None:
            lowered.set_values(values)
        params = lowered.params
        functional = getattr(getattr(gs.autograd, "functional", None), "jacobian", None)
        if functional is not None:
            blocks = functional(lowered.residuals, params)
            columns = [np.asarray(block.numpy(), dtype=np.float64).reshape(-1) for block in blocks]
            m = columns[0].shape[0] if columns else int(lowered.residuals().shape[0])
            return np.stack(columns, axis=1) if columns else np.zeros((m, 0))
        with gs.enable_grad():
            r = lowered.residuals()
        rows = []
        for i in range(r.shape[0]):
            grads = gs.autograd.grad([r[i]], params, retain_graph=True, allow_unused=True)
            rows.append([0.0 if g is None else float(g.item()) for g in grads])
        return np.array(rows, dtype=np.float64).reshape(r.shape[0], len(params))
    finally:
        lowered.set_values(saved)


def jacobian_rank(lowered, values=None) -> JacobianRank:
    """Rank and null space of the residual Jacobian at *values* (default: current parameters)."""
    point = lowered.values() if values is None else np.asarray(values, dtype=np.float64).reshape(-1)
    jac = jacobian_matrix(lowered, point)
    m, n = jac.shape
    if jac.size:
        _, s, vt = np.linalg.svd(jac)
    else:
        s, vt = np.zeros(0), np.eye(n)
    tol = max(m, n) * np.finfo(np.float64).eps * (float(s.max()) if s.size else 0.0)
    rank = int(np.count_nonzero(s > tol))
    return JacobianRank(
        rank=rank,
        n_unknowns=n,
        n_residuals=m,
        singular_values=s,
        tol=tol,
        null_space=null_space(jac, rank, vt),
        jacobian=jac,
        point=point,
    )


@dataclass
class LinearSolution:
    """Exact analysis of a linear problem A @ x = b (A from sympy's coefficients).

    ``x`` is the minimum-norm least-squares solution (numpy.linalg.lstsq);
    ``residual_norm`` = ||A x - b||; ``consistent`` is True when that is
    negligible; ``null_space`` rows are unit directions (first non-zero
    component positive): every x + t * d is also a solution.
    """

    A: np.ndarray
    b: np.ndarray
    x: np.ndarray
    rank: int
    residual_norm: float
    consistent: bool
    null_space: np.ndarray
    unknowns: list[str]


def linear_solution(spec: ProblemSpec) -> LinearSolution:
    """Minimum-norm solution of a linear equations/residuals problem.

    Raises ValueError when the problem is not linear or is a minimize problem.
    Coefficients are exact sympy expressions; with data columns they are
    evaluated row by row through the lowering (one row per data row).
    """
    if spec.kind == "minimize":
        raise ValueError("linear_solution needs equations or residuals")
    if not is_linear(spec):
        raise ValueError("the problem is not linear in its unknowns")
    unknowns = spec.unknown_symbols
    zero = {u: 0 for u in unknowns}
    blocks_a, blocks_b = [], []
    if spec.data:
        from .lowering import lower

        lowered = lower(spec)
        coefficient_exprs = []
        for expr in spec.residuals:
            coefficient_exprs.extend(sympy.diff(expr, u) for u in unknowns)
            coefficient_exprs.append(-expr.subs(zero))
        values = lowered.compile(coefficient_exprs).run()
        rows = spec.n_rows
        k = len(unknowns) + 1
        for i in range(len(spec.residuals)):
            cols = [np.broadcast_to(np.asarray(v.numpy(), dtype=np.float64), (rows,)) for v in values[i * k : (i + 1) * k]]
            uses_data = any(s.name in spec.data for s in spec.residuals[i].free_symbols)
            height = rows if uses_data else 1
            block = np.stack([c[:height] for c in cols], axis=1)
            blocks_a.append(block[:, :-1])
            blocks_b.append(block[:, -1])
        A = np.vstack(blocks_a)
        b = np.concatenate(blocks_b)
    else:
        matrix, rhs = sympy.linear_eq_to_matrix(spec.residuals, unknowns)
        A = np.array(matrix.evalf(17).tolist(), dtype=np.float64).reshape(len(spec.residuals), len(unknowns))
        b = np.array(rhs.evalf(17).tolist(), dtype=np.float64).reshape(-1)
    x, _, rank, s = np.linalg.lstsq(A, b, rcond=None)
    rank = int(rank)
    residual_norm = float(np.linalg.norm(A @ x - b))
    scale = max(1.0, float(np.linalg.norm(b)))
    consistent = residual_norm <= 1e-9 * scale
    return LinearSolution(
        A=A,
        b=b,
        x=x,
        rank=rank,
        residual_norm=residual_norm,
        consistent=consistent,
        null_space=null_space(A),
        unknowns=spec.unknown_names,
    )


#: multiple_root's probes: a step of this fraction of the unknowns' scale off the root, then up to
#: FAMILY_STEPS minimum-norm Gauss-Newton steps back onto the equations.
PROBE_STEP = 1e-3
FAMILY_STEPS = 30
AXIS_PROBES = 20  # up to this many unknowns, each unknown's axis is probed too


@dataclass
class MultipleRoot:
    """An isolated root where the Jacobian is singular (rank < unknowns).

    `multiplicity` m is how fast the residuals grow along the Jacobian's null
    directions (as distance**m; the largest m over them), and `digits` how many
    significant digits the unknowns keep when the residuals carry rounding:
    a residual error d moves a root of multiplicity m by about d**(1/m).
    """

    rank: int
    multiplicity: int
    digits: int

    @classmethod
    def of(cls, rank, multiplicity, eps=float(np.finfo(np.float64).eps)):
        multiplicity = max(2, int(multiplicity))
        return cls(rank=rank, multiplicity=multiplicity, digits=int(math.floor(-math.log10(16 * eps) / multiplicity)))


def multiple_root(lowered, point, info: JacobianRank, scales, eps=float(np.finfo(np.float64).eps)):
    """A MultipleRoot where the singular solution at `point` is isolated; None where it is part of a family.

    Along each null direction v of the Jacobian (in the unknowns' `scales`; with
    few unknowns, each unknown's axis too), a
    point PROBE_STEP away is pulled back onto the equations by minimum-norm
    Gauss-Newton steps: on a family it lands that far away (a curve through the
    point), at an isolated root it returns to the point (x^2 = 0 pulls x + t to
    0).  The loss rising along v is not enough: it rises (as t**4) along a
    curved family's tangent too.
    """
    x = np.asarray(point, dtype=np.float64).reshape(-1)
    s = np.asarray(scales, dtype=np.float64).reshape(-1)
    J = info.jacobian * s  # the Jacobian in the unknowns' scale
    directions = null_space(J, info.rank)
    if not len(directions) and J.size:
        # full rank to rounding (x^2 = 0 reached at x = 1e-80): probe its weakest direction
        directions = np.linalg.svd(J)[2][-1:]
    if not len(directions):
        return None
    if x.size <= AXIS_PROBES:
        # and each unknown's axis: at a crossing of families (x*y = 0 reached at (1e-81, 1e-81)) the Jacobian
        # is small in every direction, and the numerical null space shows only the one the steps came along
        directions = np.concatenate([np.atleast_2d(directions), np.eye(x.size)])
    saved = lowered.values()

    def residuals_at(z):
        lowered.set_values(list(map(float, z)))
        import gradsolve as gs

        with gs.no_grad():
            return np.asarray(lowered.residuals().numpy(), dtype=np.float64).reshape(-1)

    constants = constant_term_sizes(lowered.spec)

    def on_equations(z, r, r0):
        """r at z is no larger than at the root, or rounding of its terms (16 roundings, no floor)."""
        if not np.all(np.isfinite(r)):
            return False
        if float(np.linalg.norm(r)) <= 2.0 * r0:
            return True
        terms = np.abs(jacobian_matrix(lowered, z)) @ np.abs(z) + (constants if constants is not None else 0.0)
        return bool(np.all(np.abs(r) <= 16 * eps * terms))

    worst = 1
    try:
        r0 = float(np.linalg.norm(residuals_at(x)))
        for v in directions:
            step = PROBE_STEP * v
            z = x + s * step
            for _ in range(FAMILY_STEPS):
                r = residuals_at(z)
                if on_equations(z, r, r0):
                    if float(np.linalg.norm((z - x) / s)) >= PROBE_STEP / 4:
                        return None  # back on the equations, away from the point: a family
                    break
                if not np.all(np.isfinite(r)):
                    break
                z = z - s * (np.linalg.pinv(jacobian_matrix(lowered, z) * s) @ r)
            near = float(np.linalg.norm(residuals_at(x + s * step)))
            nearer = float(np.linalg.norm(residuals_at(x + s * step / 10)))
            if not (math.isfinite(near) and math.isfinite(nearer)):
                return None  # a probe outside the functions' domain proves nothing
            if near > 0 and nearer > 0:
                worst = max(worst, int(round(math.log10(near / nearer))))
    finally:
        lowered.set_values(saved)
    if worst < 2:  # the residuals grow linearly along every probe: a simple root
        return None
    return MultipleRoot.of(int(info.rank), worst, eps)
