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


def _fmt(value, width=11, digits=4):
    if value is None:
        return "-".rjust(width)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value).rjust(width)
    return f"{value:.{digits}e}".rjust(width)


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
    """A rich table that redraws at most REFRESH_PER_SECOND times a second, so drawing never slows the solve.

    The table fits the console's width (`progress_table`): on a narrow terminal
    the numbers get fewer digits and unknowns that do not fit are left out (the
    caption says how many), instead of every cell becoming '9.4838…'.
    """

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
        self.names = list(names)
        # no redirection of sys.stdout/sys.stderr: stdout is the result's alone, and a display that breaks
        # (a closed terminal) must not leave either stream pointing into it
        self.live = Live(self._table(), console=self.console, auto_refresh=False, transient=False,
                         redirect_stdout=False, redirect_stderr=False)
        self.live.start()

    def _table(self):
        return progress_table(self.method, self.names, self.rows[-LIVE_ROWS:], self.console)

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

    def abandon(self):
        """stderr failed: stop the display without drawing again."""
        self.console.quiet = True
        if self.live is not None:
            try:
                self.live.stop()
            except (OSError, ValueError):
                pass


#: Columns that go, in this order, when even the fewest digits and no unknowns do not fit.
OPTIONAL_COLUMNS = ("|step|", "time", "change", "lr/damping")


def progress_table(method, names, rows, console):
    """The live table for `rows`, as wide as the data needs and at most ``console.width``.

    Tried in order until one fits: every unknown (up to MAX_UNKNOWN_COLUMNS) with
    5, 4, then 3 significant digits; then 3 digits and fewer unknowns (the caption
    says '+N more'); then without the columns in OPTIONAL_COLUMNS, one by one.
    """
    from rich.measure import Measurement

    shown_max = min(len(names), MAX_UNKNOWN_COLUMNS)
    layouts = [(digits, shown_max, ()) for digits in (4, 3, 2)]
    layouts += [(2, k, ()) for k in range(shown_max - 1, -1, -1)]
    layouts += [(2, 0, OPTIONAL_COLUMNS[:i]) for i in range(1, len(OPTIONAL_COLUMNS) + 1)]
    unbounded = console.options.update(width=1_000_000, max_width=1_000_000)  # the width the table wants
    table = None
    for digits, k, dropped in layouts:
        table = _progress_table(method, names, rows, digits, k, dropped)
        if Measurement.get(console, unbounded, table).maximum <= console.width:
            break
    return table


def _progress_table(method, names, rows, digits, shown, dropped):
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from gradsolve.problem.errors import escape

    hidden = len(names) - shown
    caption = Text(f"+{hidden} more unknown{'s' if hidden != 1 else ''}") if hidden else None
    # Text, not markup: the method's label may quote an error message, and names are the user's.  A rule under
    # the header and no vertical lines (scipy's and Ceres's verbose layout): the width goes to the numbers.
    table = Table(title=Text(escape(f"solving with {method}")), title_justify="left", expand=False,
                  caption=caption, caption_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  padding=(0, 1), collapse_padding=True)
    base = [c for c in ("step", "loss", "change", "|grad|", "|step|", "lr/damping") if c not in dropped]
    unknowns = list(names[:shown])
    tail = ["time"] if "time" not in dropped else []
    rate = rows[-1].rate_name if rows else "lr/damping"  # "lr", or "damping" for Levenberg-Marquardt
    signed = {"loss", "change", *unknowns}
    for column in base + unknowns + tail:
        header = rate if column == "lr/damping" and column in base else column
        # as wide as the format's widest value ("-1.23e-05"), so that columns do not come and go as signs change
        width = None if column in ("step", "time") else digits + (7 if column in signed else 6)
        table.add_column(Text(escape(header)), justify="right", no_wrap=True, min_width=width)

    def number(value):
        return _fmt(value, 0, digits).strip()

    for row in rows:
        cells = {"step": str(row.step), "loss": number(row.loss), "change": number(row.loss_change),
                 "|grad|": number(row.gradient_norm), "|step|": number(row.step_norm), "lr/damping": number(row.rate),
                 "time": f"{row.elapsed_s:.2f}s"}
        table.add_row(*[cells[c] for c in base], *[number(row.values.get(n)) for n in unknowns],
                      *[cells[c] for c in tail])
    return table


def make_progress(mode: str, quiet: bool):
    """The progress reporter for --progress MODE (auto: a live table on a terminal, plain rows otherwise).

    Progress is best effort (gradsolve.cli.streams): with stderr closed at start-up there is none, and the
    first write that fails turns it off while the solve goes on.
    """
    from gradsolve.cli.streams import BestEffortProgress, console

    if quiet or mode == "none" or sys.stderr is None:
        return NoProgress()
    if mode == "auto":
        mode = "table" if _isatty(sys.stderr) else "plain"
    if mode == "jsonl":
        return BestEffortProgress(JsonlProgress())
    if mode == "plain":
        return BestEffortProgress(PlainProgress())
    return BestEffortProgress(LiveTableProgress(console(stderr=True)))


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, OSError, ValueError):
        return False
