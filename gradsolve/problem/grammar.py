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

Stages 1 to 4 are here; the AST walk of stages 4 and 5 is
``sympy_builder.SympyBuilder``.  The callable names are ``functions.FUNCTIONS``,
the constant names ``constants.CONSTANTS``, and the size limits are in ``limits``.
"""

from __future__ import annotations

import ast
import io
import keyword
import re
import sys
import tokenize
import unicodedata
from dataclasses import dataclass, field
from typing import Mapping

import sympy

from .errors import ProblemError, excerpt
from .limits import MAX_DEPTH, MAX_EXPONENT, MAX_EXPRESSION_CHARS, MAX_INT_DIGITS, MAX_NAME_CHARS
from .numbers import NUMBER
from .sympy_builder import SympyBuilder

# These live in constants.py and functions.py; imported here so that
# `from gradsolve.problem.grammar import FUNCTIONS, evaluate_constant, ...` keeps working.
from .constants import CONSTANTS, evaluate_constant
from .functions import FUNCTIONS, FunctionSpec, maximum, minimum, sigmoid

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

# ----------------------------------------------------------------------------- names and characters

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
        # constant sub-expression -> (its double value, its real values): constants.evaluate_constant's cache
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
        if NUMBER.fullmatch(text):
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
        builder = SympyBuilder(self, where)
        return builder.build(tree)

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
