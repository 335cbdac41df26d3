"""The `gradsolve` command: declares options, validates, calls the library, renders. No numerics here.

Exit codes: 0 converged; 1 stopped without converging (step limit, diverged,
inconsistent equations); 2 bad input or usage, or a result stdout cannot take; 3 an
internal error; 130 Ctrl-C; 141 stdout closed by its reader (gradsolve.cli.streams).
"""
from __future__ import annotations

import sys

import click

from gradsolve import __version__
from gradsolve.cli.params import InitType, PositiveFloat, WholeNumber, quote
from gradsolve.cli.streams import say, stdout_broken_pipe, stdout_guard, survive_any_encoding, write_result
from gradsolve.problem.errors import escape
from gradsolve.problem.limits import MAX_TOL
from gradsolve.methods import NAMES as _OPTIMIZERS
from gradsolve.solve.options import MAX_STARTS

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3
OPTIMIZERS = list(_OPTIMIZERS)

OPTIONS_HELP = """
\b
Solver options (they override the problem file's `solver:` settings):
  --optimizer auto   lm for equations/residuals/fits, lbfgs for smooth losses without bounds,
                     adam otherwise (kinks, or min/max bounds: lbfgs has none)
  --lr               the optimizer's own, tuned for problems: adam/adamw/nadam 0.1, rmsprop 0.01,
                     adagrad 0.5, adadelta 1.0, lbfgs 1.0; sgd uses 1/L from the curvature at the start
  --steps 10000      iteration limit        --seed 0   random starting values are reproducible
  --tol 1e-12        relative tolerance on loss change, step size and gradient norm
  --atol 0           also count a loss at most this as solved (0: off; equations are solved when
                     every residual is within 16 roundings of its own terms, in any units)
"""


