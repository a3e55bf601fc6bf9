"""The main job in one command: profile → calibrate → search → train → export → verify → reference → report.

Everything lands in one folder, and every step is resumable (``resume=True`` picks up where a killed run
stopped: the profiler and the validation checkpoint every measurement, the search replays its candidates,
and a finished step is not run again):

    pipeline.json      the resolved configuration, and each finished step's results and duration
    table.json         the device's table: copied from ``tables/`` when one was measured on this very
                       device (same fingerprint), else profiled here; calibrated here (never the original)
    calibration.json   the quick validation that calibrated it: predicted vs measured nets on this host now
    search/            the search's run directory (candidates, best, weights, Pareto plot)
    model.<ext>        the exported network (ONNX for ONNX Runtime, TFLite for LiteRT)
    verify/            the on-device verification (parity, latency, memory, budget)
    reference/         the hand-made baseline beside it (``reference = false`` skips it): the MobileNetV2-like
                       reference scaled to the same budget by width, depth and expansion
                       (:mod:`hwnas.search.strategies.reference`), each width's table (tables/, obtained and
                       calibrated like table.json), trained with the same schedule, exported and verified the
                       same way (search/, model.<ext>, verify/)
    report.md, report.html, *.png   the final report

Margin: the search is held to the budgets less ``margin`` (5%), so that a net the table prices right at
the limit is not pushed over it by the measurement's noise at verification.

Calibration: the host's speed drifts between sessions by more than the table's error (BENCHMARKS.md), so
the pipeline fits the table's calibration from a short validation on the machine as it is now, before it
searches: the verification then compares the measurement with a prediction made for this state of the host.
The nets it measures are feasible under the budgets plus 20%, where the search will land: a calibration
fitted on uniformly random nets, most of them far slower than the budget, extrapolates to the answer badly
(BENCHMARKS.md), and one fitted near the budget is bounded over the rest of the space
(:meth:`hwnas.cost.model.CostModel.admissible`).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field

from hwnas.core.atomic import atomic_write_text, ensure_writable_dir
from hwnas.core.errors import ConfigError, OutputError, TableError
from hwnas.core.resume import refuse_other_settings
from hwnas.core.schema import STRICT, NonNegativeInt, Positive, PositiveInt, read_json, read_toml, settings, validate
from hwnas.core.stats import Statistic
from hwnas.deploy.budgets import Budgets, Limits, resolve_limits
from hwnas.devices.registry import get_device

STEPS = ("table", "calibrate", "search", "export", "verify", "reference", "report")
OUTPUTS = {"search", "verify", "reference", "model.onnx", "model.tflite", "calibration.png", "heatmap.png",
           "report.md", "report.html"}


Margin = Annotated[float, Field(ge=0, lt=0.5, allow_inf_nan=False)]


def _no_calibration_or_enough(n: int) -> int:
    from hwnas.cost.validate import MIN_FIT

    if 0 < n < MIN_FIT:  # a calibration is fitted on at least MIN_FIT nets besides the reference
        raise ValueError(f"must be 0 (no calibration) or at least {MIN_FIT} nets, got {n}")
    return n


CalibrationSamples = Annotated[NonNegativeInt, AfterValidator(_no_calibration_or_enough)]


@settings("pipeline settings", "correct it on the command line or in the --config file (keys and flags share "
          "names: latency_ms is --latency-ms)")
class PipelineConfig:
    device: str = "cpu"
    latency_ms: Positive | None = None
    memory_mb: Positive | None = None
    space: str = "proxyless"
    resolution: PositiveInt = 32
    strategy: str = "evolution"
    estimator: str = "naswot"
    evaluations: PositiveInt = 40
    epochs: PositiveInt = 10
    data: str = "digits"
    seed: NonNegativeInt = 0
    tables: str = "latency_tables"
    calibration_samples: CalibrationSamples = 20  # 0 skips the calibration
    limit: PositiveInt | None = None  # use at most this many images (quick runs)
    augment: Literal["auto", "flip-crop", "crop", "none"] = "auto"
    train_device: str = "auto"  # where the networks train (the device measured is `device`)
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    margin: Margin = 0.05  # the search aims this far under each budget, for the measurement noise
    reference: bool = True  # train, export and verify the hand-scaled reference beside the answer
    reference_widths: list[Positive] = field(default_factory=lambda: [0.35, 0.5, 0.75, 1.0])  # its width multipliers
    calibration_images: PositiveInt = 256  # on an INT8 device: training images that calibrate the quantized export
    statistic: Statistic = "median"  # what every table's latencies are read as, and the budget judged on (min: a
    # shared host whose load only adds time; hwnas.core.stats)

    def search_budget(self) -> tuple[float | None, float | None]:
        """(latency ms, memory MB) the search is held to: the budgets less the margin."""
        scale = 1.0 - self.margin
        return (self.latency_ms * scale if self.latency_ms is not None else None,
                self.memory_mb * scale if self.memory_mb is not None else None)

    def __post_init__(self) -> None:
        if self.latency_ms is None and self.memory_mb is None:
            raise ConfigError("the pipeline needs a budget.", "give --latency-ms and/or --memory-mb")
        from hwnas.learn.runtime import check_device

        check_device(self.train_device)
        if self.strategy == "reference":
            raise ConfigError("the pipeline compares its search's answer with the hand-scaled reference; the "
                              "reference is not a search of its own here.",
                              "choose a search strategy (evolution, proxyless, ...): the reference runs beside it")
        if self.reference:
            from hwnas.search.strategies.reference import ReferenceScaling
            from hwnas.spaces import get_space

            ReferenceScaling(widths=self.reference_widths)  # the grid's widths, checked before any work
            try:
                get_space(self.space, self.resolution).scaled_choices(1, 6, 3)
            except ConfigError as exc:
                raise ConfigError(exc.message,
                                  "set reference = false (--no-reference) to skip the baseline") from None

    @classmethod
    def from_toml(cls, path: Path, **overrides) -> PipelineConfig:
        """Defaults, then the TOML file's keys, then ``overrides`` (the flags that were given)."""
        data = read_toml(Path(path), "pipeline config", "pass a TOML file of pipeline settings (README: "
                         "hwnas pipeline --config)")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}.", f"use {', '.join(sorted(known))}")
        return cls(**{**data, **{k: v for k, v in overrides.items() if v is not None}})


