"""Reading data tables for `gradsolve fit`: CSV/TSV (delimiter sniffed), Parquet, standard input.

``open_table(path)`` looks at the first lines only.  Parquet is chosen by the
extension (``.parquet``, ``.pq``) or, for standard input and any extension
other than ``.csv .tsv .tab .txt``, by Parquet's magic bytes (``PAR1`` at both
ends).  For text it sniffs the delimiter
(comma, tab, semicolon or bar), decides whether the first row is a header (all
of its cells non-numeric; ``header=True/False`` overrides) and names the
columns (``col0, col1, ...`` without a header; ``x, y`` for a two-column file
without one).  ``Table.read(columns)`` reads the whole of the chosen columns
with pyarrow's multithreaded C reader; ``Table.batches(columns)`` streams them
in chunks of about ``block_size`` bytes, so memory is bounded by a chunk.

Both return float64 NumPy arrays and check every cell: a missing value, text,
NaN or infinity is a :class:`ProblemError` naming the data row (1-based), the
file line (text files) and the column, or, with ``drop_invalid=True``, the row
is left out and counted in ``Table.dropped``.  A Parquet column of strings is
read as text is: its numbers parsed, any other cell a bad one.  The checks it
shares with data.py (a problem file's ``data:``) are in data_checks.py.

pyarrow is imported inside the functions, so importing this module is cheap.
"""
from __future__ import annotations

import io
import os
import re
import sys
from dataclasses import dataclass, field

import numpy as np

from .data_checks import (
    NUMBER_CELL,
    arrow_error_parts,
    cell_error,
    check_header_names,
    line_of_row,
    not_a_number_message,
    regular_file_size,
)
from .errors import ProblemError, excerpt

__all__ = ["Table", "open_table", "DELIMITERS", "PARQUET_SUFFIXES", "TEXT_SUFFIXES"]

DELIMITERS = (",", "\t", ";", "|")
PARQUET_SUFFIXES = (".parquet", ".pq")
#: Always read as text; any other input ("-", other extensions) is Parquet when it has Parquet's magic.
TEXT_SUFFIXES = (".csv", ".tsv", ".tab", ".txt")
PARQUET_MAGIC = b"PAR1"  # the first and the last four bytes of a Parquet file
#: Bytes per streamed chunk (pyarrow block size): about 400,000 rows of two columns.
BLOCK_SIZE = 16 << 20
# what pyarrow reads as a number besides plain decimals (non-finite: rejected afterwards)
_ARROW_NUMBER = re.compile(r"\s*[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|nan|NaN|inf|Inf|infinity)\s*")


def _is_number(cell: str) -> bool:
    return bool(NUMBER_CELL.fullmatch(cell))


