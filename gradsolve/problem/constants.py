"""The named constants (``pi``, ``e``) and the exact evaluation of constant sub-expressions.

``evaluate_constant`` gives the double value of an expression without symbols,
or the message that refuses it, from its values at 30 and 45 digits: the
grammar refuses with the message, and lowering folds constants with the value,
so both agree.
"""

from __future__ import annotations

import math

import sympy

__all__ = ["CONSTANTS", "evaluate_constant", "is_undefined"]

#: Named constants; a declared unknown or data column of the same name shadows them.
CONSTANTS: dict[str, sympy.Expr] = {"pi": sympy.pi, "e": sympy.E}

_UNDEFINED = (sympy.zoo, sympy.nan, sympy.oo, -sympy.oo)
#: Digits at which constant sub-expressions are evaluated; a defined value agrees at both.
_CHECK_DIGITS = (30, 45)


def is_undefined(value: sympy.Basic) -> bool:
    """zoo, nan, oo or -oo (sympy singletons: compared by identity, which is fast)."""
    return any(value is special for special in _UNDEFINED)


_UNDEFINED_MESSAGE = "the value is undefined here (division by zero, or a pole such as tan(pi/2) or log(0)?)"
_NOT_REAL_MESSAGE = "the value is not a real number here (e.g. sqrt or log of a negative number)"
_NO_VALUE_MESSAGE = "the expression has no real value here"
_TOO_LARGE_MESSAGE = "the value is too large for double precision"
_SYMPY_NUMERIC_ERRORS = (TypeError, ValueError, OverflowError, ZeroDivisionError, AttributeError, RecursionError)


def _parts(approx: sympy.Expr):
    """(real, imag) of a numeric approximation as sympy numbers, or None when it is not a finite number."""
    if approx.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo):
        return None
    real, imag = approx.as_real_imag()
    if not (real.is_Number and imag.is_Number):
        return None
    return real, imag


def _no_digits(number: sympy.Expr) -> bool:
    """True for an exact 0, or a Float whose value evalf could not resolve at all (``0.e-165``)."""
    if number.is_zero:
        return True
    return number.is_Float and number._prec < 16


def _decide(approximations) -> tuple[float, tuple] | str:
    """The double value of a constant from its approximations at ``_CHECK_DIGITS``, or the message refusing it.

    Returns ``(value, reals)``: *reals* are the real parts at each precision
    (exact zeros where evalf resolved no digit), for evaluating the nodes above.
    """
    if any(parts is None for parts in approximations):
        return _UNDEFINED_MESSAGE
    if any(not _no_digits(imag) for _, imag in approximations):
        if any(_no_digits(imag) for _, imag in approximations):
            return _UNDEFINED_MESSAGE  # real at one precision, complex at the other
        return _NOT_REAL_MESSAGE
    reals = [sympy.Integer(0) if _no_digits(real) else real for real, _ in approximations]
    try:
        numbers = [float(real) for real in reals]
    except OverflowError:
        return _TOO_LARGE_MESSAGE
    except (TypeError, ValueError):
        return _NO_VALUE_MESSAGE
    if any(math.isnan(n) for n in numbers):
        return _UNDEFINED_MESSAGE
    if any(math.isinf(n) for n in numbers):
        return _TOO_LARGE_MESSAGE
    low, best = numbers[0], numbers[-1]
    if (low == 0.0) != (best == 0.0):
        if max(abs(low), abs(best)) > 1e-25:  # resolved at one precision, zero at the other
            return _UNDEFINED_MESSAGE
        return 0.0, tuple(sympy.Integer(0) for _ in reals)
    if abs(low - best) > 1e-12 * abs(best):
        return _UNDEFINED_MESSAGE
    return best, tuple(reals)


def _evaluate_constant(value: sympy.Expr, known: dict) -> tuple[float, tuple] | str:
    """The double value of a constant expression (and its approximations), or the message refusing it.

    *known* maps sub-expressions already evaluated to their approximations at
    ``_CHECK_DIGITS``.  When every argument is known, the node is evaluated on
    those approximations, one precision each: cheap, and when the two results
    agree the value is well conditioned and right.  Otherwise (an argument not
    seen, or results that disagree: a pole, a cancellation, an exact zero) the
    exact expression is evaluated by ``sympy.N``, which raises its working
    precision where it cancels, and decides.
    """
    if value.is_Number:
        if is_undefined(value):
            return _UNDEFINED_MESSAGE
        return _decide([(value, sympy.Integer(0)) for _ in _CHECK_DIGITS])
    args = [_approximations_of(arg, known) for arg in value.args]
    if args and all(arg is not None for arg in args):
        try:
            # evaluate=False: sympy's automatic evaluation would query assumptions on every build
            fast = [_parts(sympy.N(value.func(*[arg[k] for arg in args], evaluate=False), digits))
                    for k, digits in enumerate(_CHECK_DIGITS)]
        except _SYMPY_NUMERIC_ERRORS:
            fast = None
        if fast is not None:
            decided = _decide(fast)
            if not isinstance(decided, str):
                return decided
    try:
        exact = [_parts(sympy.N(value, digits)) for digits in _CHECK_DIGITS]
    except _SYMPY_NUMERIC_ERRORS:
        return _NO_VALUE_MESSAGE
    return _decide(exact)


def _approximations_of(arg: sympy.Expr, known: dict):
    """*arg* at each of ``_CHECK_DIGITS``: known, exact (a number), or None (not evaluated yet)."""
    if arg in known:
        return known[arg][1]
    if arg.is_Number:
        return tuple(arg for _ in _CHECK_DIGITS)
    if arg.is_NumberSymbol:
        return tuple(sympy.N(arg, digits) for digits in _CHECK_DIGITS)
    return None


def evaluate_constant(expr: sympy.Expr, known: dict | None = None) -> float | str:
    """The double value of the constant expression *expr*, or the message that refuses it.

    Every sub-expression is evaluated once, bottom up (``_evaluate_constant``);
    *known* (sub-expression -> (value, approximations)) is filled as it goes
    and may be shared between calls.  The grammar refuses with the message;
    lowering folds constants with the value, so both agree (``sign`` of an
    exact zero hidden in radicals is 0 for both).
    """
    known = {} if known is None else known
    stack: list[tuple[sympy.Expr, bool]] = [(expr, False)]
    while stack:
        node, ready = stack.pop()
        if node in known:
            continue
        if not ready:
            stack.append((node, True))
            stack.extend((arg, False) for arg in node.args
                         if arg not in known and not arg.is_Number and not arg.is_NumberSymbol)
            continue
        decided = _evaluate_constant(node, known)
        if isinstance(decided, str):
            return decided
        known[node] = decided
    return known[expr][0]
