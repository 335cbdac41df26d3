"""Size limits of the expression language.

The parser (grammar.py) and the sympy builder (sympy_builder.py) both check
``MAX_DEPTH``; every limit is checked before the work it bounds, so ten
thousand ``(`` never reach Python's parser.
"""

__all__ = ["MAX_EXPRESSION_CHARS", "MAX_DEPTH", "MAX_INT_DIGITS", "MAX_EXPONENT", "MAX_NAME_CHARS", "MAX_TOL"]

#: Longest expression accepted, in characters.
MAX_EXPRESSION_CHARS = 10_000
#: Deepest nesting accepted (parentheses, calls, powers, chained signs).
MAX_DEPTH = 100
#: Most digits in an integer literal.
MAX_INT_DIGITS = 100
#: Largest |exponent| of a numeric power applied to a non-constant base.
MAX_EXPONENT = 10_000
#: Longest name (unknown or data column).
MAX_NAME_CHARS = 100

#: The largest relative tolerance (``--tol``, a file's ``solver: tol``): a tolerance of 1 or more is met before
#: the first step ("converged" at the start), and sqrt(1e-2) = 0.1 is already a loose stationarity test.
MAX_TOL = 1e-2
