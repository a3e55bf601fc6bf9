"""The ``hwnas`` command: a thin layer, each subcommand maps its flags onto one library call.

:func:`main` is the one place where a failure becomes what the user sees, and its exit code:

- a usage error (unknown option or command, a missing or malformed value): typer's own click reports it with
  the usage line and ``--help``, exit 2 — whichever click module the installed typer carries;
- :class:`hwnas.core.errors.HwnasError` (bad input, an unusable device): a one-paragraph message and its fix, exit 2;
- an :class:`OSError` that no layer below could name better (a full disk, a permission): the file and the
  reason, exit 2;
- an interrupt (Ctrl-C, SIGINT): exit 130, with the ``--resume`` hint for the commands that can resume.

A command that fails a check exits 1 itself (``typer.Exit(1)``). Nothing here prints a traceback.
"""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from hwnas.cli import check as _check
from hwnas.cli import devices as _devices
from hwnas.cli import export as _export
from hwnas.cli import pipeline as _pipeline
from hwnas.cli import predict as _predict
from hwnas.cli import profile as _profile
from hwnas.cli import search as _search
from hwnas.cli import table as _table
from hwnas.cli import verify as _verify
from hwnas.cli._console import err_console
from hwnas.core.errors import HwnasError

app = typer.Typer(name="hwnas", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Hardware-aware NAS: profile devices into lookup tables, search, export, verify, gate CI.")
app.command("devices")(_devices.devices)
app.command("profile")(_profile.profile)
app.add_typer(_table.app, name="table")
app.command("predict")(_predict.predict)
app.command("search")(_search.search)
app.command("export")(_export.export)
app.command("verify")(_verify.verify)
app.command("check")(_check.check)
app.command("pipeline")(_pipeline.pipeline)

INTERRUPTED = 130
RESUMABLE = ("profile", "validate", "search", "pipeline")  # the commands that take --resume


def _say(message: str, hint: str = "") -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    if hint:
        err_console.print(f"  [bold]fix:[/] {escape(hint)}")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: exit 0 ok, 1 a check failed, 2 bad input or unusable device, 130 interrupted."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        # Standalone: typer's click parses and reports usage errors (exit 2) itself, and turns an interrupt
        # into exit 130; everything hwnas raises passes through it untouched.
        app(args=args, prog_name="hwnas", standalone_mode=True)
    except SystemExit as exc:
        if exc.code in (0, None):  # success returns, so that a caller in Python (a test, a script) goes on
            return
        if exc.code == INTERRUPTED:
            resumable = any(a in RESUMABLE for a in args[:2])
            err_console.print("interrupted" + ("; rerun the same command with --resume to continue where it "
                                               "stopped" if resumable else ""))
        raise
    except HwnasError as exc:
        _say(exc.message, exc.hint)
        sys.exit(2)
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        _say(f"cannot use{where}: {exc.strerror or exc}.",
             "check that the path exists, is writable and that its disk has free space")
        sys.exit(2)
