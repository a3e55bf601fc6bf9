from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from hwnas.cli._console import console, err_console
from hwnas.cli._options import AllowForeignTable, BudgetFile, TablesDir
from hwnas.cli._types import non_negative, positive, positive_int, statistic_name


def check(
    models: list[Path] = typer.Argument(..., help="Model files to gate (.onnx; .tflite/.engine exported by hwnas)."),
    device: str = typer.Option("cpu", "--device", "-d", help="Device the budget is for (hwnas devices)."),
    budget: BudgetFile = None,
    max_latency_ms: float = typer.Option(None, "--max-latency-ms", parser=positive,
                                         help="Latency limit (ms), over the file's."),
    max_memory_mb: float = typer.Option(None, "--max-memory-mb", parser=positive,
                                        help="Memory limit (MB), over the file's."),
    max_params: float = typer.Option(None, "--max-params", parser=positive,
                                     help="Parameter-count limit, over the file's."),
    predict: bool = typer.Option(False, "--predict/--measure",
                                 help="Price from the table (no device needed) instead of measuring on the device."),
    table: Path = typer.Option(None, "--table", "-t", help="Table for --predict (default: the device's)."),
    tables: TablesDir = Path("latency_tables"),
    baseline: Path = typer.Option(None, "--baseline", help="An earlier report (--out) to compare with."),
    max_regression: float = typer.Option(None, "--max-regression", parser=non_negative,
                                         help="Allowed growth over the baseline, in %."),
    out: Path = typer.Option(None, "--out", "-o", help="Write the report as JSON (a later --baseline)."),
    junit: Path = typer.Option(None, "--junit", help="Write JUnit XML here."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    rounds: int = typer.Option(9, "--rounds", parser=positive_int, help="Timing rounds (--measure)."),
    statistic: str = typer.Option("median", "--statistic", parser=statistic_name,
                                  help="--measure: the latency read as median, or min on a shared host whose load "
                                       "only adds time (--predict reads the table's own) (default: median)."),
    allow_foreign_table: AllowForeignTable = False,
) -> None:
    """Gate CI on latency, memory and size: exit 0 within budget, 1 over budget or regressed, 2 bad input."""
    from hwnas.core.atomic import ensure_writable_file
    from hwnas.deploy import check as gate
    from hwnas.deploy.budgets import Limits, load_budgets
    from hwnas.devices.registry import get_device

    for flag, path in (("--out", out), ("--junit", junit)):
        if path is not None:
            ensure_writable_file(path, flag)  # before any model is measured
    report = gate.check(models, get_device(device), mode="predict" if predict else "measure",
                        budgets=load_budgets(budget) if budget else None,
                        flags=Limits.from_flags(max_latency_ms, max_memory_mb, max_params, max_regression),
                        table=table, tables=tables, baseline=baseline, rounds=rounds,
                        allow_foreign=allow_foreign_table, statistic=statistic)
    for r in report.results:
        for w in r.warnings:
            err_console.print(f"[bold red]warning:[/] {escape(r.model)}: {escape(w)}")
    if out:
        gate.write_json(report, out)
    if junit:
        gate.write_junit(report, junit)
    if gate.in_github_actions():
        for line in gate.github_annotations(report):
            print(line)
    if as_json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        console.print(_table(report))
    raise typer.Exit(report.exit_code)


def _table(report) -> Table:
    t = Table(title=f"hwnas check on {report.device} ({report.mode})")
    for col in ("model", "latency ms", "memory MB", "params M", "result"):
        t.add_column(col)
    for r in report.results:
        mem = f"{r.memory_bytes / 1e6:.3f}" if r.memory_bytes is not None else "n/a"
        verdict = "[green]pass[/]" if r.passed else "[red]FAIL[/]: " + escape("; ".join(r.failures))
        t.add_row(escape(r.model), f"{r.latency_ms:.3f}", mem, f"{r.params / 1e6:.3f}", verdict)
    return t
