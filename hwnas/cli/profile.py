from __future__ import annotations

import typer
from rich.markup import escape

from hwnas.backends.base import MeasureSettings
from hwnas.cli._console import console, err_console
from hwnas.devices import get_device
from hwnas.profiling import ProfileOptions
from hwnas.profiling import profile as run_profile
from hwnas.spaces import get_space


def profile(
    device: str = typer.Option("cpu", "--device", "-d", help="Device name (hwnas devices) or a .toml descriptor."),
    space: str = typer.Option("proxyless", "--space", "-s", help="Search space: proxyless or fbnet."),
    resolution: int = typer.Option(None, "--resolution", "-r", help="Input resolution (224, or 32 for CIFAR)."),
    width: float = typer.Option(1.0, "--width", help="Width multiplier (proxyless)."),
    out: str = typer.Option(None, "--out", "-o",
                            help="Table file, or a folder (ending in /) [default: latency_tables/]."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run; nothing done is re-measured."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing table or discard a partial run."),
    rounds: int = typer.Option(3, help="Interleaved measurement rounds (each in a new random order)."),
    warmup: int = typer.Option(10, help="Warm-up runs before each timed round."),
    min_runs: int = typer.Option(50, help="Timed runs per entry, at least (over all rounds)."),
    min_seconds: float = typer.Option(1.0, help="Timed seconds per entry, at least (over all rounds)."),
    spread_limit: float = typer.Option(1.3, help="Re-measure entries whose p90/median exceeds this."),
    seed: int = typer.Option(0, help="Seed of the measurement order."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    serial: list[str] = typer.Option(None, "--serial", help="Phone serial(s) to use (default: all attached)."),
    benchmark_model: str = typer.Option(None, "--benchmark-model", help="Host path of benchmark_model (phones)."),
) -> None:
    """Measure every candidate op of a search space on a device into a lookup table."""
    options = ProfileOptions(settings=MeasureSettings(warmup_runs=warmup, min_runs=min_runs, min_seconds=min_seconds),
                             rounds=rounds, spread_limit=spread_limit, seed=seed)
    dev = get_device(device).with_options(serials=serial or None, benchmark_model=benchmark_model)
    result = run_profile(dev, get_space(space, resolution, width), out, options=options,
                         resume=resume, force=force, progress=not quiet, log=lambda m: err_console.print(escape(m)))
    t = result.table
    unstable = sum("unstable" in e.flags for e in t.entries.values())
    console.print(f"wrote {escape(str(result.path))}: {len(t.entries)} entries, overhead {t.overhead.median:.4f} ms; "
                  f"{result.measured} measurements taken, {result.reused} reused from a checkpoint; "
                  f"{unstable} flagged unstable")
