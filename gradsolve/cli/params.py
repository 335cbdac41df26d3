"""The command line's option types: numbers written as in the problem language, checked where click reads them.

Each refuses a bad value with a one-line message naming the option and an example (``--tol: '0.5' must be at
most 0.01 (for example --tol 1e-10)``).
"""
from __future__ import annotations

import math

import click

from gradsolve.problem.numbers import INTEGER, SIGNED_NUMBER

__all__ = ["InitType", "PositiveFloat", "WholeNumber", "quote"]


class InitType(click.ParamType):
    """NAME=VALUE for --init."""

    name = "NAME=VALUE"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        name, sep, number = str(value).partition("=")
        if not sep or not name.strip():
            self.fail(f"{quote(value)} is not NAME=VALUE (for example --init x=1.5)", param, ctx)
        try:
            if not SIGNED_NUMBER.fullmatch(number.strip()):  # float() also reads 1_000 and non-ASCII digits
                raise ValueError(number)
            parsed = float(number)
        except ValueError:
            self.fail(f"{quote(number)} in {quote(value)} is not a number (for example --init x=1.5)", param, ctx)
        if not math.isfinite(parsed):
            self.fail(f"{quote(number)} in {quote(value)} is not a finite number (for example --init x=1.5)",
                      param, ctx)
        return name.strip(), parsed


class PositiveFloat(click.ParamType):
    """A finite number > 0 (or >= 0 with allow_zero): nan and inf are refused, not compared."""

    name = "FLOAT"

    def __init__(self, allow_zero=False, example="1e-3", maximum=None):
        self.allow_zero = allow_zero
        self.example = example
        self.maximum = maximum

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            return value
        try:
            if not SIGNED_NUMBER.fullmatch(str(value).strip()):
                raise ValueError(value)
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{quote(value)} is not a number (for example {_option_example(param, self.example)})",
                      param, ctx)
        if not math.isfinite(number):
            self.fail(f"{quote(value)} is not a finite number (for example {_option_example(param, self.example)})",
                      param, ctx)
        if number < 0 or (number == 0 and not self.allow_zero):
            self.fail(f"{quote(value)} must be {'non-negative' if self.allow_zero else 'positive'} "
                      f"(for example {_option_example(param, self.example)})", param, ctx)
        if self.maximum is not None and number > self.maximum:
            self.fail(f"{quote(value)} must be at most {self.maximum:g} (for example "
                      f"{_option_example(param, self.example)})", param, ctx)
        return number


class WholeNumber(click.ParamType):
    """An integer within [minimum, maximum]; '1.5' and '1e3' are refused with the range in the message."""

    name = "N"

    def __init__(self, minimum=1, maximum=None):
        self.minimum, self.maximum = minimum, maximum

    def convert(self, value, param, ctx):
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            try:
                if not INTEGER.fullmatch(str(value).strip()):
                    raise ValueError(value)
                number = int(str(value).strip(), 10)
            except ValueError:
                self.fail(f"{quote(value)} is not a whole number ({self._range()})", param, ctx)
        if number < self.minimum or (self.maximum is not None and number > self.maximum):
            self.fail(f"{quote(value)} is out of range ({self._range()})", param, ctx)
        return number

    def _range(self) -> str:
        if self.maximum is None:
            return f"at least {self.minimum}"
        return f"from {self.minimum:,} to {self.maximum:,}"


def _option_example(param, example) -> str:
    return f"{param.opts[0]} {example}" if param is not None and getattr(param, "opts", None) else example


def quote(value) -> str:
    """User text for a one-line message: in quotes, control characters escaped, backslashes as typed."""
    from gradsolve.problem.errors import quoted

    return quoted(str(value))