def solver_options(func):
    """The options shared by puzzle, fit and minimize."""
    options = [
        click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=None,
                     help="Method (default auto; see the table below)."),
        click.option("--lr", type=PositiveFloat(example="0.01"), default=None,
                     help="Learning rate (default: per optimizer)."),
        click.option("--steps", type=WholeNumber(1), default=None, help="Iteration limit (default 10000)."),
        click.option("--tol", type=PositiveFloat(allow_zero=True, example="1e-10", maximum=MAX_TOL), default=None,
                     help="Relative tolerance: loss change, step, gradient (default 1e-12)."),
        click.option("--atol", type=PositiveFloat(allow_zero=True, example="1e-16"), default=None,
                     help="Also count a loss at most this as solved (default 0: off; equations are solved when each "
                          "residual is rounding of its own terms)."),
        click.option("--time-limit", "time_limit", type=PositiveFloat(example="60"), default=None,
                     help="Stop by this many seconds with the best point so far (status max_steps)."),
        click.option("--seed", type=WholeNumber(0), default=None,
                     help="Seed for random starting values, >= 0 (default 0)."),
        click.option("--init", "inits", type=InitType(), multiple=True, help="Starting value NAME=VALUE (repeatable)."),
        click.option("--starts", type=WholeNumber(1, MAX_STARTS), default=None,
                     help=f"Solve K starting points as one batch and list every distinct solution "
                          f"(default 1, at most {MAX_STARTS:,})."),
        click.option("--no-trace", "no_trace", is_flag=True,
                     help="Evaluate with the autograd engine every step instead of the traced graph."),
        click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu", show_default=True,
                     help="cuda needs gradsolve[gpu]; auto uses cuda when present, else cpu."),
        click.option("--dtype", type=click.Choice(["float64", "float32"]), default="float64", show_default=True),
        click.option("--progress", type=click.Choice(["auto", "table", "plain", "jsonl", "none"]), default="auto",
                     show_default=True, help="Progress on stderr: auto = live table on a terminal, plain rows otherwise."),
        click.option("--every", type=WholeNumber(1), default=None,
                     help="Progress row every N steps (default: 1 for lm/lbfgs, 100 otherwise)."),
        click.option("--output", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True,
                     help="Result format on stdout."),
        click.option("--quiet", "-q", is_flag=True, help="No progress, the result only."),
        click.option("--allow-data-outside", is_flag=True,
                     help="Let a problem file read data outside its own folder."),
        click.option("--debug", is_flag=True, help="Show tracebacks of internal errors."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


class GuardedCommand(click.Command):
    """A subcommand whose --help ends as write_result says when stdout cannot take it."""

    def make_context(self, info_name, args, parent=None, **extra):
        with stdout_guard():
            return super().make_context(info_name, args, parent=parent, **extra)


class OneLineErrors(click.Group):
    """click's group with usage errors as one line on stderr, exit 2: ``gradsolve: error: --lr: '0' must be
    positive (for example --lr 0.01); try 'gradsolve puzzle --help'``.

    click's own display is four lines (Usage, a blank, Try, Error); the command's
    standard is one line naming the place and how to fix it.  --help, --version
    and a bare ``gradsolve`` (the help) are unchanged; Ctrl-C while parsing exits 130.
    """

    command_class = GuardedCommand

    def make_context(self, info_name, args, parent=None, **extra):
        """--help and --version print here; a stdout that cannot take them ends as write_result says."""
        with stdout_guard():
            return super().make_context(info_name, args, parent=parent, **extra)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:  # always named gradsolve (click's test runner would say 'cli')
            rv = super().main(args=args, prog_name="gradsolve", complete_var=complete_var, standalone_mode=False,
                              **extra)
        except click.exceptions.NoArgsIsHelpError as exc:  # a bare `gradsolve`: the help, as click shows it
            try:
                exc.show()  # on stderr: best effort
            except (OSError, ValueError):
                pass
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            words = list(sys.argv[1:] if args is None else args)
            command = next((w for w in words if w in self.commands), None)  # when the error carries no context
            say(f"gradsolve: error: {leading_minus_hint(exc, command, words) or usage_error_line(exc, command)}")
            sys.exit(EXIT_BAD_INPUT)
        except click.exceptions.Abort:
            say("gradsolve: interrupted")
            sys.exit(130)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


def leading_minus_hint(exc, command, words) -> str | None:
    """`gradsolve minimize "-log(x)"`: click reads -log(x) as the options -l -o -g; say how to write it.

    A word counts as an expression when it starts with a single '-' and holds a character no option
    has (a bracket, an operator, a space): a mistyped flag such as -l gets click's own message.
    """
    if command != "minimize" or not isinstance(exc, click.NoSuchOption):
        return None
    word = next((w for w in words if w.startswith("-") and not w.startswith("--")
                 and any(c in w[1:] for c in "()*/+-^= .")), None)
    if word is None:
        return None
    return (f"{quote(word)} reads as options because it starts with '-': write the expression as "
            f"{quote('(' + word + ')')}, or put '--' before it (after the options); "
            f"try 'gradsolve minimize --help'")


def usage_error_line(exc, command=None) -> str:
    """One line for a click error: the option or argument, what is wrong, and where the help is."""
    if isinstance(exc, click.MissingParameter):
        text = exc.format_message()
    elif isinstance(exc, click.BadParameter) and exc.param is not None:
        text = f"{_param_label(exc.param)}: {exc.message}"
    else:
        text = exc.format_message()
    text = " ".join(str(text).split()).rstrip(".").replace(". (Did you mean", " (did you mean")
    if text[:1].isupper() and text[1:2].islower():
        text = text[0].lower() + text[1:]
    ctx = getattr(exc, "ctx", None)
    where = ctx.command_path if ctx is not None else " ".join(["gradsolve"] + ([command] if command else []))
    return f"{escape(text)}; try '{where} --help'"


def _param_label(param) -> str:
    """'--lr' for an option (its long name), 'PROBLEM' for an argument."""
    if isinstance(param, click.Option):
        longs = [o for o in param.opts if o.startswith("--")]
        return (longs or param.opts)[0]
    return param.human_readable_name


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="gradsolve")
def cli():
    """gradsolve: solve equation systems, minimize expressions and fit models, with exact gradients.

    \b
    Examples:
      gradsolve puzzle problems/four-unknowns.yaml
      gradsolve minimize "abs(x - y)" --init x=5 --init y=1
      gradsolve fit problems/polynomial.csv --degree 2 --output json | jq .parameters
      gradsolve check problems/*.yaml
    """


# ------------------------------------------------------------------ running --
def _fail(message: str, code: int = EXIT_BAD_INPUT):
    say(f"gradsolve: error: {escape(message)}")
    sys.exit(code)


def _overrides(kw) -> dict:
    return {"optimizer": kw["optimizer"], "lr": kw["lr"], "steps": kw["steps"], "tol": kw["tol"],
            "atol": kw["atol"], "seed": kw["seed"], "device": kw["device"], "dtype": kw["dtype"],
            "starts": kw.get("starts"), "trace": False if kw.get("no_trace") else None,
            "time_limit": kw.get("time_limit")}


