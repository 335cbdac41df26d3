"""The last stage of the grammar: the parser's checked Python AST -> a sympy expression.

``SympyBuilder`` walks the AST that ``ast.parse`` made of the placeholder text
(grammar.py), accepts only ``Expression``, ``BinOp`` (``+ - * / **``),
``UnaryOp`` (``-`` ``+``), ``Call`` of a name from ``FUNCTIONS`` and ``Name``,
refuses anything else by name, and builds sympy objects directly.  Every
constant sub-expression must be a finite real double
(``constants.evaluate_constant``), and a power is checked before sympy sees
it, so ``9**9**9**9`` is refused instead of computed.
"""

from __future__ import annotations

import ast
import difflib
import math
import re

import sympy

from .constants import CONSTANTS, evaluate_constant, is_undefined
from .errors import ProblemError, excerpt
from .functions import FUNCTIONS
from .limits import MAX_DEPTH, MAX_EXPONENT

__all__ = ["SympyBuilder"]

#: Largest number of decimal digits an exact constant may grow to (sympy prints
#: integers through str(), which Python caps at 4300 digits).
_MAX_EXACT_DIGITS = 1_000
_MAX_EXACT_BITS = int(_MAX_EXACT_DIGITS / 0.30103)
#: Largest decimal exponent a constant power may reach (doubles stop near 308).
_MAX_CONSTANT_LOG10 = 400.0


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


class SympyBuilder:
    """Walks the whitelisted AST and builds sympy objects directly.

    *parser* is the grammar's parser of this expression: the builder reads its
    placeholders (``names``, ``numbers``), ``shadow`` and ``name_hints``, records
    the names and constants used, caches constant values in ``constants``, and
    raises through its ``error``.  *where* maps each character of the parsed
    text to its position in the expression as written.
    """

    def __init__(self, parser, where: list[int]):
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

        The value is computed at two precisions (30 and 45 digits): a finite
        real value comes out the same at both, while a pole (``tan(pi/2)``) or
        a division by or logarithm of an exact zero hidden in radicals
        (``1/(sqrt(2) + sqrt(3) - sqrt(5 + 2*sqrt(6)))``) gives values that
        disagree, and is refused as undefined.  Each node is computed from its
        arguments' cached approximations, so a chain of constant calls costs
        one evaluation per node; only a node whose two results disagree is
        evaluated again exactly (``constants.evaluate_constant``).
        """
        decided = evaluate_constant(value, self.p.constants)
        if isinstance(decided, str):
            raise self.error(decided, node) from None
        return decided

    def checked(self, value: sympy.Expr, node: ast.AST) -> sympy.Expr:
        """Refuse infinities, oversized exact numbers and constants that are not finite real doubles."""
        local = (value, *value.args)
        if any(is_undefined(part) for part in local):
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