@dataclass
class PipelineResult:
    out: Path
    arch: str
    valid_accuracy: float
    test_accuracy: float
    predicted_ms: float
    measured_ms: float
    passed: bool
    reference: dict | None = None  # the hand-made baseline's figures (the reference step), where it ran


_START_OVER = "pass --force to start the pipeline over in that folder (or choose another --out)"


class _StateFile(BaseModel):
    model_config = STRICT
    config: dict[str, Any]
    done: dict[str, dict[str, Any]]


class _State:
    """``pipeline.json``: the config and the steps finished, written atomically after each step."""

    def __init__(self, out: Path, cfg: PipelineConfig, resume: bool, force: bool) -> None:
        self.path = out / "pipeline.json"
        config = asdict(cfg)
        self.done: dict[str, dict] = {}
        if self.path.exists():
            old = validate(_StateFile, read_json(self.path, "pipeline state", _START_OVER), str(self.path),
                           _START_OVER).model_dump()
            if not (resume or force):
                raise OutputError(f"{out} already holds a pipeline run.",
                                  "pass --resume to continue it, --force to start over, or choose another --out")
            if resume:
                refuse_other_settings(old.get("config"), config, "pipeline", out,
                                      "resume with the same options, or pass --force to start over")
                self.done = old.get("done", {})
            else:  # only what a pipeline writes: --out may be a folder that holds other things too
                for child in out.iterdir():
                    if child.name in OUTPUTS or child.name.startswith(("table.json", "calibration.json")):
                        shutil.rmtree(child) if child.is_dir() else child.unlink()
        ensure_writable_dir(out)
        self.config = config
        self.save()

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps({"config": self.config, "done": self.done}, indent=1))

    def finish(self, step: str, info: dict) -> None:
        self.done[step] = info
        self.save()


