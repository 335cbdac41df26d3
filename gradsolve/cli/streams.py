"""What the command does when stdout or stderr cannot be written (README: "Exit codes").

* **stdout** carries the result.  A reader that went away (a pipe to ``head``:
  ``BrokenPipeError``) ends the command quietly with ``EXIT_BROKEN_PIPE`` (141,
  128 + SIGPIPE: what a shell reports for a program that SIGPIPE ended, so
  ``set -o pipefail`` sees what it sees for ``yes | head -1``).  Any other write
  failure (``ENOSPC`` on ``/dev/full``, a closed descriptor) is one line,
  ``gradsolve: error: cannot write the result to stdout: No space left on
  device``, and exit 2: never 3 (it is not a bug) and never 1 (that means "not
  converged").
* **stderr** carries progress, warnings and messages: best effort.  A closed or
  broken stderr (``2>&-``, a reader that exited, a full disk) never stops the
  solve; the result is still written and the exit code is the result's.

Python ignores SIGPIPE, so a write to a closed pipe raises instead of killing
the process; once a stream has failed, its descriptor is pointed at
``/dev/null`` so that the flush at interpreter exit cannot fail again (and
print "Exception ignored ..." or change the exit status to 120).
"""
from __future__ import annotations

import os
import sys

import click

EXIT_BAD_INPUT = 2
#: 128 + SIGPIPE (13): stdout was closed before the whole result was written.
EXIT_BROKEN_PIPE = 141


def _to_devnull(stream) -> None:
    """Point *stream*'s descriptor at /dev/null (a real std stream only; CliRunner's have no descriptor)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    try:
        os.dup2(devnull, fd)
    except OSError:
        pass
    finally:
        os.close(devnull)


def stdout_broken_pipe():
    """The reader of stdout has gone: no message (there is nobody to read one on stdout), exit 141."""
    _to_devnull(sys.stdout)
    sys.exit(EXIT_BROKEN_PIPE)


def stdout_failed(exc: OSError):
    """stdout cannot be written for another reason (a full disk, a closed descriptor): one line, exit 2."""
    _to_devnull(sys.stdout)
    reason = exc.strerror or str(exc) or type(exc).__name__
    say(f"gradsolve: error: cannot write the result to stdout: {reason}")
    sys.exit(EXIT_BAD_INPUT)


def write_result(write) -> None:
    """Call ``write()`` (which writes the result to stdout) and flush; a failure ends the command (see above)."""
    if sys.stdout is None:  # started with stdout closed (>&-)
        stdout_failed(OSError(9, "stdout is closed"))
    try:
        write()
        sys.stdout.flush()
    except BrokenPipeError:
        stdout_broken_pipe()
    except OSError as exc:
        stdout_failed(exc)
    except ValueError as exc:  # "I/O operation on closed file"
        stdout_failed(OSError(9, str(exc)))


class stdout_guard:
    """``with stdout_guard():`` around code whose only writes are to stdout (click's --help and --version):
    the same endings as ``write_result``.  click's own handling would exit 1 ("not converged")."""

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if kind is None:
            return False
        if issubclass(kind, BrokenPipeError):
            stdout_broken_pipe()
        if issubclass(kind, OSError) and getattr(exc, "errno", None) is not None:
            stdout_failed(exc)
        return False


def say(text: str) -> None:
    """One message on stderr, best effort: a closed or broken stderr is ignored (and silenced for good)."""
    if sys.stderr is None:
        return
    try:
        click.echo(text, err=True)
    except (OSError, ValueError):
        _to_devnull(sys.stderr)


def console(stderr: bool = False, **kwargs):
    """A rich Console that raises BrokenPipeError like any other stream.

    rich's own handling of a broken pipe points *stdout* at /dev/null and exits 1 (even for a console on
    stderr), which here would read as "not converged" and lose the result.
    """
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError(32, "Broken pipe")

    return _Console(stderr=stderr, **kwargs)


class BestEffortProgress:
    """Wraps a progress reporter: the first failed write to stderr turns progress off; the solve goes on."""

    def __init__(self, inner):
        self.inner = inner
        self.broken = False

    def _call(self, name, *args):
        if self.broken:
            return
        try:
            getattr(self.inner, name)(*args)
        except (OSError, ValueError) as exc:
            if isinstance(exc, ValueError) and "closed" not in str(exc):
                raise  # not a stream that failed: a bug, reported as one
            self.broken = True
            abandon = getattr(self.inner, "abandon", None)
            if abandon is not None:
                abandon()
            _to_devnull(sys.stderr)

    def start(self, method, names):
        self._call("start", method, names)

    def row(self, row):
        self._call("row", row)

    def finish(self):
        self._call("finish")


#: What the output's decorations become on a stream that cannot encode them (LC_ALL=C, PYTHONIOENCODING=ascii,
#: as CI containers often run): anything else non-ASCII (a name, a column) is written as a \\uXXXX escape.
ASCII_FALLBACKS = {"\u2014": "-", "\u2013": "-", "\u2026": "...", "\u2192": "->", "\u00b1": "+/-",
                   "\u00d7": "x", "\u2212": "-", "\u2264": "<=", "\u2265": ">="}
ENCODING_ERRORS = "gradsolve-ascii"


def _ascii_fallback(exc: UnicodeEncodeError):
    text = exc.object[exc.start:exc.end]
    return "".join(ASCII_FALLBACKS.get(ch, ch.encode("ascii", "backslashreplace").decode("ascii"))
                   for ch in text), exc.end


def survive_any_encoding() -> None:
    """stdout and stderr never fail a write for want of a character: on a stream whose encoding cannot write
    the output's decorations (an em dash), those become ASCII (ASCII_FALLBACKS) and other characters escapes;
    rich draws its tables in ASCII there by itself."""
    import codecs

    try:
        codecs.lookup_error(ENCODING_ERRORS)
    except LookupError:
        codecs.register_error(ENCODING_ERRORS, _ascii_fallback)
    for stream in (sys.stdout, sys.stderr):
        encoding = getattr(stream, "encoding", None) or "ascii"
        try:
            "\u2014\u2501".encode(encoding)
            continue  # UTF-8 and friends: nothing to do
        except (UnicodeEncodeError, LookupError):
            pass
        try:
            stream.reconfigure(errors=ENCODING_ERRORS)
        except (AttributeError, ValueError, OSError):  # not a TextIOWrapper (a test's capture): leave it
            pass
