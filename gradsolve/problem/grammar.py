"""The expression grammar: user text -> checked Python AST -> sympy expression.

Nothing here ever evaluates user text.  The pipeline for one expression is

1. limits and a character scan (ASCII only, no control characters, no quotes,
   brackets, braces, ``:`` ``;`` ``#`` ``%`` ``<`` ``>`` ...), each refused with a
   message naming what was found;
2. a parenthesis scan (balance, nesting depth <= ``MAX_DEPTH``) *before* any
   parser runs, so ten thousand ``(`` never reach ``ast.parse``;
3. Python's ``tokenize``: ``^`` becomes ``**`` at the token level (so ``2^3^2``
   is 512 and ``-x^2`` is ``-(x**2)``), ``=``/``==`` at depth 0 split an
   equation, implicit multiplication (``2x``, ``2(x+1)``, ``x y``) is refused
   with a hint, every number is checked against the documented number syntax,
   and every name and number is replaced by a placeholder identifier (so user
   names such as ``lambda`` or ``None`` never meet Python's keywords, and no
   literal ever reaches the Python parser);
4. ``ast.parse(mode="eval")`` on the placeholder text and a walk that accepts
   only ``Expression``, ``BinOp`` (``+ - * / **``), ``UnaryOp`` (``-`` ``+``),
   ``Call`` of a bare name from ``FUNCTIONS`` with positional arguments, and
   ``Name``; anything else is refused by name ("attribute access is not
   allowed", "tuples are not allowed", ...);
5. sympy objects are built directly (``sympy.Symbol(name, real=True)``,
   ``sympy.Integer``, ``sympy.Float``, ``sympy.Add``, ...).  Every constant
   sub-expression must be a finite real number in double precision: it is
   evaluated exactly by ``sympy.N`` at 30 and 45 digits, and a value that
   differs between the two (a pole such as ``tan(pi/2)``, a division by an
   exact zero written in radicals) is refused as undefined.  A power is checked
   *before* sympy sees it, so ``9**9**9**9`` or ``10**10**10`` is refused
   instantly instead of being computed.

Everything raises :class:`~gradsolve.problem.errors.ProblemError` with a
1-based line and column pointing at the offending character.
"""

from __future__ import annotations

import ast
import difflib
import io
import keyword
import math
import re
import sys
import tokenize
import unicodedata
from dataclasses import dataclass, field
from typing import Callable, Mapping

import sympy
from sympy.codegen.cfunctions import expm1 as _sympy_expm1
from sympy.core.logic import fuzzy_and
from sympy.codegen.cfunctions import log1p as _sympy_log1p

from .errors import ProblemError, excerpt

__all__ = [
    "MAX_EXPRESSION_CHARS",
    "MAX_DEPTH",
    "MAX_INT_DIGITS",
    "MAX_EXPONENT",
    "MAX_NAME_CHARS",
    "FUNCTIONS",
    "CONSTANTS",
    "FunctionSpec",
    "Origin",
    "ParsedExpression",
    "parse_expression",
    "parse_equation",
    "sigmoid",
    "maximum",
    "minimum",
    "is_valid_name",
    "evaluate_constant",
]

# ----------------------------------------------------------------------------- limits

#: Longest expression accepted, in characters.
MAX_EXPRESSION_CHARS = 10_000
#: Deepest nesting accepted (parentheses, calls, powers, chained signs).
MAX_DEPTH = 100
#: Most digits in an integer literal.
MAX_INT_DIGITS = 100
#: Largest |exponent| of a numeric power applied to a non-constant base.
MAX_EXPONENT = 10_000
#: Most arguments of one min(...) / max(...) call.
MAX_EXTREMUM_ARGS = 64
#: Longest name (unknown or data column).
MAX_NAME_CHARS = 100
#: Largest number of decimal digits an exact constant may grow to (sympy prints
#: integers through str(), which Python caps at 4300 digits).
_MAX_EXACT_DIGITS = 1_000
_MAX_EXACT_BITS = int(_MAX_EXACT_DIGITS / 0.30103)
_UNDEFINED = (sympy.zoo, sympy.nan, sympy.oo, -sympy.oo)
#: Digits at which constant sub-expressions are evaluated; a defined value agrees at both.
_CHECK_DIGITS = (30, 45)
#: Largest decimal exponent a constant power may reach (doubles stop near 308).
_MAX_CONSTANT_LOG10 = 400.0

_NUMBER_RE = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ALLOWED_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_ \t.+-*/^(),="
)
# Python keywords that, next to a name, show the user tried Python syntax.
_SYNTAX_KEYWORDS = frozenset(keyword.kwlist) - {"None", "True", "False"}


