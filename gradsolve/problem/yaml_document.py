"""A YAML document read safely, with the file location of every node.

``YamlDocument`` composes the document with the safe loader only, after an
event scan that refuses aliases (``*ref``: no "billion laughs"), explicit tags
(``!!python/...``) and documents with too many nodes or too deep a nesting.
Its readers (``scalar``, ``mapping``, ``number``, ``expression_text``) turn
each mistake into an :class:`~gradsolve.problem.errors.Issue` at its place:
unknown keys get a "did you mean" hint, and numbers are read as written with
the grammar's number rules, never YAML 1.1's (``012`` is not octal 10, ``1:30``
is not 90, ``yes`` is not a number).  files.py reads a problem's keys with it.
"""

from __future__ import annotations

import difflib
import math
import re

from .errors import Issue, ProblemError, excerpt
from .grammar import Origin, parse_expression

__all__ = ["YamlDocument", "did_you_mean", "MAX_YAML_EVENTS", "MAX_YAML_DEPTH"]

#: Most YAML parser events (nodes, roughly) in one problem file.
MAX_YAML_EVENTS = 50_000
#: Deepest YAML nesting (mappings/lists inside each other) in a problem file.
MAX_YAML_DEPTH = 20
# YAML 1.1 number forms the grammar does not share: base 60 (1:30 is 90) and .inf / .nan.
_SEXAGESIMAL = re.compile(r"[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?")
_YAML_SPECIAL_FLOAT = re.compile(r"[-+]?\.(?:inf|Inf|INF|nan|NaN|NAN)")