def _table(cfg: PipelineConfig, device, target: Path, progress: bool, log, width: float = 1.0) -> dict:
    """Reuse the folder's table (of the space at ``width``) when it was measured on this device, read as the
    config's statistic; else profile one here, into ``target``."""
    from hwnas.measure.profiler import ProfileOptions, default_table_path, profile
    from hwnas.spaces import get_space
    from hwnas.tables.table import Table

    space = get_space(cfg.space, cfg.resolution, width)
    source = default_table_path(device, space, Path(cfg.tables))
    backend = device.backend_instance()
    backend.check_ready()
    if source.exists():
        try:
            found = Table.load(source)
            found.check_fingerprint(backend.fingerprint())
            if found.statistic == cfg.statistic:
                shutil.copyfile(source, target)
            else:  # the same measurements read otherwise; the calibration step fits it again
                found.read_as(cfg.statistic).save(target)
            return {"table": str(target), "from": str(source), "profiled": False, "statistic": cfg.statistic}
        except TableError as exc:
            log(f"{source} was measured elsewhere ({exc.message}); profiling this device")
    profile(device, space, target, options=ProfileOptions.reading(cfg.statistic), resume=True, progress=progress,
            log=log)
    return {"table": str(target), "from": None, "profiled": True, "statistic": cfg.statistic}


def calibration_nets(table: Path, latency_ms: float | None, memory_mb: float | None, samples: int,
                     seed: int = 0) -> list:
    """``samples`` feasible nets of ``table`` under the budgets plus 20%: where a search will land, on both sides
    of the limit."""
    import numpy as np

    from hwnas.cost.model import CostModel
    from hwnas.search.budget import MB, Budget, Feasibility
    from hwnas.spaces.arch import Arch
    from hwnas.tables.table import Table

    model = CostModel(Table.load(table))
    widen = 1.2
    budget = Budget(latency_ms * widen if latency_ms is not None else None,
                    memory_mb * widen * MB if memory_mb is not None else None)
    rows = Feasibility(model, budget).sample(samples, np.random.default_rng(seed))
    return [Arch.of(model.space, row) for row in rows]


def calibrate_table(device, table: Path, latency_ms: float | None, memory_mb: float | None, samples: int,
                    seed: int = 0, progress: bool = True, name: str = "calibration") -> dict:
    """Calibrate ``table`` on this host now, on nets near the budgets (:func:`calibration_nets`); the validation
    beside it (``name``.json and .png). Returns the held-out error after calibration."""
    from hwnas.cost import validate as v
    from hwnas.tables.table import Table

    rounds = 5 if Table.load(table).statistic == "median" else None  # a min's own default: it needs more moments
    report = v.validate(device, table, samples, seed=seed, rounds=rounds, fit_fraction=0.5,
                        out=table.parent / f"{name}.json", resume=True, progress=progress, memory=False,
                        archs=calibration_nets(table, latency_ms, memory_mb, samples, seed))
    v.store_calibration(table, report)
    v.plot(report, table.parent / f"{name}.png")
    return {"heldout_within_10pct": report.calibrated_heldout["within_10pct"],
            "heldout_mape": report.calibrated_heldout["mape"]}


def _calibrate(cfg: PipelineConfig, device, table: Path, progress: bool, name: str = "calibration") -> dict:
    return calibrate_table(device, table, cfg.latency_ms, cfg.memory_mb, cfg.calibration_samples, cfg.seed,
                           progress, name)