def is_valid_name(name: str) -> bool:
    """True when *name* can be an unknown or data column in an expression."""
    return (
        isinstance(name, str)
        and _NAME_RE.fullmatch(name) is not None
        and not name.startswith("__")
        and len(name) <= MAX_NAME_CHARS
    )


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

#: Named constants; a declared unknown or data column of the same name shadows them.
CONSTANTS: dict[str, sympy.Expr] = {"pi": sympy.pi, "e": sympy.E}


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Origin:
    """Where an expression's text sits in its file.

    ``line`` and ``column`` are 1-based and locate the expression's first
    character; ``source_line`` is the whole physical line (for the caret).  When
    ``exact`` is False (e.g. a folded YAML scalar) every error points at the
    expression's start instead of inside it.
    """

    file: str | None = None
    line: int | None = None
    column: int = 1
    source_line: str | None = None
    exact: bool = True


@dataclass
class ParsedExpression:
    """The result of parsing one expression or equation."""

    text: str
    expr: sympy.Expr  # the expression, or the residual lhs - rhs of an equation
    lhs: sympy.Expr | None = None
    rhs: sympy.Expr | None = None
    names: set[str] = field(default_factory=set)  # symbol names used
    constants: set[str] = field(default_factory=set)  # constant names used (pi, e)
    origin: Origin = field(default_factory=Origin)
    sides: tuple[str, str] | None = None  # an equation's left and right text, as written


# ----------------------------------------------------------------------------- the parser


