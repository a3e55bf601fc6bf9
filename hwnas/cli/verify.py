from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from hwnas.cli._console import console, err_console
from hwnas.cli._types import positive, positive_int


def flag_limits(latency_ms: float | None, memory_mb: float | None, params: float | None = None,
                max_regression: float | None = None):
    from hwnas.budgets import Limits

    return Limits(latency_ms=latency_ms, memory_bytes=memory_mb * 1e6 if memory_mb is not None else None,
                  params=params, max_regression=max_regression / 100 if max_regression is not None else None)


def verify(
    model: Path = typer.Argument(..., help="The exported model (.onnx, .tflite or .engine)."),
    device: str = typer.Option("cpu", "--device", "-d", help="Device to run it on (hwnas devices)."),
    table: Path = typer.Option(None, "--table", "-t", help="Table for the prediction [default: the device's]."),
    tables: Path = typer.Option(Path("latency_tables"), "--tables", help="Folder of tables."),
    budget: Path = typer.Option(None, "--budget", "-b", help="Budgets file (TOML, see tools/ci/budgets.toml)."),
    latency_ms: float = typer.Option(None, "--latency-ms", parser=positive,
                                     help="Latency budget (ms), over the budgets file."),
    memory_mb: float = typer.Option(None, "--memory-mb", parser=positive,
                                    help="Memory budget (MB), over the budgets file."),
    reference: str = typer.Option(None, "--reference", help="Run directory or ARCH to compare with "
                                                            "[default: the model's hwnas metadata]."),
    weights: Path = typer.Option(None, "--weights", "-w", help="The reference's weights."),
    data: str = typer.Option("digits", "--data", help="Real inputs for parity: digits, cifar10:DIR, imagefolder:DIR."),
    rounds: int = typer.Option(9, "--rounds", parser=positive_int, help="Timing rounds (pooled into one median)."),
    memory: bool = typer.Option(True, "--memory/--no-memory", help="Measure activation memory."),
    out: Path = typer.Option(None, "--out", "-o", help="Report folder [default: <model>.verify/]."),
    calibrate: bool = typer.Option(False, "--calibrate", help="Feed the measurement into the table's calibration."),
    allow_foreign_table: bool = typer.Option(False, "--allow-foreign-table",
                                             help="Predict from a table measured on another host or runtime "
                                                  "(the report warns)."),
) -> None:
    """Run an exported model on its device: parity with PyTorch, latency and memory vs the table and the budget."""
    from hwnas.budgets import load_budgets, resolve_limits
    from hwnas.devices import get_device
    from hwnas.verify import verify as run_verify

    dev = get_device(device)
    limits = resolve_limits(dev.name, model, load_budgets(budget) if budget else None,
                            flag_limits(latency_ms, memory_mb))
    out = out or model.with_name(model.name + ".verify")
    report = run_verify(model, dev, table=table, tables=tables, limits=limits, reference=reference, weights=weights,
                        data=data, rounds=rounds, memory=memory, out=out, allow_foreign=allow_foreign_table)
    for note in report.notes:
        if note.startswith("FOREIGN TABLE"):
            err_console.print(f"[bold red]warning:[/] {escape(note)}")
    console.print((out / "verify.md").read_text().replace("![latency](latency.png)", ""), markup=False)
    if calibrate:
        from hwnas.validate import feed_measurement

        if not report.predicted:
            from hwnas.errors import ConfigError

            raise ConfigError("--calibrate needs a prediction to correct.", "verify a model exported by hwnas, "
                                                                           "with its device's table")
        shift = feed_measurement(Path(report.predicted["table"]), report.arch, report.latency["median"])
        console.print(f"calibration of {escape(report.predicted['table'])}: intercept shifted by {shift:+.4f} ms")
    console.print(f"report: {escape(str(out))}/verify.md")
    raise typer.Exit(0 if report.passed else 1)
