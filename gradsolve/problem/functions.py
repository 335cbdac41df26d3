"""The functions of the problem language: names, arities and the sympy nodes they build.

``FUNCTIONS`` (name or alias -> ``FunctionSpec``) is the single source of truth
for callable names: the grammar accepts a call exactly when its name is here.
``sigmoid``, ``maximum`` and ``minimum`` are the language's own sympy nodes
(sympy has no sigmoid node, and its ``Max``/``Min`` are slow to build); lowering
maps each of them to the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import sympy
from sympy.codegen.cfunctions import expm1 as _sympy_expm1
from sympy.codegen.cfunctions import log1p as _sympy_log1p
from sympy.core.logic import fuzzy_and

__all__ = ["MAX_EXTREMUM_ARGS", "FUNCTIONS", "FunctionSpec", "sigmoid", "maximum", "minimum"]

#: Most arguments of one min(...) / max(...) call.
MAX_EXTREMUM_ARGS = 64

# ----------------------------------------------------------------------------- sympy extras


class sigmoid(sympy.Function):
    """The logistic function 1 / (1 + exp(-x)) as one sympy node.

    Kept as its own node so lowering can use the engine's stable ``sigmoid``;
    ``fdiff`` and ``_eval_evalf`` make it a full citizen for sympy.diff/evalf.
    """

    nargs = 1

    def fdiff(self, argindex=1):
        s = sigmoid(self.args[0])
        return s * (1 - s)

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return 1 / (1 + sympy.exp(-x))

    def _eval_evalf(self, prec):
        return (1 / (1 + sympy.exp(-self.args[0])))._eval_evalf(prec)

    def _eval_is_extended_real(self):
        return self.args[0].is_extended_real

    def _eval_is_positive(self):
        if self.args[0].is_extended_real:
            return True
        return None


class _Extremum(sympy.Function):
    """n-ary max/min kept as one unevaluated node.

    sympy's own ``Max``/``Min`` compare every pair of arguments (with
    assumption queries) when built and flatten nested calls, which is
    quadratic and was measured at seconds for ~100 symbolic arguments; these
    nodes do nothing when built (the grammar drops repeated arguments).
    ``fdiff`` gives sympy.diff the engine's derivative (Heaviside steps with
    the engine's tie rule) and ``_eval_evalf`` the numeric value.
    """

    _pick = None  # max or min of numeric values
    _step_sign = 1  # +1: d max/d a_i = H(a_i - others); -1: d min/d a_i = H(others - a_i)

    @classmethod
    def eval(cls, *args):  # safe: sympy's Function.eval hook on built nodes, not Python's eval of text
        # Only plain numbers are compared (no assumption queries, so building stays cheap).
        if args and all(arg.is_Number for arg in args):
            return cls._pick(args)
        return None

    def fdiff(self, argindex=1):
        """The derivative the engine computes: a left fold of two-argument max/min, ties shared equally.

        ``max(a1, ..., an)`` is evaluated as ``max(max(max(a1, a2), a3), ...)``
        and each two-argument step gives half the gradient to each side on a tie
        (``Heaviside(0) = 1/2``), so at ``a1 = a2 = a3`` the derivatives are
        1/4, 1/4, 1/2 and they always sum to 1.
        """
        args = self.args
        i = argindex - 1
        sign = self._step_sign

        def prefix(k):  # the running max/min of args[0..k]
            return args[0] if k == 0 else type(self)(*args[: k + 1])

        factors = [] if i == 0 else [sympy.Heaviside(sign * (args[i] - prefix(i - 1)))]
        for k in range(i + 1, len(args)):
            factors.append(sympy.Heaviside(sign * (prefix(k - 1) - args[k])))
        return sympy.Mul(*factors)

    def _eval_evalf(self, prec):
        dps = max(15, int(prec * 0.30103) + 2)
        values = [arg.evalf(dps) for arg in self.args]
        if all(v.is_Number and v.is_extended_real for v in values):
            return type(self)._pick(values)
        return None

    def _eval_is_extended_real(self):
        return fuzzy_and(arg.is_extended_real for arg in self.args)


class maximum(_Extremum):
    """max(a, b, ...): the largest argument."""

    _pick = staticmethod(max)
    _step_sign = 1


class minimum(_Extremum):
    """min(a, b, ...): the smallest argument."""

    _pick = staticmethod(min)
    _step_sign = -1


maximum.__name__ = "max"  # printed as the user wrote it
minimum.__name__ = "min"


def _extremum(node_class):
    def build(*args):
        args = tuple(dict.fromkeys(args))  # max(y, y, y) is y: duplicates change nothing
        return args[0] if len(args) == 1 else node_class(*args)

    return build


# ----------------------------------------------------------------------------- function table


@dataclass(frozen=True)
class FunctionSpec:
    """One entry of the function table: name, arity, builder and documentation."""

    name: str
    min_args: int
    max_args: int | None  # None: any number
    build: Callable[..., sympy.Expr]
    doc: str
    aliases: tuple[str, ...] = ()

    def arity_text(self) -> str:
        if self.max_args is None:
            return f"at least {self.min_args} argument{'s' if self.min_args != 1 else ''}"
        if self.min_args == self.max_args:
            return f"{self.min_args} argument{'s' if self.min_args != 1 else ''}"
        return f"{self.min_args} to {self.max_args} arguments"


def _log(x, base=None):
    if base is None:
        return sympy.log(x)
    return sympy.log(x) / sympy.log(base)


def _cbrt(x):
    # Real cube root: cbrt(-8) is -2 (sympy.cbrt is the principal complex root).
    return sympy.sign(x) * sympy.Pow(sympy.Abs(x), sympy.Rational(1, 3))


def _specs() -> dict[str, FunctionSpec]:
    table = [
        FunctionSpec("exp", 1, 1, sympy.exp, "e raised to x"),
        FunctionSpec("log", 1, 2, _log, "natural logarithm; log(x, b) is the logarithm to base b", ("ln",)),
        FunctionSpec("log10", 1, 1, lambda x: sympy.log(x) / sympy.log(10), "base-10 logarithm"),
        FunctionSpec("log2", 1, 1, lambda x: sympy.log(x) / sympy.log(2), "base-2 logarithm"),
        FunctionSpec("log1p", 1, 1, _sympy_log1p, "log(1 + x), accurate for small x"),
        FunctionSpec("expm1", 1, 1, _sympy_expm1, "exp(x) - 1, accurate for small x"),
        FunctionSpec("sqrt", 1, 1, sympy.sqrt, "square root"),
        FunctionSpec("cbrt", 1, 1, _cbrt, "real cube root (cbrt(-8) = -2)"),
        FunctionSpec("abs", 1, 1, sympy.Abs, "absolute value"),
        FunctionSpec("sign", 1, 1, sympy.sign, "-1, 0 or 1"),
        FunctionSpec("sin", 1, 1, sympy.sin, "sine (radians)"),
        FunctionSpec("cos", 1, 1, sympy.cos, "cosine (radians)"),
        FunctionSpec("tan", 1, 1, sympy.tan, "tangent (radians)"),
        FunctionSpec("asin", 1, 1, sympy.asin, "inverse sine", ("arcsin",)),
        FunctionSpec("acos", 1, 1, sympy.acos, "inverse cosine", ("arccos",)),
        FunctionSpec("atan", 1, 1, sympy.atan, "inverse tangent", ("arctan",)),
        FunctionSpec("atan2", 2, 2, sympy.atan2, "atan2(y, x): angle of the point (x, y)", ("arctan2",)),
        FunctionSpec("sinh", 1, 1, sympy.sinh, "hyperbolic sine"),
        FunctionSpec("cosh", 1, 1, sympy.cosh, "hyperbolic cosine"),
        FunctionSpec("tanh", 1, 1, sympy.tanh, "hyperbolic tangent"),
        FunctionSpec("asinh", 1, 1, sympy.asinh, "inverse hyperbolic sine", ("arcsinh",)),
        FunctionSpec("acosh", 1, 1, sympy.acosh, "inverse hyperbolic cosine", ("arccosh",)),
        FunctionSpec("atanh", 1, 1, sympy.atanh, "inverse hyperbolic tangent", ("arctanh",)),
        FunctionSpec("sigmoid", 1, 1, sigmoid, "logistic function 1 / (1 + exp(-x))"),
        FunctionSpec("min", 1, MAX_EXTREMUM_ARGS, _extremum(minimum), "smallest of its arguments"),
        FunctionSpec("max", 1, MAX_EXTREMUM_ARGS, _extremum(maximum), "largest of its arguments"),
        FunctionSpec("pow", 2, 2, None, "pow(x, y) is x**y"),  # built by _power
        FunctionSpec("hypot", 2, 2, lambda x, y: sympy.sqrt(x**2 + y**2), "sqrt(x**2 + y**2)"),
    ]
    out: dict[str, FunctionSpec] = {}
    for spec in table:
        out[spec.name] = spec
        for alias in spec.aliases:
            out[alias] = spec
    return out


#: Name (or alias) -> FunctionSpec.  The single source of truth for callable names.
FUNCTIONS: dict[str, FunctionSpec] = _specs()
