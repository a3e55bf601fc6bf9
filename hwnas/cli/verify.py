from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from hwnas.cli._console import console, err_console
from hwnas.cli._options import AllowForeignTable, BudgetFile, TablesDir
from hwnas.cli._types import non_negative, positive, positive_int


def verify(
    model: Path = typer.Argument(..., help="The exported model (.onnx, .tflite or .engine)."),
    device: str = typer.Option("cpu", "--device", "-d", help="Device to run it on (hwnas devices)."),
    table: Path = typer.Option(None, "--table", "-t", help="Table for the prediction (default: the device's)."),
    tables: TablesDir = Path("latency_tables"),
    budget: BudgetFile = None,
    latency_ms: float = typer.Option(None, "--latency-ms", parser=positive,
                                     help="Latency budget (ms), over the budgets file."),
    memory_mb: float = typer.Option(None, "--memory-mb", parser=positive,
                                    help="Memory budget (MB), over the budgets file."),
    reference: str = typer.Option(None, "--reference", help="Run directory or ARCH to compare with "
                                                            "(default: the model's hwnas metadata)."),
    weights: Path = typer.Option(None, "--weights", "-w", help="The reference's weights."),
    data: str = typer.Option("digits", "--data", help="Real inputs for parity: digits, cifar10:DIR, imagefolder:DIR."),
    rounds: int = typer.Option(9, "--rounds", parser=positive_int, help="Timing rounds (pooled into one median)."),
    memory: bool = typer.Option(True, "--memory/--no-memory", help="Measure activation memory."),
    out: Path = typer.Option(None, "--out", "-o", help="Report folder (default: <model>.verify/)."),
    calibrate: bool = typer.Option(False, "--calibrate", help="Feed the measurement into the table's calibration."),
    max_accuracy_drop: float = typer.Option(0.01, "--max-accuracy-drop", parser=non_negative,
                                            help="INT8: test accuracy the model may lose against fp32 (0.01 = 1 "
                                                 "point)."),
    allow_foreign_table: AllowForeignTable = False,
) -> None:
    """Run an exported model on its device: parity with PyTorch, latency and memory vs the table and the budget."""
    from hwnas.deploy.budgets import Limits, load_budgets, resolve_limits
    from hwnas.deploy.verify import feed_back
    from hwnas.deploy.verify import verify as run_verify
    from hwnas.devices.registry import get_device

    dev = get_device(device)
    limits = resolve_limits(dev.name, model, load_budgets(budget) if budget else None,
                            Limits.from_flags(latency_ms, memory_mb))
    out = out or model.with_name(model.name + ".verify")
    report = run_verify(model, dev, table=table, tables=tables, limits=limits, reference=reference, weights=weights,
                        data=data, rounds=rounds, memory=memory, out=out, allow_foreign=allow_foreign_table,
                        max_accuracy_drop=max_accuracy_drop)
    for note in report.notes:
        if note.startswith("FOREIGN TABLE"):
            err_console.print(f"[bold red]warning:[/] {escape(note)}")
    console.print((out / "verify.md").read_text().replace("![latency](latency.png)", ""), markup=False)
    if calibrate:
        shift = feed_back(report)
        console.print(f"calibration of {escape(report.predicted['table'])}: intercept shifted by {shift:+.4f} ms")
    console.print(f"report: {escape(str(out))}/verify.md")
    raise typer.Exit(0 if report.passed else 1)