class _Parser:
    def __init__(self, text: str, origin: Origin, shadow: frozenset[str], name_hints: Mapping[str, str] | None = None):
        self.text = text
        self.origin = origin
        self.shadow = shadow
        self.name_hints = dict(name_hints or {})  # function name -> hint when it is used as a bare name
        self.names: dict[str, str] = {}  # placeholder -> user name
        self.numbers: dict[str, tuple[str, int]] = {}  # placeholder -> (literal, position)
        self.used_names: set[str] = set()
        self.used_constants: set[str] = set()
        # constant sub-expression -> (its double value, its real value at each of _CHECK_DIGITS)
        self.constants: dict[sympy.Expr, tuple[float, tuple]] = {}

    # -- errors -------------------------------------------------------------------

    def error(self, message: str, pos: int | None = None, hint: str | None = None) -> ProblemError:
        origin = self.origin
        if pos is None or not origin.exact:
            column = origin.column
        else:
            column = origin.column + max(0, min(pos, len(self.text)))
        return ProblemError(
            message,
            file=origin.file,
            line=origin.line,
            column=column,
            hint=hint,
            source_line=origin.source_line if origin.source_line is not None else self.text,
        )

    # -- stage 1: characters -----------------------------------------------------

    def check_characters(self) -> None:
        text = self.text
        if len(text) > MAX_EXPRESSION_CHARS:
            raise self.error(
                f"expression is too long ({len(text):,} characters; the limit is {MAX_EXPRESSION_CHARS:,})", 0
            )
        for pos, ch in enumerate(text):
            if ch in _ALLOWED_CHARS:
                continue
            message, where, hint = _character_problem(ch, text, pos)
            if ch == ";" and _on_the_command_line(self.origin):
                hint = f"{_command_line_label(self.origin)} takes a single expression: remove the ';'"
            raise self.error(message, where, hint)

    # -- stage 2: parentheses ----------------------------------------------------

    def check_parentheses(self) -> None:
        stack: list[int] = []
        for pos, ch in enumerate(self.text):
            if ch == "(":
                stack.append(pos)
                if len(stack) > MAX_DEPTH:
                    raise self.error(f"expression is nested too deeply (more than {MAX_DEPTH} levels)", pos)
            elif ch == ")":
                if not stack:
                    raise self.error("unmatched ')'", pos)
                stack.pop()
        if stack:
            raise self.error("'(' is never closed", stack[-1], hint="add the missing ')'")

    # -- stage 3: tokens ---------------------------------------------------------

    def tokens(self) -> list[tuple[str, str, int]]:
        """Significant tokens as (kind, text, position); kind is NAME, NUMBER or OP."""
        out: list[tuple[str, str, int]] = []
        try:
            for tok in tokenize.generate_tokens(io.StringIO(self.text).readline):
                if tok.type in (tokenize.NAME, tokenize.NUMBER, tokenize.OP):
                    kind = tokenize.tok_name[tok.type]
                    out.append((kind, tok.string, tok.start[1]))
                elif tok.type in (
                    tokenize.NEWLINE,
                    tokenize.NL,
                    tokenize.INDENT,
                    tokenize.DEDENT,
                    tokenize.ENDMARKER,
                    tokenize.COMMENT,
                ):
                    continue
                else:
                    raise self.error(f"unexpected {excerpt(tok.string)!r}", tok.start[1])
        except (tokenize.TokenError, IndentationError, SyntaxError) as exc:
            raise self.error(f"cannot read the expression ({excerpt(str(exc))})", None) from None
        return out

    def check_tokens(self, tokens: list[tuple[str, str, int]]) -> None:
        prev: tuple[str, str, int] | None = None
        run_of_signs = 0
        for tok in tokens:
            kind, text, pos = tok
            if kind == "NUMBER":
                self.check_number(text, pos)
            elif kind == "NAME":
                if len(text) > MAX_NAME_CHARS:
                    raise self.error(f"name is too long ({len(text)} characters; the limit is {MAX_NAME_CHARS})", pos)
                if text.startswith("__"):
                    raise self.error(f"names starting with '__' are reserved: {excerpt(text)!r}", pos)
            else:
                self.check_operator(text, pos)
            if prev is not None:
                self.check_adjacent(prev, tok)
            # chained signs such as - - - - x nest without parentheses
            if kind == "OP" and text in "+-" and (prev is None or prev[1] in ("(", ",", "+", "-", "*", "/", "**", "^", "=", "==")):
                run_of_signs += 1
                if run_of_signs > MAX_DEPTH:
                    raise self.error(f"too many signs in a row (more than {MAX_DEPTH})", pos)
            else:
                run_of_signs = 0
            prev = tok

    def check_number(self, text: str, pos: int) -> None:
        if _NUMBER_RE.fullmatch(text):
            mantissa = re.split(r"[eE]", text)[0]
            if "." not in text and "e" not in text.lower() and len(mantissa.lstrip("0")) > MAX_INT_DIGITS:
                raise self.error(
                    f"integer literal has too many digits ({len(mantissa.lstrip('0'))}; the limit is {MAX_INT_DIGITS})",
                    pos,
                    hint="write large numbers with an exponent, e.g. 1.5e30",
                )
            if len(text) > MAX_INT_DIGITS + 20:
                raise self.error(f"number literal is too long ({len(text)} characters)", pos)
            return
        low = text.lower()
        if low.endswith("j"):
            raise self.error(f"complex numbers are not supported: {excerpt(text)!r}", pos)
        if "_" in text:
            raise self.error(
                f"digit separators '_' are not allowed in numbers: {excerpt(text)!r}", pos,
                hint=f"write {text.replace('_', '')}",
            )
        if low.startswith(("0x", "0o", "0b")):
            raise self.error(f"only decimal numbers are supported: {excerpt(text)!r}", pos)
        raise self.error(f"invalid number {excerpt(text)!r}", pos)

    def check_operator(self, text: str, pos: int) -> None:
        if text in ("+", "-", "*", "/", "**", "^", "(", ")", ",", "=", "=="):
            return
        if text == ".":
            raise self.error("attribute access ('.') is not allowed", pos)
        if text == "...":
            raise self.error("'...' is not allowed", pos)
        if text == "//":
            raise self.error("'//' (floor division) is not supported", pos, hint="use '/' for division")
        if text.endswith("=") and len(text) > 1:
            raise self.error(f"assignment operator {text!r} is not allowed", pos)
        raise self.error(f"operator {excerpt(text)!r} is not allowed", pos)

    def check_adjacent(self, prev: tuple[str, str, int], cur: tuple[str, str, int]) -> None:
        pkind, ptext, _ = prev
        ckind, ctext, cpos = cur
        ends_operand = pkind in ("NAME", "NUMBER") or ptext == ")"
        starts_operand = ckind in ("NAME", "NUMBER") or ctext == "("
        if not (ends_operand and starts_operand):
            return
        if pkind == "NAME" and ctext == "(":
            return  # a call
        for word in (ptext, ctext):
            if word in _SYNTAX_KEYWORDS and (pkind == "NAME" and ckind == "NAME"):
                raise self.error(
                    f"unexpected {excerpt(ctext)!r} after {excerpt(ptext)!r}: Python syntax such as "
                    f"'{word}' is not part of the expression grammar",
                    cpos,
                    hint="expressions use numbers, names, + - * / ^ **, parentheses and function calls",
                )
        if pkind == "NUMBER" and ckind == "NUMBER":
            if ptext.strip("0") == "" and cpos == prev[2] + len(ptext):
                raise self.error(
                    f"leading zeros are not allowed in numbers: {excerpt(ptext + ctext)!r}", prev[2],
                    hint=f"write {excerpt(ctext)}",
                )
            raise self.error(f"two numbers in a row: {excerpt(ptext)!r} then {excerpt(ctext)!r}", cpos)
        left = "(...)" if ptext == ")" else ptext
        right = "(...)" if ctext == "(" else ctext
        raise self.error(
            "implicit multiplication is not allowed",
            cpos,
            hint=f"write {excerpt(left, 20)}*{excerpt(right, 20)}",
        )

    # -- stage 4: Python's parser on placeholder text -----------------------------

    def placeholder_text(self, tokens: list[tuple[str, str, int]]) -> tuple[str, list[int]]:
        """Token list -> parser text in which names and numbers are placeholders.

        Returns the text and, for every character of it, the position in the
        original expression it came from (for error columns).
        """
        pieces: list[str] = []
        where: list[int] = []
        name_ids: dict[str, str] = {v: k for k, v in self.names.items()}
        for kind, text, pos in tokens:
            if kind == "NAME":
                ph = name_ids.get(text)
                if ph is None:
                    ph = f"_n{len(name_ids)}"
                    name_ids[text] = ph
                    self.names[ph] = text
                piece = ph
            elif kind == "NUMBER":
                piece = f"_c{len(self.numbers)}"
                self.numbers[piece] = (text, pos)
            elif text == "^":
                piece = "**"
            else:
                piece = text
            if pieces:
                pieces.append(" ")
                where.append(pos)
            pieces.append(piece)
            where.extend([pos] * len(piece))
        return "".join(pieces), where

    def parse_side(self, tokens: list[tuple[str, str, int]], empty_message: str, empty_pos: int) -> sympy.Expr:
        if not tokens:
            raise self.error(empty_message, empty_pos)
        end = tokens[-1][2] + len(tokens[-1][1])
        last_kind, last_text, _ = tokens[-1]
        if last_kind == "OP" and last_text != ")":
            raise self.error(
                f"the expression ends unexpectedly after {last_text!r}", end, hint="an operand is missing"
            )
        first_kind, first_text, first_pos = tokens[0]
        if first_kind == "OP" and first_text not in ("(", "+", "-"):
            raise self.error(f"unexpected {first_text!r} at the start", first_pos, hint="an operand is missing")
        source, where = self.placeholder_text(tokens)
        # Long flat chains (a + b + ... with thousands of terms) are deep trees for
        # ast; the walker flattens them iteratively, so only ast's own guard needs
        # room.  The character limit bounds the depth, and deep *nesting* was
        # refused before this point.
        old_limit = sys.getrecursionlimit()
        try:
            sys.setrecursionlimit(max(old_limit, 4 * MAX_EXPRESSION_CHARS))
            tree = ast.parse(source, mode="eval")
        except SyntaxError as exc:
            offset = (exc.offset or 1) - 1
            if offset >= len(source) or exc.msg.startswith("unexpected EOF") or "was never closed" in (exc.msg or ""):
                raise self.error("the expression ends unexpectedly", end, hint="an operand is missing") from None
            pos = where[offset] if offset < len(where) else end
            tok = next((t for t in tokens if t[2] == pos), None)
            shown = tok[1] if tok else self.text[pos : pos + 1]
            raise self.error(f"unexpected {excerpt(shown)!r}", pos) from None
        except (RecursionError, MemoryError):
            raise self.error(
                f"expression is nested too deeply (more than {MAX_DEPTH} levels)", tokens[0][2]
            ) from None
        except ValueError as exc:  # e.g. NUL bytes, which the character scan already refuses
            raise self.error(f"cannot read the expression ({excerpt(str(exc))})", 0) from None
        finally:
            sys.setrecursionlimit(old_limit)
        walker = _Walker(self, where)
        return walker.build(tree)

    # -- driver --------------------------------------------------------------------

    def run(self, equation: bool) -> ParsedExpression:
        self.check_characters()
        if not self.text.strip():
            raise self.error("empty expression", 0)
        self.check_parentheses()
        tokens = self.tokens()
        self.check_tokens(tokens)
        depth = 0
        splits: list[tuple[int, tuple[str, str, int]]] = []
        for i, (kind, text, pos) in enumerate(tokens):
            if text == "(":
                depth += 1
            elif text == ")":
                depth -= 1
            elif kind == "OP" and text in ("=", "=="):
                if depth > 0:
                    raise self.error(
                        f"{text!r} inside parentheses (keyword arguments and comparisons are not allowed)", pos
                    )
                splits.append((i, tokens[i]))
        if not equation:
            if splits:
                raise self.error(
                    "'=' is not allowed here: this is an expression, not an equation", splits[0][1][2]
                )
            expr = self.parse_side(tokens, "empty expression", 0)
            result = ParsedExpression(self.text, expr, origin=self.origin)
        else:
            if not splits:
                raise self.error(
                    "not an equation: no '=' found",
                    0,
                    hint="write 'lhs = rhs'; to minimize an expression use 'minimize: EXPR'",
                )
            if len(splits) > 1:
                raise self.error("more than one '=' in an equation", splits[1][1][2], hint="write one equation per line")
            i, (_, eq_text, eq_pos) = splits[0]
            lhs = self.parse_side(tokens[:i], "the equation has no left-hand side", eq_pos)
            rhs = self.parse_side(tokens[i + 1 :], "the equation has no right-hand side", eq_pos + len(eq_text))
            expr = sympy.Add(lhs, -rhs)
            result = ParsedExpression(self.text, expr, lhs=lhs, rhs=rhs, origin=self.origin,
                                      sides=(self.text[:eq_pos].strip(), self.text[eq_pos + len(eq_text):].strip()))
        if result.expr.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo):
            raise self.error("the expression is undefined (division by zero?)", 0)
        result.names = set(self.used_names)
        result.constants = set(self.used_constants)
        return result


