"""The ``hwnas`` command: a thin layer, each subcommand maps its flags onto one library call.

Any :class:`hwnas.errors.HwnasError` becomes a one-paragraph message and exit code 2 (no traceback).
"""

from __future__ import annotations

import sys

import click
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
from hwnas.errors import HwnasError

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


def main(argv: list[str] | None = None) -> None:
    """Console entry point: exit 0 ok, 1 check failed, 2 bad input or unusable device."""
    try:
        code = app(args=argv, prog_name="hwnas", standalone_mode=False)
        if isinstance(code, int) and code:  # a command's typer.Exit(code), returned in non-standalone mode
            sys.exit(code)
    except HwnasError as exc:
        err_console.print(f"[bold red]error:[/] {escape(exc.message)}")
        if exc.hint:
            err_console.print(f"  [bold]fix:[/] {escape(exc.hint)}")
        sys.exit(2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        err_console.print("interrupted; rerun with --resume to continue where it stopped")
        sys.exit(130)
