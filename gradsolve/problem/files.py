"""Problem files: YAML (``.yaml``/``.yml``) and plain text (anything else).

Public entry points (all raise ProblemError, and only ProblemError, for bad input):

* ``from_file(path, allow_data_outside=False, *, init=None, seed=None, stream=None, format=None)``
* ``from_text(text, filename="<text>", *, init=None, seed=None)``
* ``from_yaml_text(text, filename="<yaml>", *, base_dir=None, allow_data_outside=False, init=None, seed=None)``

YAML is read with the safe loader only, after an event scan that refuses
aliases (``*ref``: no "billion laughs"), explicit tags (``!!python/...``) and
documents with too many nodes.  Every key is checked (a typo is an error with a
"did you mean" hint) and every expression keeps its line and column in the file.

Numbers in YAML (``init``, ``lr``, ``steps``, ...) are read as written with the
grammar's number rules, never YAML 1.1's (``012`` is not octal 10, ``1:30`` is
not 90, ``yes`` is not a number): each such value is an error at its place.

A problem file is not a way to read other files: ``data`` paths are relative to
the problem file's folder and must resolve (symbolic links followed) inside it,
unless ``allow_data_outside`` (CLI ``--allow-data-outside``) is set.  Data-file
errors point at the ``data:`` value or name the data file as written (never its
absolute path), and quote at most ``errors.EXCERPT_CHARS`` of it.

The safe YAML reading and its locations are ``yaml_document.YamlDocument``;
this module reads a problem's keys with it.
"""

from __future__ import annotations

import os
import re
from typing import IO, Mapping

from .data_checks import regular_file_size
from .errors import EXCERPT_CHARS, Issue, ProblemError, excerpt
from .functions import FUNCTIONS
from .grammar import Origin, is_valid_name
from .limits import MAX_TOL
from .settings import OPTIMIZERS
from .yaml_document import MAX_YAML_DEPTH, MAX_YAML_EVENTS, YamlDocument, did_you_mean

__all__ = [
    "from_file",
    "from_text",
    "from_yaml_text",
    "resolve_data_path",
    "MAX_FILE_BYTES",
    "MAX_YAML_EVENTS",
    "MAX_YAML_DEPTH",
    "TOP_LEVEL_KEYS",
    "SOLVER_KEYS",
    "UNKNOWN_KEYS",
]

#: Largest problem file accepted (bytes).
MAX_FILE_BYTES = 2 * 1024 * 1024

TOP_LEVEL_KEYS = ("name", "description", "unknowns", "equations", "minimize", "loss", "residuals", "data", "solver")
SOLVER_KEYS = ("optimizer", "lr", "steps", "tol", "seed")
UNKNOWN_KEYS = ("init", "min", "max")
_YAML_SUFFIXES = (".yaml", ".yml")
_TEXT_MINIMIZE = re.compile(r"^(\s*)(minimize|loss)\s*:")


# ----------------------------------------------------------------------------- entry points


def from_file(
    path: str | os.PathLike,
    allow_data_outside: bool = False,
    *,
    init: Mapping[str, float] | None = None,
    seed: int | None = None,
    stream: IO | None = None,
    format: str | None = None,
):
    """Read a problem file.  ``path == "-"`` reads *stream* (the CLI passes ``sys.stdin``).

    *format* is ``"yaml"``, ``"text"`` or None (by extension: ``.yaml``/``.yml``
    is YAML, anything else text; for ``-``, YAML when a line starts with a
    top-level key such as ``equations:`` or ``unknowns:``, else text).
    """
    path = os.fspath(path)
    if path == "-":
        if stream is None:
            raise ProblemError("reading '-' needs a stream (standard input)", file="<stdin>")
        raw = stream.read(MAX_FILE_BYTES + 1)
        if isinstance(raw, bytes):
            text = _decode(raw, "<stdin>")
        else:
            if len(raw) > MAX_FILE_BYTES:
                raise ProblemError(f"input is too large (more than {MAX_FILE_BYTES:,} characters)", file="<stdin>")
            text = raw
        label, base_dir = "<stdin>", os.getcwd()
        fmt = format or ("yaml" if _looks_like_yaml(text) else "text")
    else:
        label = path
        size = regular_file_size(path, "problem file")
        if size > MAX_FILE_BYTES:
            raise ProblemError(f"problem file is too large ({size:,} bytes; the limit is {MAX_FILE_BYTES:,})", file=path)
        try:
            with open(path, "rb") as fh:
                raw = fh.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise ProblemError(f"cannot read problem file: {excerpt(exc.strerror or str(exc))}", file=path) from None
        text = _decode(raw, path)
        base_dir = os.path.dirname(os.path.abspath(path))
        fmt = format or ("yaml" if path.lower().endswith(_YAML_SUFFIXES) else "text")
    if fmt == "yaml":
        return from_yaml_text(
            text, label, base_dir=base_dir, allow_data_outside=allow_data_outside, init=init, seed=seed
        )
    if fmt == "text":
        return from_text(text, label, init=init, seed=seed)
    raise ValueError(f"format must be 'yaml', 'text' or None, got {format!r}")


