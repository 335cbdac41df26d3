"""Progress while solving, on stderr: a live table on a terminal, plain rows in logs, or JSON lines.

The columns are the ones people know from Ceres and scipy's verbose
least_squares: step, loss, loss change, gradient norm, step norm, learning rate
or damping, the first unknowns and the elapsed time.
"""
from __future__ import annotations

import json
import math
import sys
import time

MAX_UNKNOWN_COLUMNS = 4
LIVE_ROWS = 12
REFRESH_PER_SECOND = 10


def _fmt(value, width=11):
    if value is None:
        return "-".rjust(width)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value).rjust(width)
    return f"{value:.4e}".rjust(width)


def _json_number(value):
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class NoProgress:
    def start(self, method, names):
        pass

    def row(self, row):
        pass

    def finish(self):
        pass


class PlainProgress:
    """Aligned rows with no ANSI codes, for CI logs and pipes."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.names = []

    def start(self, method, names):
        self.names = list(names)[:MAX_UNKNOWN_COLUMNS]
        header = (f"{'step':>7} {'loss':>11} {'change':>11} {'|grad|':>11} {'|step|':>11} {'lr/damp':>11} "
                  + " ".join(f"{n[:11]:>11}" for n in self.names) + f" {'time':>8}")
        print(f"solving with {method}", file=self.stream)
        print(header, file=self.stream)
        self.stream.flush()

    def row(self, row):
        values = " ".join(_fmt(row.values.get(n)) for n in self.names)
        print(f"{row.step:7d} {_fmt(row.loss)} {_fmt(row.loss_change)} {_fmt(row.gradient_norm)} "
              f"{_fmt(row.step_norm)} {_fmt(row.rate)} {values} {row.elapsed_s:7.3f}s", file=self.stream)
        self.stream.flush()

    def finish(self):
        pass


class JsonlProgress:
    """One JSON object per row (README: "Progress rows")."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr

    def start(self, method, names):
        pass

    def row(self, row):
        record = {
            "step": row.step, "loss": _json_number(row.loss), "loss_change": _json_number(row.loss_change),
            "gradient_norm": _json_number(row.gradient_norm), "step_norm": _json_number(row.step_norm),
            row.rate_name: _json_number(row.rate),
            "parameters": {k: _json_number(v) for k, v in row.values.items()},
            "elapsed_s": _json_number(row.elapsed_s),
        }
        self.stream.write(json.dumps(record, allow_nan=False) + "\n")
        self.stream.flush()

    def finish(self):
        pass


class LiveTableProgress:
    """A rich table that redraws at most REFRESH_PER_SECOND times a second, so drawing never slows the solve."""

    def __init__(self, console):
        self.console = console
        self.rows = []
        self.live = None
        self.names = []
        self.method = ""
        self._last_draw = 0.0
        self._pending = False

    def start(self, method, names):
        from rich.live import Live

        self.method = method
        self.names = list(names)[:MAX_UNKNOWN_COLUMNS]
        self.live = Live(self._table(), console=self.console, auto_refresh=False, transient=False)
        self.live.start()

    def _table(self):
        from rich.table import Table
        from rich.text import Text

        from gradsolve.problem.errors import escape

        # Text, not markup: the method's label may quote an error message, and names are the user's
        table = Table(title=Text(escape(f"solving with {self.method}")), title_justify="left", expand=False)
        for column in ["step", "loss", "change", "|grad|", "|step|", "lr/damping", *self.names, "time"]:
            table.add_column(Text(escape(column)), justify="right", no_wrap=True)
        for row in self.rows[-LIVE_ROWS:]:
            table.add_row(str(row.step), _fmt(row.loss).strip(), _fmt(row.loss_change).strip(),
                          _fmt(row.gradient_norm).strip(), _fmt(row.step_norm).strip(), _fmt(row.rate).strip(),
                          *[_fmt(row.values.get(n)).strip() for n in self.names], f"{row.elapsed_s:.3f}s")
        return table

    def row(self, row):
        self.rows.append(row)
        if len(self.rows) > 4 * LIVE_ROWS:
            del self.rows[:-LIVE_ROWS]
        now = time.monotonic()
        if now - self._last_draw >= 1.0 / REFRESH_PER_SECOND:
            self._draw(now)
        else:
            self._pending = True

    def _draw(self, now):
        self._last_draw = now
        self._pending = False
        self.live.update(self._table(), refresh=True)

    def finish(self):
        if self.live is not None:
            self.live.update(self._table(), refresh=True)
            self.live.stop()


def make_progress(mode: str, quiet: bool):
    """The progress reporter for --progress MODE (auto: a live table on a terminal, plain rows otherwise)."""
    if quiet or mode == "none":
        return NoProgress()
    if mode == "auto":
        mode = "table" if sys.stderr.isatty() else "plain"
    if mode == "jsonl":
        return JsonlProgress()
    if mode == "plain":
        return PlainProgress()
    from rich.console import Console

    return LiveTableProgress(Console(stderr=True))