def _on_the_command_line(origin: Origin) -> bool:
    """An expression given as an option (``-y``, ``--model``) or as ``minimize``'s argument (``<expr>``)."""
    file = origin.file or ""
    return file == "<expr>" or (file.startswith("-") and file != "-")


def _command_line_label(origin: Origin) -> str:
    return "minimize" if origin.file == "<expr>" else str(origin.file)


def _character_problem(ch: str, text: str, pos: int) -> tuple[str, int, str | None]:
    code = ord(ch)
    if code >= 128:
        name = unicodedata.name(ch, "unnamed character")
        hint = "type the expression in plain ASCII"
        if unicodedata.category(ch) == "Nd":
            hint = f"write the digit as {unicodedata.digit(ch, '?')}"
        return f"non-ASCII character U+{code:04X} ({name}) is not allowed", pos, hint
    if ch in "\r\n":
        return "line break inside an expression", pos, "write each expression on one line"
    if code < 32 or code == 127:
        return f"control character U+{code:04X} is not allowed", pos, None
    if ch in "'\"":
        return "strings are not allowed", pos, None
    if ch in "[]":
        return "subscripts and lists ('[', ']') are not allowed", pos, None
    if ch in "{}":
        return "braces ('{', '}') are not allowed", pos, None
    if ch == ":":
        if text[pos + 1 : pos + 2] == "=":
            return "assignment expressions (':=') are not allowed", pos, None
        return "':' is not allowed (no lambdas, slices or annotations)", pos, None
    if ch == ";":
        return "';' is not allowed", pos, "write one equation per line"
    if ch == "#":
        return "'#' is not allowed inside an expression", pos, None
    if ch == "\\":
        return "backslashes are not allowed", pos, None
    if ch == "%":
        return "'%' (remainder) is not supported", pos, None
    if ch in "<>!":
        return "comparisons are not allowed", pos, "an equation uses a single '=' (or '==')"
    if ch in "&|~":
        return f"bitwise operator {ch!r} is not allowed", pos, "use '^' or '**' for powers"
    if ch == "@":
        return "'@' is not allowed", pos, None
    return f"character {ch!r} is not part of the expression grammar", pos, None