def run_pipeline(cfg: PipelineConfig, out: Path, *, budgets: Budgets | None = None, resume: bool = False,
                 force: bool = False, progress: bool = True, log=lambda msg: None) -> PipelineResult:
    from hwnas.deploy.export import format_for
    from hwnas.deploy.report import write_pipeline_report
    from hwnas.deploy.verify import verify
    from hwnas.search.run import SearchConfig, run_search

    device = get_device(cfg.device)
    fmt = format_for(device.backend_instance().suffix)
    if fmt is None or fmt == "tensorrt":
        raise ConfigError(f"the pipeline cannot export and verify on {device.name} yet.",
                          "run it on cpu, cpu-int8, cpu-tflite or cpu-tflite-int8; export for the GPU with hwnas "
                          "export --format tensorrt")
    out = Path(out)
    state = _State(out, cfg, resume, force)
    model_path = out / f"model.{fmt}"
    limits = resolve_limits(device.name, model_path, budgets, Limits(
        latency_ms=cfg.latency_ms, memory_bytes=cfg.memory_mb * 1e6 if cfg.memory_mb else None))
    for step in STEPS:
        if step in state.done:
            log(f"{step}: done earlier")
            continue
        log(f"{step} …")
        started = time.perf_counter()
        if step == "table":
            info = _table(cfg, device, out / "table.json", progress, log)
        elif step == "calibrate":
            info = (_calibrate(cfg, device, out / "table.json", progress) if cfg.calibration_samples > 0
                    else {"skipped": True})
        elif step == "search":
            latency_ms, memory_mb = cfg.search_budget()
            sc = SearchConfig(table=str(out / "table.json"), strategy=cfg.strategy, latency_ms=latency_ms,
                              memory_mb=memory_mb, estimator=cfg.estimator, data=cfg.data,
                              evaluations=cfg.evaluations, seed=cfg.seed, final_epochs=cfg.epochs, limit=cfg.limit,
                              augment=cfg.augment, train_device=cfg.train_device, amp=cfg.amp)
            res = run_search(sc, out / "search", resume=(out / "search").exists(), progress=progress)
            info = {"arch": str(res.arch), "valid_accuracy": res.valid_accuracy, "test_accuracy": res.test_accuracy,
                    "splits": res.data.get("splits", {}), "test_split": res.data.get("test_split"),
                    "predicted_ms": res.candidate.latency_ms}
        elif step == "export":
            model = _export(cfg, device, out / "search", fmt, model_path)
            info = {"model": str(model.path), "precision": model.metadata.get("precision", "fp32"),
                    "parity": model.parity.to_dict() if model.parity else None}
        elif step == "verify":
            rep = verify(model_path, device, table=out / "table.json", limits=limits,
                         data=cfg.data, real_images=_test_images(device), out=out / "verify")
            info = {"passed": rep.passed, "measured_ms": rep.measured_ms, "statistic": rep.statistic,
                    "predicted_ms": rep.predicted["latency_ms"] if rep.predicted else None}
        elif step == "reference":
            info = _reference(cfg, device, out, fmt, limits, progress, log) if cfg.reference else {"skipped": True}
        else:
            info = {"report": str(write_pipeline_report(out, state.done, limits))}
        state.finish(step, {**info, "seconds": round(time.perf_counter() - started, 1)})
    s, v, r = state.done["search"], state.done["verify"], state.done["reference"]
    return PipelineResult(out, s["arch"], s["valid_accuracy"], s["test_accuracy"], v["predicted_ms"],
                          v["measured_ms"], v["passed"], None if r.get("skipped") else r)


INT8_TEST_IMAGES = 2000  # an INT8 answer's accuracy drop is judged on this many test images (the whole split if fewer)


def _test_images(device) -> int:
    """Test images the verification runs: a float model is checked for parity on the default 256; an INT8 model
    is judged by the accuracy it loses, which 256 images resolve only to 0.4 points."""
    from hwnas.deploy.verify import REAL_IMAGES

    return INT8_TEST_IMAGES if device.precision == "int8" else REAL_IMAGES


