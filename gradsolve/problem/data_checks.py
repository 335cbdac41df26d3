"""The checks both data-table readers make, written once.

``data.read_columns`` reads a problem file's ``data:`` (CSV, comma, header
line required); ``table.open_table`` reads ``gradsolve fit``'s data (CSV/TSV
with a sniffed delimiter and header, Parquet, standard input).  They agree on
what a data file must be, what a number cell is, that header names are present
and distinct, how a bad cell is reported ("row N, column 'C': ..." at the
file's physical line) and what is kept of pyarrow's error text.  Each reader
keeps its own words where they differ.
"""

from __future__ import annotations

import os
import re
import stat
from typing import Iterable

from .errors import ProblemError, excerpt

__all__ = [
    "NUMBER_CELL",
    "regular_file_size",
    "check_header_names",
    "not_a_number_message",
    "cell_error",
    "line_of_row",
    "arrow_error_parts",
]

#: A number cell: a decimal number with an optional sign, spaces around it allowed.
NUMBER_CELL = re.compile(r"\s*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\s*")


def regular_file_size(path: str, what: str = "data file") -> int:
    """The size in bytes of the `what` at *path*; ProblemError when it is missing or not a regular file.

    Checked with stat before anything opens it: opening a FIFO waits for a writer
    forever, and a device such as /dev/zero never ends.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ProblemError(f"{what} not found: {excerpt(path)!r}", file=path) from None
    except OSError as exc:
        raise ProblemError(f"cannot read {what}: {excerpt(exc.strerror or str(exc))}", file=path) from None
    if not stat.S_ISREG(info.st_mode):
        raise ProblemError(f"{what} is {_kind(info.st_mode)}, not a regular file: {excerpt(path)!r}", file=path,
                           hint="give a regular file" + (", or - for standard input" if what == "problem file" else ""))
    return info.st_size


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a plain file"


def check_header_names(names: Iterable[str], file: str, *, empty_message: str, empty_hint: str | None = None) -> None:
    """Refuse an empty header name (with the reader's *empty_message*) or a repeated one, at line 1."""
    seen: set[str] = set()
    for name in names:
        if not name:
            raise ProblemError(empty_message, file=file, line=1, hint=empty_hint)
        if name in seen:
            raise ProblemError(f"column {excerpt(name, 30)!r} appears twice in the header", file=file, line=1)
        seen.add(name)


def not_a_number_message(cell: str | None) -> str:
    """What is wrong with a cell that is not a number: it is missing (empty), or its text is quoted."""
    if cell is None or not cell.strip():
        return "missing value"
    return f"{excerpt(cell, 30)!r} is not a number"


def cell_error(row: int, column: str, message: str, *, file: str, line: int | None,
               hint: str | None = None) -> ProblemError:
    """The error about one cell: data row *row* (0-based, shown 1-based) of the column named *column*."""
    return ProblemError(f"row {row + 1}, column {excerpt(column, 30)!r}: {message}", file=file, line=line, hint=hint)


def line_of_row(lines: Iterable[bytes], row: int, has_header: bool = True) -> int | None:
    """Physical line (1-based) of data row *row* (0-based) among the file's *lines*; pyarrow skips empty lines."""
    seen = -1 if has_header else 0
    for number, raw in enumerate(lines, start=1):
        if not raw.strip(b"\r\n"):
            continue
        if seen == row:
            return number
        seen += 1
    return None


def arrow_error_parts(exc: Exception) -> tuple[str, int | None, bool]:
    """pyarrow's error as (its first line, the file line it names or None, whether a row has the wrong cell count).

    For a wrong cell count the first line is cut to pyarrow's counts: pyarrow
    quotes the whole offending row after "Expected N columns, got M:", and a
    row is the file's content (it may hold secrets).
    """
    text = str(exc)
    first = text.splitlines()[0] if text else type(exc).__name__
    match = re.search(r"[Rr]ow #(\d+)", text)
    line = int(match.group(1)) if match else None
    counts = re.search(r"Expected \d+ columns?, got \d+", first)
    if counts:
        first = counts.group(0)
    return first, line, counts is not None