# ----------------------------------------------------------------------------- AST walk

_REFUSED = {
    ast.Attribute: "attribute access is not allowed",
    ast.Subscript: "subscripts are not allowed",
    ast.Tuple: "tuples are not allowed (a ',' outside a function call?)",
    ast.List: "lists are not allowed",
    ast.Dict: "dicts are not allowed",
    ast.Set: "sets are not allowed",
    ast.Lambda: "lambdas are not allowed",
    ast.NamedExpr: "assignment expressions (':=') are not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "generator expressions are not allowed",
    ast.JoinedStr: "strings are not allowed",
    ast.FormattedValue: "strings are not allowed",
    ast.Compare: "comparisons are not allowed",
    ast.BoolOp: "'and' / 'or' are not allowed",
    ast.IfExp: "conditional expressions are not allowed",
    ast.Starred: "'*' unpacking is not allowed",
    ast.Await: "'await' is not allowed",
    ast.Yield: "'yield' is not allowed",
    ast.YieldFrom: "'yield' is not allowed",
    ast.Slice: "slices are not allowed",
}

_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}


class _Walker:
    """Walks the whitelisted AST and builds sympy objects directly."""

    def __init__(self, parser: _Parser, where: list[int]):
        self.p = parser
        self.where = where

    def pos(self, node: ast.AST) -> int:
        col = getattr(node, "col_offset", 0) or 0
        return self.where[col] if col < len(self.where) else 0

    def error(self, message: str, node: ast.AST, hint: str | None = None) -> ProblemError:
        return self.p.error(message, self.pos(node), hint)

    def build(self, tree: ast.AST) -> sympy.Expr:
        if not isinstance(tree, ast.Expression):
            raise self.error(f"{type(tree).__name__} is not allowed", tree)
        return self.visit(tree.body, 1)

    def visit(self, node: ast.AST, depth: int) -> sympy.Expr:
        if depth > MAX_DEPTH:
            raise self.error(f"expression is nested too deeply (more than {MAX_DEPTH} levels)", node)
        if isinstance(node, ast.BinOp):
            op = type(node.op)
            if op not in _BINOPS:
                raise self.error(f"operator {type(node.op).__name__} is not allowed", node)
            if op in (ast.Add, ast.Sub):
                return self.visit_sum(node, depth)
            if op in (ast.Mult, ast.Div):
                return self.visit_product(node, depth)
            base = self.visit(node.left, depth + 1)
            exponent = self.visit(node.right, depth + 1)
            return self.power(base, exponent, node)
        if isinstance(node, ast.UnaryOp):
            sign = 1
            inner = node
            while isinstance(inner, ast.UnaryOp):
                if isinstance(inner.op, ast.USub):
                    sign = -sign
                elif not isinstance(inner.op, ast.UAdd):
                    what = "'not'" if isinstance(inner.op, ast.Not) else "'~'"
                    raise self.error(f"{what} is not allowed", inner)
                inner = inner.operand
            value = self.visit(inner, depth + 1)
            return self.checked(-value if sign < 0 else value, node)
        if isinstance(node, ast.Call):
            return self.visit_call(node, depth)
        if isinstance(node, ast.Name):
            return self.visit_name(node)
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                what = "strings" if isinstance(value, (str, bytes)) else f"{type(value).__name__} constants"
                raise self.error(f"{what} are not allowed", node)
            return self.checked(sympy.Integer(value) if isinstance(value, int) else sympy.Float(value), node)
        if isinstance(node, ast.Tuple) and not node.elts:
            raise self.error("empty parentheses", node)
        message = _REFUSED.get(type(node), f"{type(node).__name__} is not allowed")
        raise self.error(message, node)

    def visit_sum(self, node: ast.BinOp, depth: int) -> sympy.Expr:
        terms: list[tuple[int, ast.AST]] = []
        cur: ast.AST = node
        while isinstance(cur, ast.BinOp) and isinstance(cur.op, (ast.Add, ast.Sub)):
            terms.append((1 if isinstance(cur.op, ast.Add) else -1, cur.right))
            cur = cur.left
        terms.append((1, cur))
        built = []
        for sign, term in reversed(terms):
            value = self.visit(term, depth + 1)
            built.append(value if sign > 0 else -value)
        return self.checked(sympy.Add(*built), node)

    def visit_product(self, node: ast.BinOp, depth: int) -> sympy.Expr:
        factors: list[tuple[bool, ast.AST]] = []
        cur: ast.AST = node
        while isinstance(cur, ast.BinOp) and isinstance(cur.op, (ast.Mult, ast.Div)):
            factors.append((isinstance(cur.op, ast.Div), cur.right))
            cur = cur.left
        factors.append((False, cur))
        built = []
        for divide, factor in reversed(factors):
            value = self.visit(factor, depth + 1)
            if divide:
                if value.is_zero or (
                    not value.free_symbols and not value.is_Number and self.constant_value(value, factor) == 0.0
                ):
                    raise self.error("division by zero", factor)  # the caret under the divisor
                value = sympy.Pow(value, -1)
            built.append(value)
        return self.checked(sympy.Mul(*built), node)

    def visit_name(self, node: ast.Name) -> sympy.Expr:
        ident = node.id
        if ident in self.p.numbers:
            literal, _ = self.p.numbers[ident]
            value = _number(literal)
            if value.is_infinite or value in (sympy.oo, -sympy.oo):
                raise self.error(
                    f"number {excerpt(literal, 30)!r} is too large for double precision", node
                )
            return self.checked(value, node)
        name = self.p.names.get(ident)
        if name is None:  # cannot happen: every name is a placeholder
            raise self.error("unexpected name", node)
        if name in self.p.shadow:
            self.p.used_names.add(name)
            return sympy.Symbol(name, real=True)
        if name in CONSTANTS:
            self.p.used_constants.add(name)
            return CONSTANTS[name]
        if name in FUNCTIONS:
            raise self.error(
                f"'{name}' is a function; call it with parentheses, e.g. {name}(x)", node, self.p.name_hints.get(name)
            )
        self.p.used_names.add(name)
        return sympy.Symbol(name, real=True)

    def visit_call(self, node: ast.Call, depth: int) -> sympy.Expr:
        func = node.func
        if not isinstance(func, ast.Name) or func.id not in self.p.names:
            raise self.error("only named functions can be called", node)
        name = self.p.names[func.id]
        spec = FUNCTIONS.get(name)
        if spec is None:
            close = difflib.get_close_matches(name.lower(), sorted(FUNCTIONS), n=1, cutoff=0.6)
            listed = "the functions are listed in docs/problem-language.md (Functions)"
            if name.lower() in FUNCTIONS:
                hint = f"did you mean '{name.lower()}'? (function names are lower case)"
            elif close:
                hint = f"did you mean '{close[0]}'?"
            elif name in self.p.shadow or len(name) <= 2:
                # a declared unknown or a column, or a short name (a parameter): most likely a product
                hint = f"to multiply, write {excerpt(name, 20)}*(...); {listed}"
            else:
                hint = listed
            raise self.error(f"unknown function {excerpt(name)!r}", func, hint)
        if node.keywords:
            raise self.error("keyword arguments are not allowed", node)
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise self.error("'*' unpacking is not allowed", arg)
        n = len(node.args)
        if n < spec.min_args or (spec.max_args is not None and n > spec.max_args):
            raise self.error(f"{name}() takes {spec.arity_text()}, got {n}", node)
        args = [self.visit(arg, depth + 1) for arg in node.args]
        if spec.name == "pow":
            return self.power(args[0], args[1], node)
        if spec.name == "log" and len(args) == 2 and args[1].is_number:
            base = self.constant_value(args[1], node)
            if base <= 0 or base == 1:
                raise self.error(f"log base must be positive and not 1, got {base:g}", node)
        if all(not a.free_symbols for a in args) and not all(a.is_Number or a.is_NumberSymbol for a in args):
            # A function of a constant expression: build it unevaluated.  sympy's
            # automatic simplification would query assumptions that re-evaluate
            # the whole constant chain numerically at every level (quadratic in
            # nesting); our own cached constant check below stays linear.
            with sympy.evaluate(False):
                built = spec.build(*args)
            return self.checked(built, node)
        return self.checked(spec.build(*args), node)

    # -- numbers and powers -----------------------------------------------------------

    def constant_value(self, value: sympy.Expr, node: ast.AST) -> float:
        """The double-precision value of a constant expression, or an error.

        The value is computed at two precisions (``_CHECK_DIGITS``): a finite
        real value comes out the same at both, while a pole (``tan(pi/2)``) or
        a division by or logarithm of an exact zero hidden in radicals
        (``1/(sqrt(2) + sqrt(3) - sqrt(5 + 2*sqrt(6)))``) gives values that
        disagree, and is refused as undefined.  Each node is computed from its
        arguments' cached approximations, so a chain of constant calls costs
        one evaluation per node; only a node whose two results disagree is
        evaluated again exactly (``_evaluate_constant``).
        """
        decided = evaluate_constant(value, self.p.constants)
        if isinstance(decided, str):
            raise self.error(decided, node) from None
        return decided

    def checked(self, value: sympy.Expr, node: ast.AST) -> sympy.Expr:
        """Refuse infinities, oversized exact numbers and constants that are not finite real doubles."""
        local = (value, *value.args)
        if any(_is_undefined(part) for part in local):
            raise self.error("the value is undefined here (division by zero?)", node)
        for part in local:
            if part.is_Rational and max(abs(int(part.p)).bit_length(), int(part.q).bit_length()) > _MAX_EXACT_BITS:
                raise self.error("an exact number here has too many digits", node)
            if part.is_Mul or part.is_Add:
                coeff = part.args[0] if part.args else None
                if coeff is not None and coeff.is_Rational and max(
                    abs(int(coeff.p)).bit_length(), int(coeff.q).bit_length()
                ) > _MAX_EXACT_BITS:
                    raise self.error("an exact number here has too many digits", node)
        if not value.free_symbols:
            self.constant_value(value, node)
        else:
            self.check_coefficients(local, node)
            # sympy's own rewriting can create constants the user never wrote, such as
            # log(tan(2)) = log(-tan(2)) + I*pi inside log(tan(2), x): they must be real too.
            for part in value.args:
                if not part.is_Number and not part.is_NumberSymbol and not part.free_symbols:
                    self.constant_value(part, node)
        return value

    def check_coefficients(self, local: tuple, node: ast.AST) -> None:
        """Refuse a numeric factor or term that sympy folded into a non-constant expression and that overflows.

        ``x*1e308*10`` becomes ``1.0e+309*x`` and ``(1e200*x)^2`` becomes
        ``1.0e+400*x**2``: no constant sub-expression overflows, but the folded
        coefficient is infinite in double precision.  sympy folds numbers into
        the node itself or into the first argument of its Mul/Add arguments
        (``2*(1e308*x + 1)`` distributes to ``2.0e+308*x + 2``), so these are the
        places to look.
        """
        for part in local:
            candidates = [part]
            if part.is_Mul or part.is_Add:
                candidates.extend(part.args[:1])
            for number in candidates:
                if number.is_Number and not _finite_double(number):
                    raise self.error(
                        f"the constant {_short_number(number)} here is too large for double precision "
                        "(it overflows to infinity)",
                        node,
                        hint="rescale the problem so that its constants stay below about 1.8e308",
                    )

    def power(self, base: sympy.Expr, exponent: sympy.Expr, node: ast.AST) -> sympy.Expr:
        """Build base**exponent without ever letting sympy compute a huge number."""
        if not exponent.free_symbols:
            e = self.constant_value(exponent, node)
            if not base.free_symbols:
                b = self.constant_value(base, node)
                if b == 0 and e < 0:
                    raise self.error("division by zero (0 raised to a negative power)", node)
                if b not in (0.0, 1.0, -1.0):
                    size = abs(e) * abs(math.log10(abs(b)))
                    if size > _MAX_CONSTANT_LOG10:
                        raise self.error(
                            "constant power is out of range (its result would have about "
                            f"10^{size:.3g} in magnitude or smallness)",
                            node,
                        )
            else:
                if abs(e) > MAX_EXPONENT:
                    raise self.error(f"exponent is too large (|{e:g}| > {MAX_EXPONENT})", node)
                digits = _largest_exact_digits(base)
                if abs(e) * digits > _MAX_EXACT_DIGITS:
                    raise self.error("power would create a number with too many digits", node)
        return self.checked(sympy.Pow(base, exponent), node)


