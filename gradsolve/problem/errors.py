"""Diagnostics for problem files: one exception class, ``ProblemError``.

A ``ProblemError`` carries one or more ``Issue`` records (file, 1-based line and
column, message, hint, and the source line the column points into).  Its string
form is compiler-like::

    problems/bad.yaml:7:12: error: unknown function 'sinn'
        - sinn(x) + y = 2
          ^
    hint: did you mean 'sin'?

Nothing from the user's input is ever printed raw: excerpts are cut to a short
window and every non-printable character (NUL, ESC, RTL override, ...) is shown
as an escape such as ``\\x1b`` or ``\\u202e``.  Escaping is idempotent (a
backslash is kept as it is), so text escaped once can be escaped again when the
message is formatted without growing backslashes the user never wrote.

This module imports nothing heavy (no sympy, no numpy) so that the CLI can catch
``ProblemError`` without paying for the parser.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Issue", "ProblemError", "escape", "excerpt", "quoted", "EXCERPT_CHARS", "MAX_LISTED_ERRORS"]

#: Longest excerpt of user input quoted in a message or shown under an error.
EXCERPT_CHARS = 60
#: Most issues written out by ``ProblemError.format``; the rest are counted ("... and N more errors").
MAX_LISTED_ERRORS = 20


def escape(text: str) -> str:
    """Return *text* with every non-printable character written as an escape.

    Printable characters (including printable non-ASCII letters) are kept;
    control characters, format characters (bidi overrides, zero-width space),
    line separators and surrogates become ``\\xNN`` / ``\\uNNNN`` / ``\\UNNNNNNNN``.
    Backslashes are kept as written, so ``escape(escape(t)) == escape(t)``:
    a message may be escaped at every layer it passes through and the user
    still sees their own text, not doubled backslashes.
    """
    out = []
    for ch in str(text):
        if ch.isprintable():
            out.append(ch)
        else:
            code = ord(ch)
            if code < 0x100:
                out.append(f"\\x{code:02x}")
            elif code < 0x10000:
                out.append(f"\\u{code:04x}")
            else:
                out.append(f"\\U{code:08x}")
    return "".join(out)


class _Excerpt(str):
    """An already escaped excerpt; its ``repr`` quotes it without escaping it a second time.

    Messages are written ``f"unknown key {excerpt(key)!r}"``: Python's own
    ``repr`` would double every backslash of the escaped text (``'a\\\\x1b'``
    for a key holding ESC), so the user would see backslashes they never typed.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        text = str(self)
        return f'"{text}"' if "'" in text and '"' not in text else f"'{text}'"


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """A short, escaped excerpt of *text* for quoting inside a message (``{excerpt(t)!r}`` quotes it)."""
    text = str(text)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return _Excerpt(escape(text))


def quoted(text: str, limit: int = EXCERPT_CHARS) -> str:
    """*text* escaped, cut and in quotes, as ``repr`` would show it but without doubled backslashes."""
    return repr(excerpt(text, limit))


def _window(line: str, column: int | None, width: int = EXCERPT_CHARS) -> tuple[str, int | None]:
    """Cut *line* to about *width* characters around 1-based *column*.

    Returns the escaped window and the 0-based caret position inside it (or
    None when there is no column).  Escapes widen characters, so the caret
    position is computed on the escaped text.
    """
    if column is None:
        start = 0
    else:
        start = max(0, min(column - 1 - width // 2, len(line) - width))
    end = min(len(line), start + width)
    prefix = "..." if start > 0 else ""
    suffix = "..." if end < len(line) else ""
    shown = prefix + escape(line[start:end]) + suffix
    if column is None:
        return shown, None
    caret = len(prefix) + len(escape(line[start : max(start, column - 1)]))
    return shown, caret


@dataclass(frozen=True)
class Issue:
    """One diagnostic: where (file, 1-based line/column), what, and a hint."""

    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None
    hint: str | None = None
    source_line: str | None = None

    def location(self) -> str:
        parts = [escape(self.file or "<input>")]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)

    def format(self) -> str:
        lines = [f"{self.location()}: error: {escape(self.message)}"]
        if self.source_line is not None and self.source_line.strip():
            shown, caret = _window(self.source_line, self.column)
            lines.append("    " + shown)
            if caret is not None:
                lines.append("    " + " " * caret + "^")
        if self.hint:
            lines.append(f"hint: {escape(self.hint)}")
        return "\n".join(lines)


class ProblemError(Exception):
    """The one error type raised for anything wrong with a problem.

    ``issues`` lists every diagnostic found (a file with several mistakes
    reports them all; the text shows the first ``MAX_LISTED_ERRORS``); ``file``, ``line``, ``column``, ``message``, ``hint``
    describe the first one.  ``str(err)`` / ``err.format()`` give the
    compiler-style text for all issues.
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
        hint: str | None = None,
        source_line: str | None = None,
        issues: list[Issue] | None = None,
    ) -> None:
        collected: list[Issue] = []
        if message is not None:
            collected.append(Issue(message, file, line, column, hint, source_line))
        collected.extend(issues or [])
        if not collected:
            raise ValueError("ProblemError needs a message or issues")
        self.issues: list[Issue] = collected
        first = collected[0]
        self.message = first.message
        self.file = first.file
        self.line = first.line
        self.column = first.column
        self.hint = first.hint
        self.source_line = first.source_line
        super().__init__(self.format())

    def format(self) -> str:
        """Every issue in compiler style; past ``MAX_LISTED_ERRORS`` the rest are only counted."""
        shown = self.issues[:MAX_LISTED_ERRORS]
        text = "\n".join(issue.format() for issue in shown)
        hidden = len(self.issues) - len(shown)
        if hidden:
            text += f"\n... and {hidden:,} more error{'s' if hidden != 1 else ''}"
        if len(self.issues) > 1:
            text += f"\n{len(self.issues):,} errors"
        return text

    def __str__(self) -> str:
        return self.format()
