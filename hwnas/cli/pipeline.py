from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from hwnas.cli._console import console, err_console
from hwnas.cli._options import Amp, Augment, BudgetFile, Quiet, TrainDevice
from hwnas.cli._types import non_negative_int, positive, positive_int, statistic_name


def pipeline(
    device: str = typer.Option(None, "--device", "-d", help="Device to ship to (default: cpu)."),
    latency_ms: float = typer.Option(None, "--latency-ms", parser=positive, help="Latency budget (ms)."),
    memory_mb: float = typer.Option(None, "--memory-mb", parser=positive,
                                    help="Memory budget: weights + peak activations (MB)."),
    config: Path = typer.Option(None, "--config", "-c", help="A TOML file of these settings (flags override it)."),
    strategy: str = typer.Option(None, "--strategy", help="Search strategy (default: evolution)."),
    estimator: str = typer.Option(None, "--estimator", help="Accuracy estimator (default: naswot)."),
    evaluations: int = typer.Option(None, "--evaluations", "-n", parser=positive_int,
                                    help="Architectures to evaluate (default: 40)."),
    epochs: int = typer.Option(None, "--epochs", parser=positive_int,
                               help="Epochs to train the chosen network (default: 10)."),
    data: str = typer.Option(None, "--data", help="digits (built in), cifar10:DIR, cifar100:DIR, mnist:DIR or "
                             "imagefolder:DIR."),
    augment: Augment = None,
    train_device: TrainDevice = None,
    amp: Amp = None,
    resolution: int = typer.Option(None, "--resolution", "-r", parser=positive_int,
                                   help="Space setting (default: 32)."),
    seed: int = typer.Option(None, "--seed", parser=non_negative_int, help="Seed of everything (default: 0)."),
    tables: str = typer.Option(None, "--tables",
                               help="Where to look for this device's table (default: latency_tables)."),
    reference: bool = typer.Option(None, "--reference/--no-reference", help="Train, export and verify the hand-"
                                   "scaled MobileNetV2-like reference beside the answer (default: on)."),
    calibration_images: int = typer.Option(None, "--calibration-images", parser=positive_int,
                                           help="On an INT8 device: training images that calibrate the quantized "
                                                "export (default: 256)."),
    statistic: str = typer.Option(None, "--statistic", parser=statistic_name,
                                  help="What the tables' latencies are read as and the budget is judged on: median, "
                                       "or min on a shared host whose load only adds time (default: median)."),
    budget: BudgetFile = None,
    out: Path = typer.Option(Path("runs/pipeline"), "--out", "-o", help="Output folder."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run."),
    force: bool = typer.Option(False, "--force", help="Start over in an existing output folder."),
    quiet: Quiet = False,
) -> None:
    """The main job: profile (if needed) → calibrate → search → train → export → verify → report."""
    from hwnas.deploy.budgets import load_budgets
    from hwnas.deploy.pipeline import PipelineConfig, run_pipeline

    flags = {"device": device, "latency_ms": latency_ms, "memory_mb": memory_mb, "strategy": strategy,
             "estimator": estimator, "evaluations": evaluations, "epochs": epochs, "data": data,
             "resolution": resolution, "seed": seed, "tables": tables, "augment": augment,
             "train_device": train_device, "amp": amp, "reference": reference,
             "calibration_images": calibration_images, "statistic": statistic}
    cfg = (PipelineConfig.from_toml(config, **flags) if config
           else PipelineConfig(**{k: v for k, v in flags.items() if v is not None}))
    res = run_pipeline(cfg, out, budgets=load_budgets(budget) if budget else None, resume=resume, force=force,
                       progress=not quiet,
                       log=lambda m: err_console.print(f"[bold]pipeline[/] {escape(m)}"))
    console.print(f"{'PASS' if res.passed else 'FAIL'}: {escape(res.arch)}, test accuracy {res.test_accuracy:.4f} "
                  f"(validation {res.valid_accuracy:.4f})\n  latency measured {res.measured_ms:.3f} ms "
                  f"({cfg.statistic}), predicted {res.predicted_ms:.3f} ms "
                  f"({res.measured_ms / res.predicted_ms - 1:+.1%})\n"
                  + (f"  beside the hand-scaled reference {escape(res.reference['arch'])}: test accuracy "
                     f"{res.reference['test_accuracy']:.4f}, latency measured {res.reference['measured_ms']:.3f} ms\n"
                     if res.reference else "")
                  + f"  report: {escape(str(res.out / 'report.md'))} (and report.html)")
    raise typer.Exit(0 if res.passed else 1)
