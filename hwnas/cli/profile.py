from __future__ import annotations

import typer
from rich.markup import escape

from hwnas.cli._console import console, log
from hwnas.cli._options import Quiet
from hwnas.cli._types import non_negative, non_negative_int, positive, positive_int, statistic_name
from hwnas.core.errors import ConfigError


def profile(
    device: str = typer.Option("cpu", "--device", "-d", help="Device name (hwnas devices) or a .toml descriptor."),
    space: str = typer.Option(None, "--space", "-s", help="Search space: proxyless or fbnet (default: proxyless)."),
    model: str = typer.Option(None, "--model", "-m",
                              help="An ONNX model to profile block by block instead of a space (onnxruntime devices)."),
    resolution: int = typer.Option(None, "--resolution", "-r", parser=positive_int,
                                   help="Input resolution (224, or 32 for CIFAR)."),
    width: float = typer.Option(None, "--width", parser=positive, help="Width multiplier (proxyless) (default: 1.0)."),
    out: str = typer.Option(None, "--out", "-o",
                            help="Table file, or a folder (ending in /) (default: latency_tables/; for --model "
                                 "<device>-model-<stem>.json)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run; nothing done is re-measured."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing table or discard a partial run."),
    rounds: int = typer.Option(None, parser=positive_int, help="Interleaved measurement rounds (each in a new random "
                                                               "order) (default: 3; 9 with --statistic min)."),
    warmup: int = typer.Option(10, parser=non_negative_int, help="Warm-up runs before each timed round."),
    min_runs: int = typer.Option(50, parser=positive_int, help="Timed runs per entry, at least (over all rounds)."),
    min_seconds: float = typer.Option(None, parser=non_negative,
                                      help="Timed seconds per entry, at least (over all rounds) (default: 1; 2 with "
                                           "--statistic min)."),
    spread_limit: float = typer.Option(1.3, parser=positive,
                                       help="Re-measure entries whose p90/median exceeds this (more than 1)."),
    seed: int = typer.Option(0, parser=non_negative_int, help="Seed of the measurement order."),
    statistic: str = typer.Option("median", "--statistic", parser=statistic_name,
                                  help="What the table's latencies are read as: median (a quiet, dedicated device) "
                                       "or min (a shared host whose load only adds time); its validation, "
                                       "calibration and verification read the same (default: median)."),
    jobs: int = typer.Option(1, "--jobs", "-j", parser=positive_int,
                             help="Processes converting blocks in parallel (before any timing)."),
    quiet: Quiet = False,
    serial: list[str] = typer.Option(None, "--serial", help="Phone serial(s) to use (default: all attached)."),
    benchmark_model: str = typer.Option(None, "--benchmark-model", help="Host path of benchmark_model (phones)."),
) -> None:
    """Measure every candidate op of a search space (or every block of an ONNX model) on a device into a table."""
    from hwnas.devices.registry import get_device
    from hwnas.foreign.modelcost import profile_model
    from hwnas.measure.profiler import ProfileOptions
    from hwnas.measure.profiler import profile as run_profile
    from hwnas.spaces import get_space

    if model is not None and (space, resolution, width) != (None, None, None):
        raise ConfigError("--model profiles that model's own blocks; --space, --resolution and --width do not apply.",
                          "pass either --model MODEL.onnx or --space (with its --resolution/--width), not both")
    if model is not None and jobs > 1:
        raise ConfigError("--jobs converts a search space's blocks in parallel; a --model's blocks are cut from the "
                          "ONNX file and need no conversion.", "drop --jobs")
    options = ProfileOptions.reading(statistic, rounds, min_seconds, warmup=warmup, min_runs=min_runs,
                                     spread_limit=spread_limit, seed=seed, jobs=jobs)
    dev = get_device(device)
    phone_only = {"--serial": serial or None, "--benchmark-model": benchmark_model}
    given = [flag for flag, value in phone_only.items() if value is not None]
    if given and dev.backend != "android":
        raise ConfigError(f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} for phones (android devices); "
                          f"device '{dev.name}' runs {dev.backend}.", f"drop {' and '.join(given)}, or pass a phone's "
                          "--device")
    dev = dev.with_options(serials=serial or None, benchmark_model=benchmark_model)
    if model is not None:
        result = profile_model(dev, model, out, options=options, resume=resume, force=force, progress=not quiet,
                               log=log)
    else:
        result = run_profile(dev, get_space(space or "proxyless", resolution, width or 1.0), out, options=options,
                             resume=resume, force=force, progress=not quiet, log=log)
    t = result.table
    unstable = sum("unstable" in e.flags for e in t.entries.values())
    console.print(f"wrote {escape(str(result.path))}: {len(t.entries)} entries, overhead {t.overhead_ms:.4f} ms "
                  f"({t.statistic}); "
                  f"{result.measured} measurements taken, {result.reused} reused from a checkpoint; "
                  f"{unstable} flagged unstable")
