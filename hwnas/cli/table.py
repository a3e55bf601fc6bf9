from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table as RichTable

from hwnas.cli._console import console, err_console, log
from hwnas.cli._options import AllowForeignTable, Quiet
from hwnas.cli._types import fraction, non_negative, non_negative_int, positive_int, statistic_name


def _warn(message: str) -> None:
    err_console.print(f"[bold yellow]warning:[/] {escape(message)}")

app = typer.Typer(no_args_is_help=True, help="Inspect and compare lookup tables.")


@app.command("show")
def show(
    path: Path = typer.Argument(..., help="A table written by hwnas profile."),
    plot: Path = typer.Option(None, "--plot", help="Write a layer x candidate heatmap PNG here."),
    device: str = typer.Option(None, "--device", "-d", help="Also check that the table matches this device."),
    entries: bool = typer.Option(False, "--entries", help="List every entry."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    allow_foreign_table: AllowForeignTable = False,
) -> None:
    """Summarize a table; optionally plot its heatmap and check it against a device."""
    from hwnas.devices.registry import get_device
    from hwnas.tables import view as tableview
    from hwnas.tables.table import Table

    table = Table.load(path)
    warning = ""
    if device:
        backend = get_device(device).backend_instance()
        backend.check_ready()  # the fingerprint is read off the device and its runtime
        warning = table.check_fingerprint(backend.fingerprint(), allow_foreign=allow_foreign_table)
        if warning:
            _warn(warning)
    info = tableview.summary(table)
    if warning:
        info["warning"] = warning
    if plot:
        info["plot"] = str(tableview.plot_heatmap(table, plot))
    if as_json:
        console.print_json(json.dumps(info))
        return
    for key, value in info.items():
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        console.print(f"[bold]{key:>16}[/]  {escape(text)}")
    if entries:
        rows = RichTable("median ms", "p10", "p90", "n", "weights B", "flags")
        rows.add_column("key", overflow="fold")
        for key, e in table.entries.items():
            lat = e.latency
            rows.add_row(*(f"{v:.4f}" for v in (e.median_ms, lat.p10 if lat else 0, lat.p90 if lat else 0)),
                         str(lat.n if lat else 0), str(e.memory.get("weight_bytes", "")), escape(",".join(e.flags)),
                         escape(key))
        console.print(rows)


@app.command("diff")
def diff(
    a: Path = typer.Argument(..., help="Baseline table."),
    b: Path = typer.Argument(..., help="Table to compare with the baseline."),
    top: int = typer.Option(10, parser=non_negative_int, help="How many of the largest changes to list."),
    statistic: str = typer.Option(None, "--statistic", parser=statistic_name,
                                  help="Read both tables as this statistic (median or min; every table holds "
                                       "both) (default: their own, which must agree)."),
) -> None:
    """Compare two tables of the same space: per-entry latency ratio B/A."""
    from hwnas.tables import view as tableview
    from hwnas.tables.table import Table, is_model_table

    ta, tb = Table.load(a), Table.load(b)
    if statistic is not None:
        ta, tb = ta.read_as(statistic), tb.read_as(statistic)
    d = tableview.diff(ta, tb)
    for field, (va, vb) in d.context.items():
        console.print(f"[bold]{escape(field)}[/]: {escape(str(va))} -> {escape(str(vb))}")
    console.print(f"{len(d.ratios)} common entries; median ratio B/A = {d.median_ratio:.3f}; "
                  f"only in A: {len(d.only_a)}, only in B: {len(d.only_b)}")
    rows = RichTable("key", "B/A")
    for key, ratio in sorted(d.ratios.items(), key=lambda kv: -abs(kv[1] - 1.0))[:top]:
        rows.add_row(escape(key), f"{ratio:.3f}")
    console.print(rows)
    if d.slower:
        console.print(f"{len(d.slower)} of {len(d.ratios)} entries are slower in B than in A:")
        for key in d.slower:
            console.print(f"  {escape(key)}  {d.ratios[key]:.3f}")
    if not is_model_table(ta):
        from hwnas.core.errors import TableError
        from hwnas.cost.model import reference_ratio

        try:
            la, lb = reference_ratio(ta, tb)
            console.print(f"the space's reference net: {la:.3f} ms in A, {lb:.3f} ms in B (B/A {lb / la:.3f})")
        except TableError as exc:
            console.print(f"the space's reference net is not priced: {escape(exc.message)}")


@app.command("validate")
def validate(
    device: str = typer.Option(..., "--device", "-d", help="Device to measure on (must match the table)."),
    table: Path = typer.Option(..., "--table", "-t", help="The table to validate."),
    samples: int = typer.Option(100, parser=positive_int,
                                help="Random architectures to measure (plus the reference net)."),
    seed: int = typer.Option(0, parser=non_negative_int, help="Seed of the sample and the measurement order."),
    rounds: int = typer.Option(None, parser=positive_int,
                               help="Interleaved measurement rounds (many short ones average out drift) (default: 9; "
                                    "18 for a table profiled --statistic min)."),
    min_seconds: float = typer.Option(None, parser=non_negative,
                                      help="Timed seconds per net, at least (over all rounds) (default: 1.8; 3.6 for a "
                                           "table profiled --statistic min)."),
    fit_fraction: float = typer.Option(0.3, parser=fraction,
                                       help="Share of the nets that fit the calibration, strictly between 0 and 1 "
                                            "(the rest are held out)."),
    calibrate: bool = typer.Option(False, "--calibrate", help="Store the fitted calibration in the table."),
    out: Path = typer.Option(None, "--out", "-o", help="Report JSON (default: beside the table)."),
    plot: Path = typer.Option(None, "--plot", help="Predicted-vs-measured PNG."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted validation."),
    force: bool = typer.Option(False, "--force", help="Discard an interrupted validation."),
    quiet: Quiet = False,
    jobs: int = typer.Option(1, "--jobs", "-j", parser=positive_int,
                             help="Processes converting nets in parallel (before any timing)."),
    memory: bool = typer.Option(True, "--memory/--no-memory",
                                help="Also measure each net's activation memory as the runtime allocates it."),
    allow_foreign_table: AllowForeignTable = False,
) -> None:
    """Measure random networks end to end and report how well the table predicts them."""
    from hwnas.cost import validate as v
    from hwnas.devices.registry import get_device
    from hwnas.tables.table import Table

    rounds, settings = v.timing(Table.load(table).statistic, rounds, min_seconds)
    report = v.validate(get_device(device), table, samples, seed=seed, rounds=rounds, settings=settings,
                        fit_fraction=fit_fraction, out=out, resume=resume, force=force, progress=not quiet,
                        jobs=jobs, memory=memory, allow_foreign=allow_foreign_table,
                        log=log)
    if plot:
        v.plot(report, plot)
    if calibrate:
        v.store_calibration(table, report)
    rows = RichTable("split", "n", "±5%", "±10%", "MAPE", "bias", "Spearman ρ", "Kendall τ")
    splits = [("all (raw)", report.uncalibrated["all"]), ("held-out (raw)", report.uncalibrated["heldout"])]
    if report.calibrated_heldout:
        splits.append(("held-out (calibrated)", report.calibrated_heldout))
    if report.memory:
        splits.append(("activation memory (planned)", report.memory["all"]))
        splits.append(("activation memory (liveness)", report.memory["liveness_only"]))
    for name, m in splits:
        rows.add_row(name, str(m["n"]), f"{m['within_5pct']:.1%}", f"{m['within_10pct']:.1%}", f"{m['mape']:.2%}",
                     f"{m['bias']:+.2%}", f"{m['spearman']:.4f}", f"{m['kendall']:.4f}")
    console.print(rows)
    if report.calibration:
        c = report.calibration
        terms = " ".join(f"{v:+.4g}*{t}" for t, v in zip(c["terms"], c["coef"]))
        console.print(f"calibration ({c['kind']}, leave-one-out error {c['loo_mape']:.2%} on its "
                      f"{len(c['fitted_on'])} fitted nets): measured = {c['intercept_ms']:+.4g} {terms}"
                      f"{'; stored in the table' if calibrate else ''}")
    if report.memory:
        console.print(f"memory measured as: {report.memory['method']}; predicted by the "
                      f"{report.memory['planner']} planner")
    for warning in report.warnings:  # again at the end, where it cannot scroll away
        _warn(warning)