def from_text(text: str, filename: str = "<text>", *, init: Mapping[str, float] | None = None, seed: int | None = None):
    """Parse a text problem: one equation per line, or one ``minimize: EXPR`` line.

    ``#`` starts a comment; blank lines are ignored.  ``loss:`` is accepted
    for ``minimize:``.  Equations and a minimize line cannot be mixed; a file
    that mixes them is reported with every other mistake in its lines.
    """
    from .spec import MAX_EXPRESSIONS, budget_issues, build_spec

    text = _clean_text(text, filename)
    equations: list[tuple[str, Origin]] = []
    minimize: list[tuple[str, Origin]] = []
    beyond = 0  # lines past the expression limit: counted, never kept
    for number, line in enumerate(text.split("\n"), start=1):
        body = line.split("#", 1)[0]
        if not body.strip():
            continue
        if len(equations) + len(minimize) > MAX_EXPRESSIONS:
            beyond += 1
            continue
        match = _TEXT_MINIMIZE.match(body)
        if match:
            start = match.end()
            expr = body[start:]
            origin = Origin(filename, number, start + 1, line)
            minimize.append((expr, origin))
        else:
            equations.append((body, Origin(filename, number, 1, line)))
    name = _stem(filename)
    first = Origin(filename, 1, 1, None)
    if beyond:
        kind = "minimize" if minimize and not equations else "equations"
        lines = sorted(equations + minimize, key=lambda pair: pair[1].line)
        raise ProblemError(issues=budget_issues(kind, lines, count=len(lines) + beyond))
    structure: list[Issue] = []
    if minimize and equations:
        where = minimize[0][1]
        structure.append(Issue(
            "a text problem has either equations or one 'minimize:' line, not both",
            filename, where.line, 1, "use a YAML problem file for other combinations", where.source_line,
        ))
    if len(minimize) > 1:
        where = minimize[1][1]
        structure.append(Issue("more than one 'minimize:' line", filename, where.line, 1, None, where.source_line))
    if structure:
        # Report the structure problem with every mistake inside the lines, in line order.
        issues = list(structure)
        for kind, lines in (("equations", equations), ("minimize", minimize)):
            if not lines:
                continue
            try:
                build_spec(kind=kind, expressions=lines, name=name, path=filename, init=init, seed=seed,
                           file_origin=first)
            except ProblemError as exc:
                issues.extend(exc.issues)
        issues = list(dict.fromkeys(issues))  # an --init mistake is found by both passes
        issues.sort(key=lambda issue: (issue.line is not None, issue.line or 0))
        raise ProblemError(issues=issues)
    if minimize:
        return build_spec(kind="minimize", expressions=minimize, name=name, path=filename, init=init, seed=seed, file_origin=first)
    return build_spec(kind="equations", expressions=equations, name=name, path=filename, init=init, seed=seed, file_origin=first)


def from_yaml_text(
    text: str,
    filename: str = "<yaml>",
    *,
    base_dir: str | None = None,
    allow_data_outside: bool = False,
    init: Mapping[str, float] | None = None,
    seed: int | None = None,
):
    """Parse a YAML problem given as text.  ``data`` paths are relative to *base_dir* (default: cwd)."""
    text = _clean_text(text, filename)
    reader = _YamlProblem(text, filename, base_dir or os.getcwd(), allow_data_outside)
    return reader.build(init=init, seed=seed)


# ----------------------------------------------------------------------------- helpers