def _execute(load_spec, kw, solve_and_render=None):
    """Load, solve, render and exit with the result's code; every failure becomes a clean exit."""
    import warnings

    from gradsolve.problem.errors import ProblemError

    # NumPy's RuntimeWarnings (overflow in exp, log of a negative number) are not messages for the user: a
    # NaN or infinity that matters is in the verdict ("diverged"), and the solve layer silences its own.
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    try:
        spec = load_spec()
        if solve_and_render is None:
            from gradsolve.problem.settings import check_solver_settings

            check_solver_settings(spec, kw["optimizer"])  # what the solver would refuse, with the file's location
        return (solve_and_render or _solve_and_render)(spec, kw)
    except ProblemError as exc:
        say(problem_text(exc))
        sys.exit(EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        say("gradsolve: interrupted")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001 - the last line of defence: a bug must not look like a result
        from gradsolve.backend import DeviceError
        from gradsolve.solve.options import SolveError

        if isinstance(exc, (SolveError, DeviceError)):
            _fail(str(exc))
        if kw.get("debug"):
            import traceback

            try:  # on stderr, best effort (with stderr None, print_exc would write to stdout)
                if sys.stderr is not None:
                    traceback.print_exc(file=sys.stderr)
            except (OSError, ValueError):
                pass
        say(f"gradsolve: internal error: {type(exc).__name__}: {escape(str(exc))} "
            "(a bug: please report it; rerun with --debug for the traceback)")
        sys.exit(EXIT_INTERNAL)


def _check_progress_flags(kw) -> None:
    """--quiet with an explicit --progress other than none contradicts it: say so rather than pick one."""
    if kw["quiet"] and kw["progress"] not in ("auto", "none"):
        _fail(f"--quiet and --progress {kw['progress']} contradict each other (--quiet means no progress): "
              f"drop one")


def _solve_and_render(spec, kw):
    from gradsolve.backend import cuda_available
    from gradsolve.cli.progress import make_progress
    from gradsolve.solve.solver import merged_options, solve_spec

    _check_progress_flags(kw)
    options = merged_options(spec, _overrides(kw))
    _say_device_fallback(options.device, kw["quiet"], cuda_available)
    progress = make_progress(kw["progress"], kw["quiet"])
    try:
        result = solve_spec(spec, options, on_progress=progress.row, every=kw["every"], on_start=progress.start)
    finally:
        progress.finish()
    _render(result, kw["output"])


def _render(result, output):
    """The result on stdout in the chosen format, its warnings on stderr (in every format); then exit."""
    from gradsolve.cli.render import render_csv, render_json, render_table
    from gradsolve.cli.streams import console

    for warning in result.warnings:
        say(warning_line(warning))
    if output == "json":
        write_result(lambda: click.echo(render_json(result)))
    elif output == "csv":
        write_result(lambda: click.echo(render_csv(result), nl=False))
    else:
        write_result(lambda: render_table(result, console(highlight=False)))
    if result.status == "interrupted":
        say("gradsolve: interrupted: the result above is the best point found so far")
    sys.exit(result.exit_code)


def _init_map(inits):
    return dict(inits) if inits else None


# ------------------------------------------------------------------ commands --
@cli.command(epilog=OPTIONS_HELP)
@click.argument("problem", metavar="PROBLEM")
@solver_options
def puzzle(problem, **kw):
    """Solve the equation system or loss in PROBLEM (YAML or text; - reads standard input).

    \b
    Examples:
      gradsolve puzzle problems/four-unknowns.yaml
      gradsolve puzzle problems/intersection.txt --init x=1 --init y=5
      echo "x + y = 3
      x - y = 1" | gradsolve puzzle - --output json
    """
    def load():
        from gradsolve.problem.files import from_file

        return from_file(problem, allow_data_outside=kw["allow_data_outside"], init=_init_map(kw["inits"]),
                         seed=kw["seed"], stream=sys.stdin if problem == "-" else None)

    _execute(load, kw)


@cli.command(epilog=OPTIONS_HELP)
@click.argument("expr_or_file", metavar="EXPR_OR_FILE")
@click.option("--expr", "force_expr", is_flag=True, help="Treat the argument as an expression even if it looks like a file.")
@solver_options
def minimize(expr_or_file, force_expr, **kw):
    """Minimize one expression (or the loss in a problem file: - or a name ending in .yaml, .yml or .txt).

    \b
    Examples:
      gradsolve minimize "abs(x - y)" --init x=5 --init y=1
      gradsolve minimize "(1 - x)^2 + 100*(y - x^2)^2" --init x=-1.2 --init y=1
      gradsolve minimize problems/rosenbrock.yaml
    """
    is_file = not force_expr and (expr_or_file == "-" or expr_or_file.lower().endswith((".yaml", ".yml", ".txt")))

    def load():
        if is_file:
            from gradsolve.problem.files import from_file

            return from_file(expr_or_file, allow_data_outside=kw["allow_data_outside"],
                             init=_init_map(kw["inits"]), seed=kw["seed"],
                             stream=sys.stdin if expr_or_file == "-" else None)
        from gradsolve.problem.grammar import Origin
        from gradsolve.problem.spec import build_spec

        return build_spec(kind="minimize", expressions=[(expr_or_file, Origin("<expr>", 1, 1, expr_or_file))],
                          name="expression", path="<expr>", init=_init_map(kw["inits"]), seed=kw["seed"])

    _execute(load, kw)


@cli.command(epilog=OPTIONS_HELP)
@click.argument("data", metavar="DATA")
@click.option("--degree", type=WholeNumber(0, 30), default=None, help="Fit a polynomial c0 + c1*x + ... + cN*x**N.")
@click.option("--model", default=None, help="Fit a model in the problem language, e.g. 'a*exp(b*x) + c'.")
@click.option("-x", "x_columns", multiple=True,
              help="Predictor column, name or 0-based index (default: the first); repeat for several.")
@click.option("-y", "y_column", default=None,
              help="Response: a column (default: the second) or an expression of columns, e.g. 'log(y)'.")
@click.option("--header/--no-header", default=None,
              help="Whether the first row names the columns (default: yes when all its cells are non-numeric).")
@click.option("--sigma", default=None, metavar="COL",
              help="Column of per-row standard deviations: weights 1/sigma^2, and the standard errors are then "
                   "absolute (without it they are scaled by the reduced chi-square).")
@click.option("--drop-invalid", is_flag=True, help="Skip rows with a missing or non-numeric cell (and count them).")
@click.option("--robust-loss", type=click.Choice(["squared", "huber", "soft_l1", "cauchy"]), default="squared",
              show_default=True, help="Loss for data with outliers (iteratively reweighted least squares).")
@click.option("--f-scale", type=PositiveFloat(example="0.5"), default=1.0, show_default=True,
              help="Residual size where a robust loss starts to discount (same units as y).")
@click.option("--predict", "predict", multiple=True, metavar="X",
              help="Print the fitted value (and its standard error) at X; comma-separated for several -x.")
@click.option("--plot", default=None, metavar="OUT.png", help="Draw data, fit and residuals (needs gradsolve[plot]).")
@solver_options
def fit(data, degree, model, x_columns, y_column, header, sigma, drop_invalid, robust_loss, f_scale, predict, plot,
        **kw):
    """Fit a polynomial (--degree) or a model (--model) to the columns of DATA by least squares.

    DATA is CSV or TSV (delimiter sniffed) or Parquet (.parquet, .pq, or found by its magic bytes under any
    extension but .csv .tsv .tab .txt); - reads standard input (either format).
    A model linear in its parameters is reduced once by a QR factorization (auto: solved directly);
    a nonlinear one is fitted by Levenberg-Marquardt, starting from the data unless --init says otherwise.
    The result gives each coefficient with its standard error, their correlations, R^2 and RMSE.

    \b
    Examples:
      gradsolve fit problems/polynomial.csv --degree 2
      gradsolve fit data.csv --model "a*exp(b*x) + c" --init a=1 --init b=-0.5
      gradsolve fit data.tsv -x t -y "log(counts)" --degree 1 --predict 10
      gradsolve fit data.csv --degree 3 --sigma err --robust-loss huber --plot fit.png
    """
    if (degree is None) == (model is None):
        _fail("fit needs exactly one of --degree N or --model EXPR")

    def load():
        from gradsolve.solve.fit import prepare_fit

        return prepare_fit(data, degree=degree, model=model, x_columns=list(x_columns), y_column=y_column,
                           init=_init_map(kw["inits"]), seed=kw["seed"], header=header, sigma=sigma,
                           drop_invalid=drop_invalid, robust_loss=robust_loss, f_scale=f_scale,
                           predict=list(predict), plot=plot, stdin=sys.stdin if data == "-" else None)

    _execute(load, kw, _fit_and_render)


def _say_device_fallback(device, quiet, cuda_available):
    # said under --quiet too, as warnings are: a pipeline that expected a GPU should see that it had none
    if device == "auto" and not cuda_available():
        say("gradsolve: --device auto: no usable GPU (CuPy with a CUDA device), solving on the cpu")


def _fit_and_render(task, kw):
    from gradsolve.backend import cuda_available
    from gradsolve.cli.progress import make_progress
    from gradsolve.solve.fit import plot_fit, run_fit
    from gradsolve.solve.options import build_options, default_every

    _check_progress_flags(kw)
    options = build_options(None, _overrides(kw))
    _say_device_fallback(options.device, kw["quiet"], cuda_available)
    progress = make_progress(kw["progress"], kw["quiet"])
    every = kw["every"] or default_every(options.optimizer)
    try:
        result = run_fit(task, options, on_progress=progress.row, every=every, on_start=progress.start)
    finally:
        progress.finish()
    if task.plot:
        plot_fit(task, result, task.plot)
    _render(result, kw["output"])


@cli.command()
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option("--allow-data-outside", is_flag=True, help="Let problem files read data outside their folder.")
def check(files, allow_data_outside):
    """Parse and validate problem files without solving (a CI lint step); exit 2 if any file fails.

    \b
    Example:
      gradsolve check problems/*.yaml problems/*.txt
    """
    from gradsolve.problem.errors import ProblemError
    from gradsolve.problem.files import from_file
    from gradsolve.problem.settings import check_solver_settings

    failed = 0
    for path in files:
        try:
            spec = from_file(path, allow_data_outside=allow_data_outside,
                             stream=sys.stdin if path == "-" else None)
            check_solver_settings(spec)  # what `puzzle` would refuse when it starts (lm on a loss, lbfgs with bounds)
        except ProblemError as exc:
            failed += 1
            say(exc.format())
            continue
        except Exception as exc:  # noqa: BLE001 - report and go on to the next file
            failed += 1
            say(f"{escape(path)}: internal error: {type(exc).__name__}: {escape(str(exc))}")
            continue
        count = len(spec.sources)
        what = {"equations": "equation", "residuals": "residual", "minimize": "loss"}[spec.kind]
        what = what if count == 1 or spec.kind == "minimize" else f"{what}s"
        rows = f", data: {spec.n_rows} row{'' if spec.n_rows == 1 else 's'}" if spec.n_rows else ""
        # plain click output (no rich markup); control characters escaped, everything else as written
        lines = [f"{escape(path)}: ok — {count} {what}, unknowns: {', '.join(spec.unknown_names)}{rows}"]
        lines += [f"    {escape(source)}" for source in spec.sources]
        lines += [f"    {warning_line(warning)}" for warning in spec.warnings]
        write_result(lambda: click.echo("\n".join(lines)))
    if failed:
        say(f"{failed} of {len(files)} file{'' if len(files) == 1 else 's'} failed")
        sys.exit(EXIT_BAD_INPUT)


def problem_text(exc) -> str:
    """A ProblemError for the terminal: an issue about no file (an option: --predict, --plot, --init) is
    ``gradsolve: error: ...`` (the library's ``<input>`` names no place the user can find)."""
    import dataclasses

    from gradsolve.problem.errors import ProblemError

    issues = getattr(exc, "issues", None)
    if not issues:
        return str(exc)
    named = [dataclasses.replace(i, file="gradsolve") if i.file is None and i.line is None else i for i in issues]
    return ProblemError(issues=named).format()


def warning_line(warning: str) -> str:
    """A problem warning as one line: they already read ``file:line:col: warning: ...``; never twice 'warning:'."""
    text = escape(warning)
    return text if text.startswith("warning:") or ": warning: " in text else f"warning: {text}"


def main(argv=None):
    """Console-script entry point."""
    _occupy_closed_std_fds()
    survive_any_encoding()
    arguments = sys.argv[1:] if argv is None else list(argv)
    if sys.stdout is None and any(a in ("--version", "--help", "-h") for a in arguments):
        # click writes nothing to a closed stdout and exits 0: what was asked for never came
        say("gradsolve: error: cannot write to stdout: stdout is closed")
        sys.exit(EXIT_BAD_INPUT)
    try:
        cli.main(args=argv, prog_name="gradsolve", standalone_mode=True)
    except KeyboardInterrupt:  # pragma: no cover - Ctrl-C during start-up
        say("gradsolve: interrupted")
        sys.exit(130)
    except BrokenPipeError:  # the stdout of `check`, --help or --version, closed by its reader
        stdout_broken_pipe()


def _occupy_closed_std_fds() -> None:
    """Descriptors 0-2 closed at start-up (``2>&-``) are pointed at /dev/null, so that a file the command
    opens later (a data file, --plot's image) can never take the number of a standard stream."""
    import os

    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            try:
                opened = os.open(os.devnull, os.O_RDWR)
            except OSError:
                return
            if opened != fd:
                os.dup2(opened, fd)
                os.close(opened)


if __name__ == "__main__":  # pragma: no cover
    main()