@dataclass
class Table:
    """A data table ready to read: where it is, its format, delimiter and column names."""

    path: str  # the file, or "-" for standard input
    label: str  # for messages: the path, or <stdin>
    format: str  # "csv" | "parquet"
    names: list
    delimiter: str = ","
    has_header: bool = True
    size: int = 0  # bytes
    data: bytes | None = field(default=None, repr=False)  # standard input, read once
    dropped: int = 0  # rows left out by drop_invalid
    rows: int = 0  # rows read (after dropping)

    # -- columns -------------------------------------------------------------------
    def index(self, wanted: str, role: str) -> int:
        """Column index for a name or a 0-based index (as text)."""
        if wanted in self.names:
            return self.names.index(wanted)
        if wanted.strip().isdigit():
            i = int(wanted)
            if i < len(self.names):
                return i
            raise ProblemError(f"{role} {i}: the data has only {len(self.names)} column(s) (0-based)",
                               file=self.label, line=1)
        import difflib

        close = difflib.get_close_matches(wanted, self.names, n=1)
        raise ProblemError(f"{role}: the data has no column {excerpt(wanted, 30)!r}", file=self.label, line=1,
                           hint=f"did you mean {close[0]!r}?" if close else "columns: " + ", ".join(self.names[:10]))

    def reopenable(self) -> bool:
        return self.data is not None or self.path != "-"

    def _source(self):
        import pyarrow as pa

        if self.data is not None:
            return pa.BufferReader(self.data)
        return self.path

    # -- reading -------------------------------------------------------------------
    def read(self, columns: list[int], *, drop_invalid: bool = False) -> list[np.ndarray]:
        """The whole of *columns* (indices) as float64 arrays, checked."""
        import pyarrow as pa

        self.dropped = 0
        if self.format == "parquet":
            import pyarrow.parquet as pq

            try:
                table = pq.read_table(self._source(), columns=[self.names[i] for i in columns])
            except (pa.ArrowException, OSError) as exc:
                raise self._arrow_error(exc) from None
            arrays = [table.column(k) for k in range(len(columns))]
        else:
            import pyarrow.csv as pacsv

            try:
                table = pacsv.read_csv(self._source(), read_options=self._read_options(),
                                       parse_options=self._parse_options(),
                                       convert_options=self._convert_options(columns))
            except (pa.ArrowInvalid, pa.ArrowException, OSError) as exc:
                return self._after_failure(exc, columns, drop_invalid, None)
            arrays = [table.column(self._arrow_name(i)) for i in columns]
        out = self._check(arrays, columns, 0, drop_invalid)
        self.rows = int(out[0].shape[0]) if out else 0
        return out

    def batches(self, columns: list[int], *, drop_invalid: bool = False, block_size: int = BLOCK_SIZE):
        """Yield lists of float64 arrays (one per column) chunk by chunk; memory is bounded by a chunk."""
        import pyarrow as pa

        self.dropped = 0
        self.rows = 0
        offset = 0
        if self.format == "parquet":
            import pyarrow.parquet as pq

            try:
                reader = pq.ParquetFile(self._source()).iter_batches(
                    batch_size=max(1024, block_size // (8 * max(1, len(columns)))),
                    columns=[self.names[i] for i in columns])
                for batch in reader:
                    out = self._check([batch.column(k) for k in range(len(columns))], columns, offset, drop_invalid)
                    offset += batch.num_rows
                    self.rows += int(out[0].shape[0])
                    yield out
            except (pa.ArrowException, OSError) as exc:
                raise self._arrow_error(exc) from None
            return
        import pyarrow.csv as pacsv

        try:
            reader = pacsv.open_csv(self._source(), read_options=self._read_options(block_size),
                                    parse_options=self._parse_options(),
                                    convert_options=self._convert_options(columns))
        except (pa.ArrowInvalid, pa.ArrowException, OSError) as exc:
            self._after_failure(exc, columns, False, None)
            return
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except (pa.ArrowInvalid, pa.ArrowException, OSError) as exc:
                if not drop_invalid:
                    self._after_failure(exc, columns, False, offset)
                # text cells with --drop-invalid: finish the rest as strings, dropping bad rows
                yield from self._string_batches(columns, offset, block_size)
                return
            arrays = [batch.column(batch.schema.get_field_index(self._arrow_name(i))) for i in columns]
            out = self._check(arrays, columns, offset, drop_invalid)
            offset += batch.num_rows
            self.rows += int(out[0].shape[0])
            yield out

    # -- pyarrow options -----------------------------------------------------------
    def _arrow_name(self, i: int) -> str:
        return f"c{i}"

    def _read_options(self, block_size: int | None = None):
        import pyarrow.csv as pacsv

        kwargs = dict(column_names=[self._arrow_name(i) for i in range(len(self.names))],
                      skip_rows=1 if self.has_header else 0)
        if block_size:
            kwargs["block_size"] = block_size
        return pacsv.ReadOptions(**kwargs)

    def _parse_options(self):
        import pyarrow.csv as pacsv

        return pacsv.ParseOptions(delimiter=self.delimiter)

    def _convert_options(self, columns, as_text=False):
        import pyarrow as pa
        import pyarrow.csv as pacsv

        kind = pa.string() if as_text else pa.float64()
        return pacsv.ConvertOptions(column_types={self._arrow_name(i): kind for i in columns},
                                    include_columns=[self._arrow_name(i) for i in columns],
                                    null_values=[""], strings_can_be_null=not as_text,
                                    quoted_strings_can_be_null=False)

    # -- checking ------------------------------------------------------------------
    def _check(self, arrays, columns, offset, drop_invalid) -> list[np.ndarray]:
        """float64 arrays from arrow columns; every cell present and finite, or its row dropped.

        A text column (Parquet strings) is read as CSV text is: numbers parsed, anything else a bad cell.
        """
        import pyarrow as pa

        values = []
        texts = []  # the text of a string column, for the message about a bad cell
        for k, column in enumerate(arrays):
            if isinstance(column, pa.ChunkedArray):
                column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
            if pa.types.is_dictionary(column.type):
                column = column.dictionary_decode()
            text = None
            if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                text, column = column, _parse_numbers(column)
            elif column.type != pa.float64():
                try:
                    column = column.cast(pa.float64())
                except (pa.ArrowInvalid, pa.ArrowException, NotImplementedError):
                    raise ProblemError(f"column {excerpt(self.names[columns[k]], 30)!r}: a column of type "
                                       f"{column.type} is not numeric", file=self.label) from None
            values.append(column)
            texts.append(text)
        good = None
        out = []
        for column in values:
            array = _float_array(column)
            ok = np.isfinite(array)  # nulls became NaN
            if not ok.all():
                good = ok if good is None else good & ok
            out.append(array)
        if good is None:
            return out
        if not drop_invalid:
            for k, array in enumerate(out):
                bad = np.flatnonzero(~np.isfinite(array))
                if bad.size:
                    row = int(bad[0])
                    if texts[k] is not None:
                        cell = texts[k][row].as_py()
                        missing = cell is None or not cell.strip()
                        message = ("not a finite number" if not missing and _ARROW_NUMBER.fullmatch(cell)
                                   else not_a_number_message(cell))
                    else:
                        message = "missing value" if values[k].is_null()[row].as_py() else "not a finite number"
                    raise self._row_error(offset + row, columns[k], message)
        self.dropped += int(good.size - np.count_nonzero(good))
        return [np.ascontiguousarray(array[good]) for array in out]

    def _string_batches(self, columns, offset, block_size):
        """Re-read as text from row *offset* on, dropping rows whose cells are not finite numbers."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.csv as pacsv

        reader = pacsv.open_csv(self._source(), read_options=self._read_options(block_size),
                                parse_options=self._parse_options(),
                                convert_options=self._convert_options(columns, as_text=True))
        seen = 0
        for batch in reader:
            n = batch.num_rows
            if seen + n <= offset:
                seen += n
                continue
            start = max(0, offset - seen)
            seen += n
            batch = batch.slice(start)
            mask = None
            for i in columns:
                text = batch.column(batch.schema.get_field_index(self._arrow_name(i)))
                ok = pc.match_substring_regex(text, r"^" + _ARROW_NUMBER.pattern + r"$")
                mask = ok if mask is None else pc.and_(mask, ok)
            kept = batch.filter(pc.fill_null(mask, False))
            self.dropped += batch.num_rows - kept.num_rows
            arrays = [pc.utf8_trim_whitespace(kept.column(kept.schema.get_field_index(self._arrow_name(i))))
                      .cast(pa.float64()) for i in columns]
            out = self._check(arrays, columns, 0, True)
            self.rows += int(out[0].shape[0])
            yield out

    def _after_failure(self, exc, columns, drop_invalid, offset):
        """A cell pyarrow cannot read as a number: find it (row and column) or drop such rows."""
        text = str(exc)
        if "conversion error" not in text and "invalid value" not in text.lower():
            raise self._arrow_error(exc) from None
        if drop_invalid:
            parts = list(self._string_batches(columns, 0, BLOCK_SIZE))
            if not parts:
                return [np.zeros(0) for _ in columns]
            return [np.concatenate([p[k] for p in parts]) for k in range(len(columns))]
        self._locate_bad_cell(columns)
        raise self._arrow_error(exc) from None  # not found: pyarrow's own words

    def _locate_bad_cell(self, columns):
        import pyarrow.compute as pc
        import pyarrow.csv as pacsv

        reader = pacsv.open_csv(self._source(), read_options=self._read_options(BLOCK_SIZE),
                                parse_options=self._parse_options(),
                                convert_options=self._convert_options(columns, as_text=True))
        offset = 0
        for batch in reader:
            first = None
            for i in columns:
                text = batch.column(batch.schema.get_field_index(self._arrow_name(i)))
                ok = pc.fill_null(pc.match_substring_regex(text, r"^" + NUMBER_CELL.pattern + r"$"), False)
                bad = pc.index(ok, False).as_py()
                if bad >= 0 and (first is None or bad < first[0]):
                    first = (bad, i, text[bad].as_py())
            if first is not None:
                row, i, cell = first
                raise self._row_error(offset + row, i, not_a_number_message(cell))
            offset += batch.num_rows

    def _row_error(self, row: int, column: int, message: str) -> ProblemError:
        return cell_error(row, self.names[column], message, file=self.label, line=self._line_of(row),
                          hint="fix the cell, or pass --drop-invalid to skip such rows")

    def _line_of(self, row: int) -> int | None:
        """Physical line (1-based) of data row *row* (0-based); pyarrow skips empty lines."""
        if self.format != "csv":
            return None
        try:
            stream = io.BytesIO(self.data) if self.data is not None else open(self.path, "rb")
        except OSError:
            return None
        with stream:
            return line_of_row(stream, row, self.has_header)

    def _arrow_error(self, exc) -> ProblemError:
        """pyarrow's error in one line, naming the file line where it can be found.

        A ragged row gets pyarrow's counts only: pyarrow quotes the whole offending row after
        "Expected N columns, got M:", and a row is the file's content (it may hold secrets).
        """
        first, line, wrong_count = arrow_error_parts(exc)
        hint = None
        if wrong_count:
            hint = f"every row needs {len(self.names)} cells, as many as the first row"
            if line is None:
                line = self._ragged_line()
        return ProblemError(f"cannot read the data: {excerpt(first, 120)}", file=self.label, line=line, hint=hint)

    def _ragged_line(self) -> int | None:
        """The first file line (1-based) whose cell count is not the number of columns; pyarrow skips empty
        lines, and reads quoted cells as the csv module does."""
        import csv

        if self.format != "csv":
            return None
        try:
            raw = io.BytesIO(self.data) if self.data is not None else open(self.path, "rb")
        except OSError:
            return None
        with raw, io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="") as stream:
            reader = csv.reader(stream, delimiter=self.delimiter)
            try:
                for cells in reader:
                    if cells and len(cells) != len(self.names):
                        return reader.line_num
            except csv.Error:
                return None
        return None


def _parse_numbers(text):
    """float64 from an arrow array of text: a cell that is not a number (as pyarrow's CSV reader reads
    numbers, spaces around it allowed) becomes null, as a missing one is."""
    import pyarrow as pa
    import pyarrow.compute as pc

    trimmed = pc.utf8_trim_whitespace(text)
    ok = pc.fill_null(pc.match_substring_regex(trimmed, r"^" + _ARROW_NUMBER.pattern + r"$"), False)
    return pc.if_else(ok, trimmed, pa.scalar(None, type=trimmed.type)).cast(pa.float64())


def _float_array(column) -> np.ndarray:
    """A float64 arrow array as NumPy, nulls as NaN, without a copy (Array.to_numpy imports pandas when
    it is installed: a third of a second of start-up)."""
    import pyarrow.compute as pc

    if column.null_count:
        column = pc.fill_null(column, float("nan"))
    data = column.buffers()[1]
    if data is None:
        return np.zeros(0)
    return np.frombuffer(data, dtype=np.float64, count=len(column), offset=column.offset * 8)


def _split(line: str, delimiter: str) -> list[str]:
    import csv

    return next(csv.reader([line], delimiter=delimiter), [])


def _sniff(lines: list[str], suffix: str) -> str:
    """The delimiter whose count is the same, and not zero, on every sampled line."""
    if suffix in (".tsv", ".tab"):
        return "\t"
    best = ","
    for delimiter in DELIMITERS:
        counts = {len(_split(line, delimiter)) for line in lines}
        if len(counts) == 1 and counts.pop() > 1:
            return delimiter
    return best


def open_table(path: str, *, header: bool | None = None, stdin=None) -> Table:
    """Sniff *path* ("-": *stdin* or sys.stdin): format, delimiter, header and column names."""
    suffix = os.path.splitext(path)[1].lower()
    data = None
    label = path
    if path == "-":
        stream = stdin if stdin is not None else sys.stdin
        raw = stream.buffer.read() if hasattr(stream, "buffer") else stream.read()
        data = raw.encode() if isinstance(raw, str) else bytes(raw)
        label = "<stdin>"
        size = len(data)
    else:
        size = regular_file_size(path)
    if suffix in PARQUET_SUFFIXES or (suffix not in TEXT_SUFFIXES and _has_parquet_magic(path, data)):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            schema = pq.read_schema(pa.BufferReader(data) if data is not None else path)
        except (pa.ArrowException, OSError) as exc:
            raise ProblemError(f"cannot read the Parquet file: {excerpt(str(exc), 120)}", file=label) from None
        return Table(path, label, "parquet", list(schema.names), size=size, data=data)

    head = data[: 1 << 16] if data is not None else _head(path)
    text = head.decode("utf-8", errors="replace")
    if text.startswith("\ufeff"):  # a UTF-8 byte-order mark (Excel writes one) is not part of the first name
        text = text[1:]
    lines = [line for line in text.splitlines()[:20] if line.strip()]
    if len(text) == (1 << 16) and lines and len(lines) > 1:
        lines = lines[:-1]  # the last line may be cut
    if not lines:
        raise ProblemError("the data has no rows", file=label)
    delimiter = _sniff(lines, suffix)
    first = [cell.strip() for cell in _split(lines[0], delimiter)]
    detected = all(cell and not _is_number(cell) for cell in first)
    has_header = detected if header is None else header
    if has_header:
        names = first
        check_header_names(names, label, empty_message="the header has an empty column name",
                           empty_hint="name every column, or pass --no-header")
    else:
        names = ["x", "y"] if len(first) == 2 else [f"col{i}" for i in range(len(first))]
    return Table(path, label, "csv", names, delimiter=delimiter, has_header=has_header, size=size, data=data)


def _has_parquet_magic(path: str, data: bytes | None) -> bool:
    """Parquet's magic at both ends (a text file that merely starts with 'PAR1' is still text)."""
    n = len(PARQUET_MAGIC)
    if data is not None:
        return len(data) >= 2 * n and data[:n] == PARQUET_MAGIC and data[-n:] == PARQUET_MAGIC
    try:
        with open(path, "rb") as fh:
            if fh.read(n) != PARQUET_MAGIC:
                return False
            fh.seek(0, os.SEEK_END)
            if fh.tell() < 2 * n:
                return False
            fh.seek(-n, os.SEEK_END)
            return fh.read(n) == PARQUET_MAGIC
    except OSError:
        return False


def _head(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(1 << 16)