def _decode(raw: bytes, label: str) -> str:
    if len(raw) > MAX_FILE_BYTES:
        raise ProblemError(f"problem file is too large (more than {MAX_FILE_BYTES:,} bytes)", file=label)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ProblemError("the file is not valid UTF-8 text", file=label, line=line, column=column) from None


def _clean_text(text: str, label: str) -> str:
    if not isinstance(text, str):
        raise ProblemError("problem text must be a string", file=label)
    if len(text) > MAX_FILE_BYTES:
        raise ProblemError(f"problem text is too large (more than {MAX_FILE_BYTES:,} characters)", file=label)
    if text.startswith("\ufeff"):
        text = text[1:]
    return text.replace("\r\n", "\n")


def _stem(filename: str) -> str:
    if filename.startswith("<"):
        return filename.strip("<>") or "problem"
    return os.path.splitext(os.path.basename(filename))[0] or "problem"


def _looks_like_yaml(text: str) -> bool:
    keys = "|".join(k for k in TOP_LEVEL_KEYS if k not in ("minimize", "loss"))
    pattern = re.compile(rf"^(---|(?:{keys})\s*:)", re.MULTILINE)
    return pattern.search(text) is not None


def resolve_data_path(value: str, base_dir: str, allow_outside: bool = False) -> str:
    """Resolve a ``data`` path against *base_dir*; refuse escapes unless *allow_outside*.

    Refused without *allow_outside*: absolute paths, and any path whose real
    location (``os.path.realpath``: ``..`` and symbolic links resolved) is not
    inside the real *base_dir*.  Returns the real path.  Raises ProblemError
    (without a location; callers add it).
    """
    if not isinstance(value, str) or not value.strip():
        raise ProblemError("'data' must be a file name")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ProblemError(f"'data' path contains control characters: {excerpt(value)!r}")
    hint = "pass --allow-data-outside to read data from elsewhere"
    if os.path.isabs(value) and not allow_outside:
        raise ProblemError(f"absolute data paths are not allowed: {excerpt(value)!r}", hint=hint)
    base_real = os.path.realpath(base_dir)
    target = os.path.realpath(os.path.join(base_dir, value))
    if not allow_outside:
        try:
            inside = os.path.commonpath([base_real, target]) == base_real
        except ValueError:  # different drives
            inside = False
        if not inside:
            how = "climbs out of" if ".." in re.split(r"[\\/]", value) else "resolves (through a symbolic link) outside"
            raise ProblemError(f"data path {excerpt(value)!r} {how} the problem file's folder", hint=hint)
    return target


_ARROW_PREFIX = "cannot read the data file: "
_ARROW_COLUMNS = re.compile(r"(.*?Expected \d+ columns?, got \d+)")


def _data_message(message: str, real: str, shown: str) -> str:
    """A data reader's message with the real path replaced by the one shown and quoted data cut short.

    pyarrow's parse errors quote the whole offending row (``Expected 2 columns,
    got 4: root:x:0:0:...``): the row's line is in the location already, so the
    row itself is dropped; any other reader text is cut to ``EXCERPT_CHARS``.
    """
    message = message.replace(real, shown)
    if message.startswith(_ARROW_PREFIX):
        rest = message[len(_ARROW_PREFIX):]
        match = _ARROW_COLUMNS.match(rest)
        rest = match.group(1) if match and len(match.group(1)) <= EXCERPT_CHARS else rest
        message = _ARROW_PREFIX + excerpt(rest)
    return message


