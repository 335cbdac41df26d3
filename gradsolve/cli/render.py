"""The final result on stdout: a rich table, JSON (the versioned contract) or CSV.

The problem's warnings go to stderr in every format (gradsolve.cli.main), not
here.  Everything the user wrote (the problem's name, unknown and column names,
equations, paths) reaches rich as ``Text`` built by ``_plain``: rich
never reads it as markup (``[bold]``, ``[link=...]``) or emoji codes, and its
control characters are escaped (``\x1b``) so they cannot drive the terminal.
Nothing is escaped twice: JSON and CSV carry the text as it is.
"""
from __future__ import annotations

import csv
import io
import math

from gradsolve.problem.errors import escape

STATUS_STYLE = {"converged": "bold green", "inconsistent": "bold yellow", "max_steps": "bold yellow",
                "diverged": "bold red", "interrupted": "bold yellow", "stalled": "bold yellow"}


def _plain(text, style: str = ""):
    """User text for rich: literal (no markup, no emoji codes), control characters escaped."""
    from rich.text import Text

    return Text(escape(str(text)), style=style)


def _line(*parts, style: str = ""):
    """A Text of plain parts (str: literal text) and (text, style) pairs, every part escaped."""
    from rich.text import Text

    out = Text(style=style)
    for part in parts:
        if isinstance(part, tuple):
            out.append(escape(str(part[0])), style=part[1])
        else:
            out.append(escape(str(part)))
    return out


def _count(n, noun: str) -> str:
    """'1 step', '3 steps' (n as given when it is not a number)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _num(value):
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.12g}"


def render_json(result) -> str:
    return result.to_json(indent=2)


def render_csv(result) -> str:
    """Columns: name,value — one row per unknown (README: "CSV output")."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["name", "value"])
    for name, value in result.parameters.items():
        writer.writerow([name, repr(float(value)) if value is not None and math.isfinite(value) else ""])
    return buffer.getvalue()


def _status_line(data):
    """'name: status — reason'; an interrupted run says 'interrupted — at step N (Ctrl-C)', not the word twice."""
    status, reason = data["status"], str(data["stop_reason"])
    if status == "interrupted":
        rest = reason[len("interrupted"):].strip() if reason.startswith("interrupted") else reason
        reason = f"{rest} (Ctrl-C)" if rest else "Ctrl-C"
    return _line((f"{data['problem']}: ", "bold"), (status, STATUS_STYLE.get(status, "")), f" — {reason}")


def render_table(result, console):
    """Unknowns, residuals per equation, the status and (when there is one) the family of solutions."""
    from rich.table import Table
    from rich.text import Text

    if "statistics" in result.extra:
        return render_fit(result, console)
    data = result.to_dict()
    console.print(_status_line(data))
    console.print(_line(f"optimizer {data['optimizer']}, {_count(data['steps'], 'step')}, loss {_num(data['loss'])}, "
                        f"|grad| {_num(data['gradient_norm'])}, {data['elapsed_s']:.3f}s on {data['device']} "
                        f"({data['dtype']})"))
    table = Table(title="unknowns", title_justify="left")
    table.add_column("name")
    table.add_column("value", justify="right")
    if data["at_bounds"]:
        table.add_column("note")
    for name, value in data["parameters"].items():
        row = [_plain(name), _num(value)]
        if data["at_bounds"]:
            row.append("at a bound" if name in data["at_bounds"] else "")
        table.add_row(*row)
    console.print(table)
    if data["residuals"]:
        res = Table(title="residuals", title_justify="left")
        res.add_column("equation")
        if "value" in data["residuals"][0]:
            res.add_column("residual", justify="right")
            for r in data["residuals"]:
                res.add_row(_plain(r["equation"]), _num(r.get("value")))
        else:
            for column in ("rows", "rms", "max |r|"):
                res.add_column(column, justify="right")
            for r in data["residuals"]:
                res.add_row(_plain(r["equation"]), str(r.get("count")), _num(r.get("rms")), _num(r.get("max")))
        console.print(res)
    family = data["solution_set"]
    if family:
        n = len(family["unknowns"])
        kind = "locally, near this point" if family.get("local") else "exactly (the system is linear)"
        console.print(Text(f"The solution is not unique: the Jacobian has rank {family['rank']} of {n}; "
                           f"every point of this family solves the equations, {kind}.", style="yellow"))
        if family.get("particular"):
            console.print(_plain("minimum-norm solution: " + ", ".join(
                f"{k} = {_num(v)}" for k, v in family["particular"].items())))
        for i, direction in enumerate(family["free_directions"], 1):
            console.print(_plain(f"free direction {i}: (" + ", ".join(
                f"{k}: {_num(v)}" for k, v in direction.items()) + ")"))
    root = data.get("multiple_root")
    if root:
        n = len(data["parameters"])
        singular = (f"the Jacobian has rank {root['rank']} of {n} here" if root["rank"] < n else
                    "the Jacobian vanishes there (the steps converged linearly, not quadratically)")
        console.print(Text(f"The root is multiple (multiplicity {root['multiplicity']}): {singular}, but no other "
                           f"solution is near; "
                           f"rounding in the residuals moves such a root, so the unknowns have about "
                           f"{root['digits']} correct digits.", style="yellow"))
    if data.get("solutions") and len(data["solutions"]) > 1:
        sol = Table(title="distinct solutions", title_justify="left")
        sol.add_column("#")
        for name in data["parameters"]:
            sol.add_column(_plain(name), justify="right")
        sol.add_column("loss", justify="right")
        sol.add_column("starts", justify="right")
        for i, s in enumerate(data["solutions"], 1):
            sol.add_row(str(i), *[_num(s["parameters"][n]) for n in data["parameters"]], _num(s["loss"]),
                        str(s["starts"]))
        console.print(sol)
    if result.loss_history and console.is_terminal:
        console.print(Text("loss: " + sparkline(result.loss_history), style="cyan"))


SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values, width=48) -> str:
    """A one-line plot of log10(loss) over the run."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return ""
    logs = [math.log10(max(v, 1e-300)) for v in finite]
    if len(logs) > width:
        step = len(logs) / width
        logs = [logs[int(i * step)] for i in range(width)]
    lo, hi = min(logs), max(logs)
    span = hi - lo or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, int((v - lo) / span * (len(SPARK) - 1)))] for v in logs) + \
        f"  {finite[0]:.2e} -> {finite[-1]:.2e}"


def _pm(value, error) -> str:
    """'value +/- error (percent)' with the error to 2 significant digits."""
    if value is None:
        return "-"
    if error is None:
        return f"{_num(value)} +/- ?"
    percent = abs(error / value) * 100 if value else math.inf
    pct = f"{percent:.2g}%" if math.isfinite(percent) else "-"
    return f"{_num(value)} +/- {error:.2g} ({pct})"


def render_fit(result, console):
    """A fit: status, the model, coefficients with errors, correlations, goodness of fit, predictions."""
    from rich.table import Table
    from rich.text import Text

    data = result.to_dict()
    stats = data["statistics"]
    notes = data.get("fit", {})
    console.print(_status_line(data))
    rows = notes.get("rows")
    dropped = notes.get("dropped")
    console.print(_line(f"optimizer {data['optimizer']}, {_count(data['steps'], 'step')}, {_count(rows, 'row')}"
                        + (f" ({dropped} dropped: invalid cells)" if dropped else "")
                        + f", {data['elapsed_s']:.3f}s on {data['device']} ({data['dtype']})"))
    console.print(_plain(data["model"], style="bold"))
    start = notes.get("start")
    if start and start.get("source") != "--init":
        console.print(_plain("started " + start["source"] + ": " + ", ".join(
            f"{k} = {_num(v)}" for k, v in start["parameters"].items()), style="dim"))
    table = Table(title="coefficients", title_justify="left")
    table.add_column("name")
    table.add_column("value +/- standard error (relative)", justify="right")
    for name, value in data["parameters"].items():
        table.add_row(_plain(name), _pm(value, stats["stderr"].get(name)))
    console.print(table)
    matrix = stats["correlation"].get("matrix")
    names = stats["correlation"]["names"]
    if matrix and len(names) > 1:
        corr = Table(title="correlation of the coefficients", title_justify="left")
        corr.add_column("")
        for name in names:
            corr.add_column(_plain(name), justify="right")
        for name, row in zip(names, matrix):
            corr.add_row(_plain(name), *["-" if v is None else f"{v:+.3f}" for v in row])
        console.print(corr)
    def _g(v):
        return "-" if v is None else f"{v:.6g}"
    console.print(_line(f"R^2 {_g(stats['r_squared'])}, RMSE {_g(stats['rmse'])}, residual sum of squares "
                        f"{_g(stats['rss'])}, degrees of freedom {stats['dof']}, residual sd "
                        f"{_g(stats.get('residual_sd'))}; standard errors {stats.get('sigma', '')}"))
    if stats["covariance"] != "ok":
        console.print(_plain(f"no standard errors for {', '.join(stats['unavailable'])}: {stats['reason']}",
                             style="yellow"))
    family = data.get("solution_set")
    if family:
        console.print(Text(f"The fit is not unique: the data determine {family['rank']} of "
                           f"{len(family['unknowns'])} coefficients (a deficit of {stats.get('deficit')}); these "
                           f"coefficients are one of a family that fits exactly as well:", style="yellow"))
        for i, direction in enumerate(family["free_directions"], 1):
            console.print(_plain(f"free direction {i}: (" + ", ".join(
                f"{k}: {_num(v)}" for k, v in direction.items()) + ")"))
    if data.get("predictions"):
        pred = Table(title="predictions", title_justify="left")
        first = data["predictions"][0]
        for name in first["x"]:
            pred.add_column(_plain(name), justify="right")
        pred.add_column("predicted +/- standard error", justify="right")
        for p in data["predictions"]:
            pred.add_row(*[_num(v) for v in p["x"].values()], _pm(p["y"], p["stderr"]))
        console.print(pred)
    if data.get("plot"):
        console.print(_line("plot written to ", data["plot"]))
    if result.loss_history and console.is_terminal:
        console.print(Text("loss: " + sparkline(result.loss_history), style="cyan"))