def did_you_mean(word: str, choices) -> str | None:
    """The hint "did you mean 'choice'?" for the closest of *choices* to *word*, or None."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


class YamlDocument:
    """One YAML document: its text, its lines for locations, and the issues found reading it."""

    def __init__(self, text: str, filename: str):
        self.text = text
        self.filename = filename
        self.lines = text.split("\n")
        self.issues: list[Issue] = []
        self._constructor = None

    # -- locations ----------------------------------------------------------------

    def line_text(self, index: int) -> str | None:
        return self.lines[index] if 0 <= index < len(self.lines) else None

    def node_origin(self, node) -> Origin:
        mark = node.start_mark
        return Origin(self.filename, mark.line + 1, mark.column + 1, self.line_text(mark.line))

    def issue(self, node, message: str, hint: str | None = None) -> None:
        origin = self.node_origin(node) if node is not None else Origin(self.filename, None, 1, None)
        self.issues.append(Issue(message, origin.file, origin.line, origin.column, hint, origin.source_line))

    def scalar_origin(self, node, value: str) -> Origin:
        """Origin of the first character of a scalar's value (exact when provable)."""
        start, end = node.start_mark, node.end_mark
        style = node.style
        if style in ('"', "'"):
            offset = start.index + 1
            if start.line == end.line and self.text[offset : offset + len(value)] == value:
                return Origin(self.filename, start.line + 1, start.column + 2, self.line_text(start.line))
        elif style in ("|", ">"):
            stripped = value.rstrip("\n")
            if "\n" not in stripped:
                below = self.line_text(start.line + 1)
                if below is not None and below.strip() == stripped.strip():
                    col = len(below) - len(below.lstrip())
                    return Origin(self.filename, start.line + 2, col + 1, below)
        elif start.line == end.line and self.text[start.index : start.index + len(value)] == value:
            return Origin(self.filename, start.line + 1, start.column + 1, self.line_text(start.line))
        origin = self.node_origin(node)
        return Origin(origin.file, origin.line, origin.column, origin.source_line, exact=False)

    # -- loading --------------------------------------------------------------------

    def compose(self):
        import yaml

        # libyaml's safe loader when present (same safety, ~20x faster); else PyYAML's.
        loader_class = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader
        try:
            count = depth = 0
            for event in yaml.parse(self.text, Loader=loader_class):
                count += 1
                if count > MAX_YAML_EVENTS:
                    raise ProblemError(f"YAML document is too large (more than {MAX_YAML_EVENTS:,} nodes)", file=self.filename)
                if isinstance(event, yaml.CollectionStartEvent):
                    depth += 1
                    if depth > MAX_YAML_DEPTH:
                        mark = event.start_mark
                        raise ProblemError(
                            f"YAML document is nested too deeply (more than {MAX_YAML_DEPTH} levels)",
                            file=self.filename, line=mark.line + 1, column=mark.column + 1,
                            source_line=self.line_text(mark.line),
                        )
                elif isinstance(event, yaml.CollectionEndEvent):
                    depth -= 1
                if isinstance(event, yaml.AliasEvent):
                    mark = event.start_mark
                    raise ProblemError(
                        f"YAML aliases ('*{excerpt(event.anchor or '', 30)}') are not allowed in problem files",
                        file=self.filename, line=mark.line + 1, column=mark.column + 1,
                        source_line=self.line_text(mark.line), hint="write the value out in full",
                    )
                tag = getattr(event, "tag", None)
                if tag is not None and not isinstance(event, yaml.DocumentStartEvent):
                    mark = event.start_mark
                    raise ProblemError(
                        f"YAML tags ({excerpt(tag, 50)!r}) are not allowed in problem files",
                        file=self.filename, line=mark.line + 1, column=mark.column + 1,
                        source_line=self.line_text(mark.line),
                    )
            loader = loader_class(self.text)
            try:
                node = loader.get_single_node()
            finally:
                loader.dispose()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            message = " ".join(str(part) for part in (exc.context, exc.problem) if part)
            raise ProblemError(
                f"invalid YAML: {excerpt(message, 120)}",
                file=self.filename,
                line=mark.line + 1 if mark else None,
                column=mark.column + 1 if mark else None,
                source_line=self.line_text(mark.line) if mark else None,
            ) from None
        except yaml.reader.ReaderError as exc:  # a character YAML refuses (NUL, other controls): it has a position
            position = exc.position if isinstance(exc.position, int) else None
            character = exc.character
            what = f"U+{character:04X}" if isinstance(character, int) else excerpt(str(character), 10)
            if position is None or not 0 <= position <= len(self.text):
                raise ProblemError(f"invalid YAML: character {what} is not allowed", file=self.filename) from None
            line = self.text.count("\n", 0, position)
            column = position - (self.text.rfind("\n", 0, position) + 1) + 1
            control = isinstance(character, int) and (character < 32 or 127 <= character < 160)
            message = f"{'control ' if control else ''}character {what} is not allowed"
            raise ProblemError(
                f"invalid YAML: {message}",
                file=self.filename, line=line + 1, column=column, source_line=self.line_text(line),
                hint="remove it; problem files are plain text",
            ) from None
        except yaml.YAMLError as exc:
            raise ProblemError(f"invalid YAML: {excerpt(str(exc), 120)}", file=self.filename) from None
        except RecursionError:
            raise ProblemError("YAML document is nested too deeply", file=self.filename) from None
        return node

    def scalar(self, node):
        """The Python value of a scalar node (str, int, float, bool or None)."""
        import yaml

        if not isinstance(node, yaml.ScalarNode):
            return node  # caller checks
        if self._constructor is None:
            self._constructor = yaml.SafeLoader("")
        try:
            return self._constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self.issue(node, f"invalid value: {excerpt(str(exc), 80)}")
            return None

    def mapping(self, node, what: str, keys: tuple[str, ...]) -> list[tuple[str, object, object]]:
        """(key, key node, value node) of a mapping node; unknown/duplicate keys are issues."""
        import yaml

        if not isinstance(node, yaml.MappingNode):
            self.issue(node, f"{what} must be a mapping (key: value lines)")
            return []
        out = []
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = self.scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                self.issue(key_node, f"keys in {what} must be names")
                continue
            if key in seen:
                self.issue(key_node, f"key {excerpt(key, 40)!r} appears twice in {what}")
                continue
            seen.add(key)
            if keys and key not in keys:
                self.issue(
                    key_node,
                    f"unknown key {excerpt(key, 40)!r} in {what}",
                    did_you_mean(key, keys) or f"allowed keys: {', '.join(keys)}",
                )
                continue
            out.append((key, key_node, value_node))
        return out

    def number(self, node, what: str, *, integer: bool = False, minimum: float | None = None, strict: bool = False,
               maximum: float | None = None):
        """A finite number from a scalar node; strings are parsed as constant expressions (``1e-3``, ``pi/4``)."""
        import yaml

        if not isinstance(node, yaml.ScalarNode):
            self.issue(node, f"{what} must be a number")
            return None
        value = self.scalar(node)
        if isinstance(value, bool) or value is None:
            hint = None
            if isinstance(value, bool) and not node.style:
                hint = f"YAML reads {excerpt(node.value, 10)} as {'true' if value else 'false'}; write a number"
            self.issue(node, f"{what} must be a number, got {excerpt(node.value, 30)!r}", hint)
            return None
        # The text as written goes through the grammar's number rules, never YAML 1.1's own
        # (which reads 012 as octal 10, 1:30 as 90 and 1_000 as 1000).
        text = node.value
        yaml_reading = value if isinstance(value, (int, float)) and not node.style else None
        if _SEXAGESIMAL.fullmatch(text.strip()):
            reading = f" (YAML 1.1 would read it as the base-60 number {yaml_reading:g})" if yaml_reading is not None else ""
            head, *rest = text.strip().replace("_", "").split(":")
            fraction = abs(float(head)) + sum(float(part) / 60.0 ** k for k, part in enumerate(rest, start=1))
            fraction = -fraction if head.startswith("-") else fraction
            self.issue(node, f"{what} must be a decimal number, got {excerpt(text, 30)!r}{reading}",
                       f"write a decimal number, e.g. {fraction:.10g} for {excerpt(text.strip(), 30)} read as "
                       "units and sixtieths")
            return None
        if _YAML_SPECIAL_FLOAT.fullmatch(text.strip()):
            self.issue(node, f"{what} must be a finite number, got {excerpt(text, 30)!r}")
            return None
        try:
            parsed = parse_expression(text, self.scalar_origin(node, text))
        except ProblemError as exc:
            for issue in exc.issues:
                if issue.message.startswith("leading zeros") and isinstance(yaml_reading, int):
                    digits = text.strip().lstrip("+-").lstrip("0") or "0"
                    issue = Issue(issue.message, issue.file, issue.line, issue.column,
                                  f"write {excerpt(digits, 30)} (YAML 1.1 would read {excerpt(text.strip(), 30)} "
                                  f"as the octal number {yaml_reading})", issue.source_line)
                self.issues.append(issue)
            return None
        if parsed.names:
            self.issue(node, f"{what} must be a number, not an expression in {', '.join(sorted(parsed.names))}")
            return None
        value = int(parsed.expr) if parsed.expr.is_Integer else float(parsed.expr.evalf(17))
        if isinstance(value, int) and not integer:
            value = float(value)
        if isinstance(value, float) and not math.isfinite(value):
            self.issue(node, f"{what} must be a finite number")
            return None
        if integer:
            if isinstance(value, float):
                if not value.is_integer():
                    self.issue(node, f"{what} must be a whole number")
                    return None
                value = int(value)
        if minimum is not None and (value < minimum or (strict and value == minimum)):
            relation = ">" if strict else ">="
            self.issue(node, f"{what} must be {relation} {minimum:g}")
            return None
        if maximum is not None and value > maximum:
            self.issue(node, f"{what} must be at most {maximum:g}")
            return None
        return value

    def expression_list(self, node, key: str) -> list[tuple[str, Origin]]:
        import yaml

        nodes = [node] if isinstance(node, yaml.ScalarNode) else None
        if isinstance(node, yaml.SequenceNode):
            nodes = list(node.value)
        if nodes is None:
            self.issue(node, f"'{key}' must be a list of expressions (one '- ...' line each)")
            return []
        out = []
        for item in nodes:
            text = self.expression_text(item, key)
            if text is not None:
                out.append(text)
        return out

    def expression_text(self, node, key: str) -> tuple[str, Origin] | None:
        import yaml

        if not isinstance(node, yaml.ScalarNode):
            self.issue(node, f"each entry of '{key}' must be an expression written as text")
            return None
        value = self.scalar(node)
        if isinstance(value, bool) or value is None:
            self.issue(node, f"each entry of '{key}' must be an expression, got {excerpt(node.value, 30)!r}")
            return None
        text = node.value.rstrip("\n")  # the scalar's text as written (also for numbers like 0)
        return text, self.scalar_origin(node, text)