class _YamlProblem(YamlDocument):
    """Reads one YAML problem document into build_spec's arguments, with locations."""

    def __init__(self, text: str, filename: str, base_dir: str, allow_data_outside: bool):
        super().__init__(text, filename)
        self.base_dir = base_dir
        self.allow_data_outside = allow_data_outside

    # -- schema -----------------------------------------------------------------------

    def build(self, *, init, seed):
        import yaml

        from .spec import Declaration, build_spec

        node = self.compose()
        file_origin = Origin(self.filename, 1, 1, self.line_text(0))
        if node is None:
            raise ProblemError("the problem file is empty", file=self.filename)
        if not isinstance(node, yaml.MappingNode):
            raise ProblemError(
                "a YAML problem must be a mapping with keys such as 'unknowns' and 'equations'",
                file=self.filename, line=node.start_mark.line + 1, column=node.start_mark.column + 1,
                source_line=self.line_text(node.start_mark.line),
            )
        entries = {key: (key_node, value_node) for key, key_node, value_node in self.mapping(node, "the problem", TOP_LEVEL_KEYS)}

        name = _stem(self.filename)
        if "name" in entries:
            value = self.scalar(entries["name"][1])
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                name = entries["name"][1].value  # as written: 012 stays 012 (YAML 1.1 would read 10)
                if len(name) > 200:
                    self.issue(entries["name"][1], "'name' is too long (more than 200 characters)")
            else:
                self.issue(entries["name"][1], "'name' must be text")
        if "description" in entries and not isinstance(entries["description"][1], yaml.ScalarNode):
            self.issue(entries["description"][1], "'description' must be text")

        kinds = [k for k in ("equations", "residuals", "minimize", "loss") if k in entries]
        kind = None
        expressions: list[tuple[str, Origin]] = []
        if not kinds:
            self.issues.append(
                Issue(
                    "the problem needs one of 'equations', 'residuals' or 'minimize'",
                    self.filename, 1, 1, None, self.line_text(0),
                )
            )
        elif len(kinds) > 1:
            second = entries[kinds[1]][0]
            self.issue(second, f"'{kinds[0]}' and '{kinds[1]}' cannot be used together", "a problem has one of equations, residuals or minimize")
        else:
            key = kinds[0]
            kind = "minimize" if key in ("minimize", "loss") else key
            value_node = entries[key][1]
            if kind == "minimize":
                text = self.expression_text(value_node, key) if isinstance(value_node, yaml.ScalarNode) else None
                if text is None:
                    if not isinstance(value_node, yaml.ScalarNode):
                        self.issue(value_node, f"'{key}' must be one expression")
                else:
                    expressions = [text]
            else:
                expressions = self.expression_list(value_node, key)

        declarations: list[Declaration] = []
        if "unknowns" in entries:
            declarations = self.unknowns(entries["unknowns"][1])

        solver: dict = {}
        solver_origins: dict = {}
        if "solver" in entries:
            solver, solver_origins = self.solver(entries["solver"][1])

        data: dict = {}
        if "data" in entries:
            data_node = entries["data"][1]
            value = self.scalar(data_node) if isinstance(data_node, yaml.ScalarNode) else None
            if not isinstance(value, str):
                self.issue(data_node, "'data' must be the name of a CSV file")
            else:
                data = self.read_data(value, data_node)

        if kind is None:
            raise ProblemError(issues=self.issues)
        return build_spec(
            kind=kind,
            expressions=expressions,
            name=name,
            declarations=declarations,
            data=data,
            solver=solver,
            path=self.filename,
            init=init,
            seed=seed,
            file_origin=file_origin,
            issues=self.issues,
            solver_origins=solver_origins,
        )

    def read_data(self, value: str, node) -> dict:
        """The columns of the ``data:`` file; every problem becomes an issue, with the path as written.

        Problems with the file itself (missing, not a file, unreadable) point
        at the ``data:`` value in the YAML; problems inside it (a bad cell, a
        ragged row) at the data file's line, named relative to the working
        folder as the problem file is, never by its absolute path.  Text quoted
        from the data file is cut to ``EXCERPT_CHARS``.
        """
        from .data import read_columns

        origin = self.scalar_origin(node, node.value)

        def at_value(message: str, hint: str | None = None) -> Issue:
            return Issue(message, origin.file, origin.line, origin.column, hint, origin.source_line)

        try:
            real = resolve_data_path(value, self.base_dir, self.allow_data_outside)
        except ProblemError as exc:
            self.issues.extend(at_value(issue.message, issue.hint) for issue in exc.issues)
            return {}
        if not os.path.exists(real):
            self.issues.append(at_value(f"data file not found: {excerpt(value)!r}",
                                        "data paths are relative to the problem file's folder"))
            return {}
        if not os.path.isfile(real):
            self.issues.append(at_value(f"data path is not a regular file: {excerpt(value)!r}"))
            return {}
        if os.path.isabs(value) or self.filename.startswith("<"):
            shown = value
        else:
            shown = os.path.normpath(os.path.join(os.path.dirname(self.filename), value))
        try:
            return read_columns(real)  # columns that are not names can never be used
        except ProblemError as exc:
            for issue in exc.issues:
                message = _data_message(issue.message, real, shown)
                if issue.line is None:  # about the whole file: point at the 'data:' entry
                    self.issues.append(at_value(f"{message} (data file {excerpt(value)!r})", issue.hint))
                else:
                    self.issues.append(Issue(message, shown, issue.line, issue.column, issue.hint, None))
            return {}

    def unknowns(self, node):
        import yaml

        from .spec import MAX_UNKNOWNS, Declaration, bounds_problem

        out: list[Declaration] = []
        if isinstance(node, yaml.SequenceNode):  # a list of names: declared, random start
            pairs = [(self.scalar(item), item, None) for item in node.value]
        elif isinstance(node, yaml.MappingNode):
            pairs = [(key, key_node, value_node) for key, key_node, value_node in self.mapping(node, "'unknowns'", ())]
        else:
            self.issue(node, "'unknowns' must map each name to a starting value (or {init, min, max})")
            return out
        if len(pairs) > MAX_UNKNOWNS:
            self.issue(node, f"too many unknowns ({len(pairs)}; the limit is {MAX_UNKNOWNS})")
            return out
        seen: set[str] = set()
        for name, key_node, value_node in pairs:
            if not isinstance(name, str) or not is_valid_name(name):
                self.issue(key_node, f"{excerpt(str(name), 40)!r} is not a valid unknown name", "names are letters, digits and '_', starting with a letter")
                continue
            if name in FUNCTIONS:
                self.issue(key_node, f"{name!r} is a function name and cannot be an unknown",
                           f"rename the unknown, e.g. {name}_")
                continue
            if name in seen:
                self.issue(key_node, f"unknown {name!r} is declared twice")
                continue
            seen.add(name)
            decl = Declaration(name, origin=self.node_origin(key_node))
            if value_node is None:
                pass
            elif isinstance(value_node, yaml.MappingNode):
                for key, _key_node, sub in self.mapping(value_node, f"unknown {name!r}", UNKNOWN_KEYS):
                    if isinstance(sub, yaml.ScalarNode) and self.scalar(sub) is None:
                        continue  # explicit null: not given
                    setattr(decl, key, self.number(sub, f"{key} of {name!r}"))
                problem = bounds_problem(name, decl.init, decl.min, decl.max)
                if problem is not None:
                    self.issue(value_node, problem)
            elif isinstance(value_node, yaml.ScalarNode) and self.scalar(value_node) is None:
                pass  # `x:` or `x: null`: declared, random start
            else:
                decl.init = self.number(value_node, f"starting value of {name!r}")
            out.append(decl)
        return out

    def solver(self, node) -> tuple[dict, dict]:
        """The ``solver`` settings and where each was written (key -> Origin of its value)."""
        import yaml

        out: dict = {}
        origins: dict = {}
        for key, _key_node, value_node in self.mapping(node, "'solver'", SOLVER_KEYS):
            origins[key] = self.node_origin(value_node)
            if key == "optimizer":
                value = self.scalar(value_node) if isinstance(value_node, yaml.ScalarNode) else None
                if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,39}", value):
                    self.issue(value_node, "'optimizer' must be an optimizer name such as adam or lbfgs",
                               f"choose one of {', '.join(OPTIMIZERS)}")
                elif value.lower() not in OPTIMIZERS:
                    close = did_you_mean(value.lower(), OPTIMIZERS)
                    self.issue(value_node, f"unknown optimizer {excerpt(value, 40)!r}",
                               (close + " " if close else "") + f"choose one of {', '.join(OPTIMIZERS)}")
                else:
                    out[key] = value.lower()
            elif key == "lr":
                value = self.number(value_node, "'lr'", minimum=0.0, strict=True)
                if value is not None:
                    out[key] = value
            elif key == "steps":
                value = self.number(value_node, "'steps'", integer=True, minimum=1)
                if value is not None:
                    out[key] = value
            elif key == "tol":
                value = self.number(value_node, "'tol'", minimum=0.0, maximum=MAX_TOL)
                if value is not None:
                    out[key] = value
            elif key == "seed":
                value = self.number(value_node, "'seed'", integer=True, minimum=0)
                if value is not None:
                    out[key] = value
        return out, origins