def _export(cfg: PipelineConfig, device, run: Path, fmt: str, path: Path):
    """The network of the search ``run`` exported for ``device``: as it trained, or on an INT8 device that hwnas
    quantizes for, quantized with its scheme from ``calibration_images`` of the run's training split."""
    from hwnas.deploy.export import export, export_calibration, resolve_source

    src = resolve_source(str(run))
    if device.precision != "int8" or not device.backend_class.quantizer:
        return export(src, fmt, path)
    calibration = export_calibration(src, fmt, "int8", None, cfg.calibration_images)
    return export(src, fmt, path, precision="int8", calibration=calibration, device=device.name)


def _reference(cfg: PipelineConfig, device, out: Path, fmt: str, limits: Limits, progress: bool, log) -> dict:
    """The hand-made baseline, through the same steps as the answer: each width's table obtained and calibrated
    as ``table.json`` was, the reference scaled to the same search budget, trained with the same schedule,
    exported and verified on the device."""
    from hwnas.search.budget import InfeasibleBudget
    from hwnas.search.strategies.reference import ReferenceScaling
    from hwnas.spaces import get_space
    from hwnas.tables.table import table_stem

    folder = out / "reference"
    tables = folder / "tables"
    ensure_writable_dir(tables)
    widths = ReferenceScaling(widths=cfg.reference_widths).widths
    main = tables / f"{table_stem(device.name, cfg.space, cfg.resolution)}.json"
    shutil.copyfile(out / "table.json", main)  # the search's own table (width 1), calibrated already
    for width in (w for w in widths if w != 1.0):
        space = get_space(cfg.space, cfg.resolution, width)
        target = tables / f"{table_stem(device.name, space.id, space.resolution)}.json"
        if not target.exists():
            log(f"reference: the table of width {width:g}")
            _table(cfg, device, target, progress, log, width=width)
        if cfg.calibration_samples > 0 and not (tables / f"calibration-w{width:g}.png").exists():  # its last file
            try:
                _calibrate(cfg, device, target, progress, name=f"calibration-w{width:g}")
            except InfeasibleBudget:  # no net of this width near the budget: none of it can be the reference
                log(f"reference: width {width:g} has no net near the budget; left uncalibrated")
    try:
        return _reference_net(cfg, device, folder, tables, main, widths, fmt, limits, progress)
    except ConfigError as exc:  # no grid point fits, say: the answer stands, its report says why nothing is beside it
        log(f"reference: skipped, {exc.message}")
        return {"skipped": True, "reason": exc.message}


def _reference_net(cfg: PipelineConfig, device, folder: Path, tables: Path, main: Path, widths, fmt: str,
                   limits: Limits, progress: bool) -> dict:
    from hwnas.deploy.verify import verify
    from hwnas.search.run import SearchConfig, run_search

    latency_ms, memory_mb = cfg.search_budget()
    sc = SearchConfig(table=str(main), strategy="reference", latency_ms=latency_ms, memory_mb=memory_mb,
                      estimator=cfg.estimator, data=cfg.data, evaluations=cfg.evaluations, seed=cfg.seed,
                      final_epochs=cfg.epochs, limit=cfg.limit, augment=cfg.augment, train_device=cfg.train_device,
                      amp=cfg.amp, options={"widths": list(widths)})
    res = run_search(sc, folder / "search", resume=(folder / "search").exists(), progress=progress)
    model_path = folder / f"model.{fmt}"
    _export(cfg, device, folder / "search", fmt, model_path)
    rep = verify(model_path, device, tables=tables, limits=limits, data=cfg.data, real_images=_test_images(device),
                 out=folder / "verify")
    return {"arch": str(res.arch), "valid_accuracy": res.valid_accuracy, "test_accuracy": res.test_accuracy,
            "predicted_ms": res.candidate.latency_ms, "measured_ms": rep.measured_ms,
            "memory_bytes": rep.memory.get("measured_total_bytes"), "passed": rep.passed, "notes": res.notes}
