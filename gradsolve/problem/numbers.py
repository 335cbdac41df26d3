"""How a number is written, in the problem language and in every option that takes one.

ASCII digits only, no digit-group underscores: Python's float() also reads
``1_000``, ``٣`` (an Arabic-Indic three) and full-width digits, which the problem
language refuses, so ``--init x=1_000`` must be refused too.  Imports nothing
heavy (the CLI's option types use it on ``--help``'s path).

>>> bool(NUMBER.fullmatch("1.5e-3")), bool(SIGNED_NUMBER.fullmatch("-2")), bool(SIGNED_NUMBER.fullmatch("1_000"))
(True, True, False)
"""
from __future__ import annotations

import re

__all__ = ["NUMBER", "SIGNED_NUMBER", "INTEGER"]

#: An unsigned literal: digits with an optional point and exponent (``12``, ``1.``, ``.5``, ``3e-8``).
NUMBER = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
#: An option's number: the literal with an optional sign, and inf or nan (refused by the caller as not finite).
SIGNED_NUMBER = re.compile(r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf(?:inity)?|nan)",
                           re.ASCII | re.IGNORECASE)
#: An option's whole number: ASCII digits with an optional sign.
INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)
