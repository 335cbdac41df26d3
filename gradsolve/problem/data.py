"""Reading data tables (CSV) into named float64 columns.

``read_columns(path)`` is the reader of problem files' ``data:`` (``gradsolve
fit`` reads with table.py; both make the checks of data_checks.py).  It returns
``{column name: numpy float64 array}`` in file order and raises
:class:`ProblemError` with the row (1-based data row; the error's ``line`` is
the physical line in the file) and the column name for every cell that is
missing or not a finite number.

pyarrow is imported inside the functions so importing this module stays cheap.
"""

from __future__ import annotations

import math

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

__all__ = ["read_columns", "read_header", "MAX_DATA_BYTES"]

#: Largest data file accepted (bytes).
MAX_DATA_BYTES = 512 * 1024 * 1024


def _check_file(path: str) -> None:
    size = regular_file_size(path)
    if size > MAX_DATA_BYTES:
        raise ProblemError(
            f"data file is too large ({size:,} bytes; the limit is {MAX_DATA_BYTES:,})", file=path
        )


def _row_error(path: str, row: int, column: str, message: str) -> ProblemError:
    with open(path, "rb") as fh:
        line = line_of_row(fh, row)
    return cell_error(row, column, message, file=path, line=line)


def _ragged_line(path: str) -> int | None:
    """First line whose field count differs from the header's (quotes ignored)."""
    try:
        with open(path, "rb") as fh:
            expected = None
            for number, raw in enumerate(fh, start=1):
                if not raw.strip(b"\r\n"):
                    continue
                count = raw.count(b",") + 1
                if expected is None:
                    expected = count
                elif count != expected:
                    return number
    except OSError:
        return None
    return None


def _arrow_error(path: str, exc: Exception) -> ProblemError:
    first, line, _ = arrow_error_parts(exc)  # a row's text is cut: with --allow-data-outside it may be a secret
    if line is None and "Expected" in str(exc):
        line = _ragged_line(path)
    return ProblemError(f"cannot read the data file: {excerpt(first)}", file=path, line=line)


def read_header(path: str) -> list[str]:
    """Column names of the CSV file at *path* (surrounding spaces stripped)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    _check_file(path)
    try:
        reader = pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 16))
        names = list(reader.schema.names)
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as exc:
        raise _arrow_error(path, exc) from None
    return [name.strip() for name in names]


def read_columns(path: str, columns: list[str] | None = None) -> dict[str, np.ndarray]:
    """Read the CSV file at *path* into ``{name: float64 array}``.

    The first line is the header.  Every cell must be a finite decimal number
    (spaces around it are fine); an empty cell, text, ``nan`` or ``inf`` is an
    error naming the data row (1-based), the file line and the column.  Empty
    lines are skipped.  With *columns*, only those columns are read (in that
    order) and a missing one is an error.  Duplicate column names are errors.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    _check_file(path)
    header = read_header(path)
    if not header or header == [""]:
        raise ProblemError("data file has no header line", file=path, line=1)
    check_header_names(header, path, empty_message="data file has an empty column name in its header")
    seen = set(header)
    wanted = list(header) if columns is None else list(columns)
    for name in wanted:
        if name not in seen:
            raise ProblemError(f"data file has no column {excerpt(name, 30)!r}", file=path, line=1)

    # Read every cell as text and convert ourselves: this gives one precise
    # message per bad cell instead of pyarrow's type-inference error.
    raw_names = pacsv.open_csv(path).schema.names
    stripped_to_raw = dict(zip(header, raw_names))
    try:
        table = pacsv.read_csv(
            path,
            convert_options=pacsv.ConvertOptions(
                column_types={raw: pa.string() for raw in raw_names},
                include_columns=[stripped_to_raw[name] for name in wanted],
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as exc:
        raise _arrow_error(path, exc) from None

    out: dict[str, np.ndarray] = {}
    for name in wanted:
        column = table.column(stripped_to_raw[name])
        try:  # fast path: arrow parses every cell and all are finite
            fast = np.asarray(column.cast(pa.float64()).to_numpy(), dtype=np.float64)
            if not column.null_count and np.all(np.isfinite(fast)):
                out[name] = fast
                continue
        except (pa.ArrowInvalid, pa.ArrowException):
            pass
        cells = column.to_pylist()  # slow path: find the first bad cell
        values = np.empty(len(cells), dtype=np.float64)
        for row, cell in enumerate(cells):
            if cell is None or not NUMBER_CELL.fullmatch(cell):
                raise _row_error(path, row, name, not_a_number_message(cell))
            value = float(cell)
            if not math.isfinite(value):
                raise _row_error(path, row, name, f"{excerpt(cell, 30)!r} is too large for double precision")
            values[row] = value
        out[name] = values
    return out