def _is_undefined(value: sympy.Basic) -> bool:
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
        if _is_undefined(value):
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


def _largest_exact_digits(expr: sympy.Expr) -> float:
    """Decimal digits of the largest exact number (integer/rational) inside *expr*."""
    biggest = 0.0
    for atom in expr.atoms(sympy.Rational):
        p, q = int(atom.p), int(atom.q)
        bits = max(abs(p).bit_length(), q.bit_length())
        biggest = max(biggest, bits * 0.30103)
    return biggest


def _finite_double(number: sympy.Expr) -> bool:
    """Whether a sympy number is a finite double (huge Integers/Rationals overflow float())."""
    try:
        return math.isfinite(float(number))
    except (OverflowError, TypeError, ValueError):
        return False


def _short_number(number: sympy.Expr) -> str:
    """A sympy number in a few significant digits (never thousands of digits)."""
    try:
        return sympy.Float(number, 4).__str__().replace("e+", "e")
    except (TypeError, ValueError):  # pragma: no cover - every sympy Number converts
        return "here"


def _number(literal: str) -> sympy.Expr:
    if re.fullmatch(r"[0-9]+", literal):
        return sympy.Integer(int(literal))
    return sympy.Float(float(literal))  # float() of a huge exponent is inf: checked() refuses it


# ----------------------------------------------------------------------------- public API


def parse_expression(
    text: str,
    origin: Origin | None = None,
    *,
    shadow: frozenset[str] | set[str] = frozenset(),
    name_hints: Mapping[str, str] | None = None,
) -> ParsedExpression:
    """Parse one scalar expression.

    ``shadow`` holds the names that are declared unknowns or data columns: they
    are always symbols, even if they are also constant names (``pi``, ``e``).
    ``name_hints`` maps a function name to the hint shown when it is written as
    a bare name (e.g. a data column that cannot be used because of its name).
    Raises ProblemError on anything outside the grammar.
    """
    parser = _Parser(text, origin or Origin(), frozenset(shadow), name_hints)
    return parser.run(equation=False)


def parse_equation(
    text: str,
    origin: Origin | None = None,
    *,
    shadow: frozenset[str] | set[str] = frozenset(),
    name_hints: Mapping[str, str] | None = None,
) -> ParsedExpression:
    """Parse ``lhs = rhs`` (or ``lhs == rhs``); ``.expr`` is the residual lhs - rhs."""
    parser = _Parser(text, origin or Origin(), frozenset(shadow), name_hints)
    return parser.run(equation=True)
