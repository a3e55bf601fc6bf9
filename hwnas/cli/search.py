from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from hwnas.cli._console import console, err_console
from hwnas.cli._options import AllowForeignTable, Amp, Augment, Compile, Quiet, TablesDir, TrainDevice, Workers
from hwnas.cli._types import non_negative, non_negative_int, positive, positive_int, positive_list
from hwnas.core.errors import ConfigError


def _table_for(device: str | None, table: Path | None, space: str, resolution: int, width: float,
               tables: Path) -> Path:
    """--table as given (checked against --device's fingerprint when that is given too), else --device's
    table in --tables."""
    if table is not None:
        return table
    if device is None:
        raise ConfigError("a search needs a device's table.", "give --device D (its table in --tables) or --table T")
    from hwnas.devices.registry import get_device
    from hwnas.measure.profiler import default_table_path
    from hwnas.spaces import get_space

    path = default_table_path(get_device(device), get_space(space, resolution, width), tables)
    if not path.exists():
        raise ConfigError(f"no table for {device} at {path}.",
                          f"profile it first: hwnas profile --device {device} --space {space} "
                          f"--resolution {resolution} --out {tables}/")
    return path


def search(
    device: str = typer.Option(None, "--device", "-d", help="Device whose table to search on (see --tables); "
                               "with --table, the device the table must match."),
    table: Path = typer.Option(None, "--table", "-t", help="The lookup table to search on (instead of --device)."),
    space: str = typer.Option("proxyless", "--space", "-s", help="Search space (with --device)."),
    resolution: int = typer.Option(32, "--resolution", "-r", parser=positive_int,
                                   help="Space setting (with --device)."),
    width: float = typer.Option(1.0, "--width", parser=positive, help="Width multiplier (with --device)."),
    tables: TablesDir = Path("latency_tables"),
    allow_foreign_table: AllowForeignTable = False,
    strategy: str = typer.Option("evolution", "--strategy", help="proxyless, mnas, memnet, evolution, random, or "
                                 "reference: the hand-made baseline (MobileNetV2-like, scaled to the budget)."),
    latency_ms: float = typer.Option(None, "--latency-ms", parser=positive, help="Latency budget (predicted, ms)."),
    memory_mb: float = typer.Option(None, "--memory-mb", parser=positive,
                                    help="Memory budget: weights + peak activations as the runtime plans them (MB)."),
    estimator: str = typer.Option("naswot", "--estimator", help="Accuracy estimator: naswot, train or supernet."),
    data: str = typer.Option("digits", "--data", help="digits (built in), cifar10:DIR, cifar100:DIR, mnist:DIR (IDX "
                             "files: MNIST, Fashion-MNIST, KMNIST) or imagefolder:DIR."),
    evaluations: int = typer.Option(40, "--evaluations", "-n", parser=positive_int,
                                    help="Architectures to evaluate, at most."),
    epochs: int = typer.Option(10, "--epochs", parser=non_negative_int,
                               help="Epochs to retrain the chosen architecture from scratch."),
    estimator_epochs: int = typer.Option(3, "--estimator-epochs", parser=positive_int,
                                         help="Epochs per candidate (train estimator)."),
    search_epochs: int = typer.Option(6, "--search-epochs", parser=positive_int,
                                      help="ProxylessNAS: supernet epochs (2 of warm-up)."),
    loss: str = typer.Option("mul", "--loss", help="ProxylessNAS: mul, CE·α·(LAT / T)^β, or add, "
                                                   "CE + λ·LAT / T."),
    lam: float = typer.Option(0.1, "--lam", parser=non_negative, help="ProxylessNAS: λ of --loss add."),
    hard: bool = typer.Option(False, "--hard", help="MnasNet: the hard constraint (α = 0, β = −1)."),
    widths: str = typer.Option(None, "--widths", parser=positive_list,
                               help="reference: the width multipliers to scale by, each with its own table in "
                               "--tables (default: 0.35,0.5,0.75,1.0)."),
    batch_size: int = typer.Option(64, "--batch-size", parser=positive_int, help="Training batch size."),
    lr: float = typer.Option(0.05, "--lr", parser=positive, help="Learning rate (cosine decay)."),
    optimizer: str = typer.Option("sgd", "--optimizer", help="sgd (momentum 0.9, nesterov) or adam."),
    label_smoothing: float = typer.Option(0.0, "--label-smoothing", parser=non_negative,
                                          help="Label smoothing of the training loss (0 ≤ value < 1)."),
    limit: int = typer.Option(None, "--limit", parser=positive_int,
                              help="Train and validate on at most this many images (quick runs; test stays whole)."),
    augment: Augment = "auto",
    train_device: TrainDevice = "auto",
    amp: Amp = "auto",
    workers: Workers = None,
    compile: Compile = False,
    seed: int = typer.Option(0, "--seed", parser=non_negative_int,
                             help="Seed of everything: data split, sampling, training."),
    executor: str = typer.Option("local", "--executor", help="local (in this process) or ray."),
    address: str = typer.Option(None, "--address", help="Ray cluster address (with --executor ray): auto, "
                                "HOST:PORT or ray://HOST:PORT."),
    out: Path = typer.Option(None, "--out", "-o", help="Run directory (default: runs/<strategy>-<seed>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run."),
    force: bool = typer.Option(False, "--force", help="Start over in an existing run directory."),
    quiet: Quiet = False,
) -> None:
    """Search the most accurate architecture within a latency and/or memory budget, on a device's table."""
    from hwnas.search.run import SearchConfig, run_search

    path = _table_for(device, table, space, resolution, width, tables)
    options: dict = {}
    if strategy == "proxyless":
        options = {"epochs": search_epochs, "warmup_epochs": min(2, search_epochs), "loss": loss, "lam": lam}
    elif strategy == "mnas":
        options = {"hard": hard}
    elif strategy == "reference" and widths is not None:
        options = {"widths": widths}
    if widths is not None and strategy != "reference":
        raise ConfigError("--widths is the reference strategy's grid.", "drop --widths, or add --strategy reference")
    cfg = SearchConfig(table=str(path), strategy=strategy, latency_ms=latency_ms, memory_mb=memory_mb,
                       estimator=estimator, data=data, evaluations=evaluations, seed=seed,
                       estimator_epochs=estimator_epochs, final_epochs=epochs, batch_size=batch_size, lr=lr,
                       optimizer=optimizer, label_smoothing=label_smoothing,
                       limit=limit, augment=augment, train_device=train_device, amp=amp, workers=workers,
                       compile=compile, executor=executor, address=address, options=options,
                       device=device, allow_foreign_table=allow_foreign_table)
    result = run_search(cfg, out or Path("runs") / f"{strategy}-{seed}", resume=resume, force=force,
                        progress=not quiet, log=lambda m: err_console.print(f"[bold red]warning:[/] {escape(m)}"))
    if not result.main:
        return  # rank > 0 of a torchrun search: rank 0 reports
    c = result.candidate
    splits = result.data.get("splits", {})
    console.print(f"best: {escape(str(result.arch))} (id {result.arch.id})\n"
                  f"  predicted latency {c.latency_ms:.3f} ms, memory {c.memory_bytes / 1e6:.2f} MB\n"
                  f"  test accuracy {result.test_accuracy:.4f} ({splits.get('test')} test images), validation "
                  f"{result.valid_accuracy:.4f} ({splits.get('valid')}) (retrained {epochs} epochs on "
                  f"{splits.get('train')})\n"
                  f"  {result.evaluations} evaluations, {result.reused} reused; "
                  f"run directory {escape(str(result.run_dir))}"
                  + "".join(f"\n  note: {escape(note)}" for note in result.notes))
