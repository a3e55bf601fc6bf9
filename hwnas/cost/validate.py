"""Does the table predict what the device measures? Sample networks, measure them end to end, compare.

``validate`` samples N random architectures of the table's space (plus its reference net), builds and
converts each whole network for the device's runtime, and times them in interleaved rounds, each in a new
random order (checkpointed like profiling, so ``resume`` loses nothing). It reports, per split, the share of
nets within ±5% and ±10%, the mean absolute % error, Spearman ρ and Kendall τ of predicted vs measured
latency. The first ``fit_fraction`` of the nets fit a calibration; the rest are held out and reported
before and after it (never on the nets it was fitted on).

Rounds: a shared host's speed drifts by several percent over minutes. Within one round a net's median is
tight, but two runs of the same nets differ per net by more than the table's error (BENCHMARKS.md), which
alone caps the rank correlation. Many short rounds (9 by default) sample every net at many moments, so the
drift averages out instead of landing on whichever nets ran during it. Where the host's load moves faster
than that (a shared virtual machine slowed by half for seconds at a time), a table profiled with
``--statistic min`` is validated by each net's fastest run, the one figure such load leaves alone.

Memory: each net's peak activation memory is also measured as the runtime allocates it
(:mod:`hwnas.measure.memprobe`, one fresh process per net) and compared with the prediction: the whole graph under
the runtime's buffer planning (:mod:`hwnas.cost.memplan`), and, for reference, the per-block liveness bound
that ``predict_many`` composes.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import Field

from hwnas.core.atomic import atomic_write_text
from hwnas.core.errors import ConfigError
from hwnas.core.progress import ProgressBars
from hwnas.core.schema import NonNegativeInt, PositiveInt, settings
from hwnas.cost.model import CALIBRATION_SPREAD, CostModel
from hwnas.devices.backends.base import MeasureSettings, pool_rounds
from hwnas.devices.registry import Device
from hwnas.measure.checkpoint import Checkpoint
from hwnas.measure.convert import Recipe, convert_in_parallel, net_module
from hwnas.measure.memprobe import PROBES, measure_activation_memory
from hwnas.measure.pool import Pool, Unit, round_jobs
from hwnas.spaces.arch import Arch, sample_choices
from hwnas.tables.table import Table

MIN_FIT = 3  # nets a calibration is fitted on, at least
# kind -> (terms, with an intercept)
KINDS = {"scale": (("predicted_ms",), False), "affine": (("predicted_ms",), True),
         "linear": (("predicted_ms", "blocks", "io_mb", "weight_mb"), True)}


@dataclass(frozen=True)
class Calibration:
    """measured ≈ intercept + Σ coef · feature (features of :attr:`hwnas.cost.model.CostModel.features`).

    ``scale`` corrects the table's sum by one factor; ``affine`` adds an offset; ``linear`` adds the per-call
    count, the blocks' I/O volume and the weight volume — the biases that summing standalone blocks has
    (layout reorders at each block's edges, weights that stay cached in a block timed alone). The kind is
    chosen by leave-one-out error on the fitted nets only, among the kinds :meth:`hwnas.cost.model.CostModel.admissible`
    over the whole space (the correction calibrated / raw varies by at most
    :data:`~hwnas.cost.model.CALIBRATION_SPREAD` across it): nets fitted near one budget say little about the rest of
    the space, and an offset or slope fitted on them alone can price the smallest net above the budget, or
    below zero. ``scale`` is the fallback that never extrapolates: one ratio everywhere.
    """

    kind: str
    terms: tuple[str, ...]
    coef: tuple[float, ...]
    intercept_ms: float
    fitted_on: tuple[str, ...] = ()
    loo_mape: float = float("nan")

    def apply(self, feats: dict[str, np.ndarray]) -> np.ndarray:
        return self.intercept_ms + sum(c * np.asarray(feats[t]) for t, c in zip(self.terms, self.coef))

    @staticmethod
    def _solve(x: np.ndarray, y: np.ndarray, intercept: bool) -> np.ndarray:
        """(intercept, coef...) by least squares; the intercept is 0 when not fitted."""
        if not intercept:
            return np.concatenate([[0.0], np.linalg.lstsq(x, y, rcond=None)[0]])
        return np.linalg.lstsq(np.column_stack([np.ones(len(y)), x]), y, rcond=None)[0]

    @classmethod
    def fit(cls, feats: dict[str, np.ndarray], measured: np.ndarray, archs: list[str],
            model: CostModel | None = None) -> Calibration:
        """The best admissible kind by leave-one-out error; ``model`` (the table's) is the space the kinds are
        judged on (without it, none is refused)."""
        if len(measured) < MIN_FIT:
            raise ConfigError(f"calibration needs at least {MIN_FIT} fitted nets.", "raise --samples or --fit-fraction")
        best = None
        for kind, (terms, intercept) in KINDS.items():
            if len(terms) > 1 and len(measured) < 3 * (len(terms) + 1):
                continue  # too few nets for this many terms; the one-term fits always run
            x = np.column_stack([feats[t] for t in terms])
            w = cls._solve(x, measured, intercept)
            if kind != "scale" and model is not None and not model.admissible(terms, w[1:], w[0]):
                continue  # it would extrapolate: its correction varies too much somewhere in the space
            loo = []
            for i in range(len(measured)):
                keep = np.arange(len(measured)) != i
                wi = cls._solve(x[keep], measured[keep], intercept)
                loo.append(abs(wi[0] + x[i] @ wi[1:] - measured[i]) / measured[i])
            cal = cls(kind, terms, tuple(float(v) for v in w[1:]), float(w[0]), tuple(archs), float(np.mean(loo)))
            if best is None or cal.loo_mape < best.loo_mape:
                best = cal
        return best


def metrics(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    from scipy import stats

    err = predicted / measured - 1.0
    return {"n": int(len(err)), "within_5pct": float(np.mean(np.abs(err) <= 0.05)),
            "within_10pct": float(np.mean(np.abs(err) <= 0.10)), "mape": float(np.mean(np.abs(err))),
            "bias": float(np.median(err)), "max_abs_error": float(np.max(np.abs(err))),
            "spearman": float(stats.spearmanr(predicted, measured).statistic) if len(err) > 2 else float("nan"),
            "kendall": float(stats.kendalltau(predicted, measured).statistic) if len(err) > 2 else float("nan")}


@dataclass
class ValidationReport:
    device: str
    table: str
    nets: list[dict] = field(default_factory=list)  # arch, predicted_ms, measured (stats), split, memory
    uncalibrated: dict = field(default_factory=dict)  # split -> metrics
    calibration: dict | None = None
    calibrated_heldout: dict | None = None
    memory: dict | None = None  # method, and metrics of predicted vs measured peak activation bytes (all nets)
    warnings: list[str] = field(default_factory=list)  # e.g. the table is foreign (--allow-foreign-table)
    statistic: str = "median"  # what the nets' measured latency is read as: the table's (hwnas.core.stats)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


def _archs(model: CostModel, samples: int, seed: int) -> list[Arch]:
    space = model.space
    ref = Arch.of(space, space.reference_choices())
    rng = np.random.default_rng(seed)
    out, seen = [ref], {str(ref)}
    for _ in range(20):  # bounded: draw until enough distinct nets (random spaces are huge; one draw suffices)
        for row in sample_choices(space, samples, rng):
            a = Arch.of(space, row)
            if str(a) not in seen and len(out) <= samples:
                seen.add(str(a))
                out.append(a)
        if len(out) > samples:
            break
    return out


@settings("validation settings", "correct that flag of hwnas table validate (--samples, --rounds, --fit-fraction, "
          "--seed, --jobs)")
class ValidateOptions:
    """The numbers a validation runs with; ``fit_fraction`` 0 fits no calibration (a library caller's choice)."""

    samples: NonNegativeInt = 100
    seed: NonNegativeInt = 0
    rounds: PositiveInt = 9
    fit_fraction: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 0.3
    jobs: PositiveInt = 1


def timing(statistic: str, rounds: int | None = None, min_seconds: float | None = None) -> tuple[int, MeasureSettings]:
    """(rounds, settings) a validation of a table read as ``statistic`` times its nets with: the median 9 rounds
    over 1.8 s per net; the min twice that, for the same reason its table was profiled longer (a net's fastest run
    must fall in one of the host's quiet moments)."""
    quick = statistic != "min"
    rounds = rounds if rounds is not None else (9 if quick else 18)
    min_seconds = min_seconds if min_seconds is not None else (1.8 if quick else 3.6)
    return rounds, MeasureSettings.at_least(5, 30, min_seconds)


def validate(device: Device, table_path: Path, samples: int = 100, *, seed: int = 0, rounds: int | None = None,
             settings: MeasureSettings | None = None, fit_fraction: float = 0.3, out: Path | None = None,
             resume: bool = False, force: bool = False, progress: bool = True, jobs: int = 1,
             memory: bool = True, archs: list[Arch] | None = None, allow_foreign: bool = False,
             log: Callable[[str], None] = lambda msg: None) -> ValidationReport:
    """Measure ``samples`` random nets (or the given ``archs``) and the reference net; see the module doc.

    A table of another device or runtime is refused, or with ``allow_foreign`` used with its warning logged
    and kept in the report.
    """
    ValidateOptions(samples=samples, seed=seed, rounds=9 if rounds is None else rounds, fit_fraction=fit_fraction,
                    jobs=jobs)
    table = Table.load(table_path)
    rounds, default_settings = timing(table.statistic, rounds)
    settings = settings or default_settings
    backend = device.backend_instance()
    backend.check_ready()
    warning = table.check_fingerprint(backend.fingerprint(), allow_foreign=allow_foreign)
    if warning:
        log(warning)
    model = CostModel(table)
    if archs is None:
        archs = _archs(model, samples, seed)
    else:  # the reference net first (always held out), then the caller's nets
        ref = Arch.of(model.space, model.space.reference_choices())
        archs = [ref, *dict.fromkeys(a for a in archs if a != ref)]
    if fit_fraction > 0 and len(archs) - 1 < MIN_FIT:  # found out before anything is measured, not after
        raise ConfigError(f"a calibration is fitted on at least {MIN_FIT} nets besides the reference net; this "
                          f"validation has {len(archs) - 1}.",
                          f"raise --samples to {MIN_FIT} or more (pipeline: calibration_samples)")
    memory = memory and backend.name in PROBES
    out = Path(out) if out else Path(table_path).with_name(Path(table_path).stem + f".validation-{samples}.json")
    state = {"table": table.to_dict()["device"], "archs": [str(a) for a in archs], "settings": settings.to_dict(),
             "rounds": rounds}
    ckpt = Checkpoint.open(out, state, resume=resume, force=force)
    if ckpt.discarded:
        log(f"{len(ckpt.discarded)} unreadable checkpoint entries in {ckpt.folder} are measured again")
    with ProgressBars(progress) as bars:
        advance = bars.task("convert", len(archs))
        if jobs > 1:  # fill the artifact cache in parallel; nothing is timed meanwhile
            convert_in_parallel(device, [Recipe(net_module, (a.space_id, a.resolution, a.choices),
                                                a.space.input_shape, f"net/{a}") for a in archs], jobs, advance)
        artifacts = {}
        for a in archs:
            artifacts[str(a)] = backend.prepare(a.build(), model.space.input_shape, tag=f"net/{a}")
            if jobs <= 1:
                advance()
        names = list(artifacts)
        jobs = round_jobs(names, rounds, seed)
        advance = bars.task("measure", len(jobs))
        advance(sum(ckpt.has(j.file) for j in jobs))
        units = [Unit(label, b, artifacts) for label, b in backend.units()]
        Pool(units, ckpt, advance).run(jobs, settings.split(rounds))
        if memory:  # after all timing: the probes' processes must not disturb it
            advance = bars.task("memory", len(names))
            for n in names:
                name = Checkpoint.name(n, "memory")
                if not ckpt.has(name):
                    art = artifacts[n]
                    ckpt.save_info(name, measure_activation_memory(backend.name, art.path, art.input_shape,
                                                                   device.threads))
                advance()
    measured = {n: pool_rounds([ckpt.load(Checkpoint.name(n, f"r{r}")) for r in range(rounds)]) for n in names}
    raw = {n: model.predict(Arch.parse(n), calibrated=False).latency_ms for n in names}
    n_fit = max(MIN_FIT, int(round(fit_fraction * (len(names) - 1)))) if fit_fraction > 0 else 0
    fit = names[1:1 + n_fit]  # the reference net (first) is always held out
    report = ValidationReport(device=device.name, table=str(table_path), warnings=[warning] if warning else [],
                              statistic=table.statistic)
    for n in names:
        report.nets.append({"arch": n, "predicted_ms": raw[n], "measured": measured[n].to_dict(),
                            "split": "fit" if n in fit else "heldout"})
    if memory:
        liveness = model.predict_many(np.array([Arch.parse(n).choices for n in names]))["peak_activation_bytes"]
        planned = np.array([model.planned_activation(Arch.parse(n)) for n in names], float)
        probes = [ckpt.load_info(Checkpoint.name(n, "memory")) for n in names]
        measured_mem = np.array([p["activation_bytes"] for p in probes], float)
        for net, live, plan, meas in zip(report.nets, liveness, planned, measured_mem):
            net["memory"] = {"predicted_activation_bytes": int(plan), "liveness_activation_bytes": int(live),
                             "measured_activation_bytes": int(meas)}
        report.memory = {"method": probes[0]["method"], "planner": model.memory_planner,
                         "all": metrics(planned, measured_mem),
                         "liveness_only": metrics(liveness.astype(float), measured_mem)}

    score(report, model)
    atomic_write_text(out, report.to_json())
    ckpt.remove()
    return report


def score(report: ValidationReport, model: CostModel) -> None:
    """Fill the report's accuracy from its nets (predicted, measured as the report's statistic, split): raw on all
    and on the held-out nets, and the calibration fitted on the ``fit`` split (bounded by ``model``'s space) scored on
    the held-out ones."""
    names = [n["arch"] for n in report.nets]
    raw = {n["arch"]: n["predicted_ms"] for n in report.nets}
    measured = {n["arch"]: n["measured"][report.statistic] for n in report.nets}
    fit = [n["arch"] for n in report.nets if n["split"] == "fit"]
    held = [n["arch"] for n in report.nets if n["split"] != "fit"]
    feats = model.feature_values(np.array([Arch.parse(n).choices for n in names]))

    def arr(ns):
        return np.array([raw[n] for n in ns]), np.array([measured[n] for n in ns])

    def feats_of(ns):
        rows = [names.index(n) for n in ns]
        return {t: v[rows] for t, v in feats.items()}

    report.uncalibrated = {"all": metrics(*arr(names)), "heldout": metrics(*arr(held))}
    if fit:
        cal = Calibration.fit(feats_of(fit), arr(fit)[1], fit, model)
        report.calibration = asdict(cal)
        report.calibrated_heldout = metrics(cal.apply(feats_of(held)), arr(held)[1])


def refit(report_path: Path, table_path: Path) -> ValidationReport:
    """Fit a stored validation report's calibration again under the current rules (the same measurements,
    nothing timed), its nets priced again by the table and read as the table's statistic, and store it in the
    table; the report is rewritten with the new fit."""
    from hwnas.core.schema import read_json

    data = read_json(Path(report_path), "validation report",
                     "give the .validation-N.json that hwnas table validate wrote")
    fields = {k: data[k] for k in ("device", "table", "nets", "memory", "warnings") if k in data}
    report = ValidationReport(**fields)
    table = Table.load(table_path)
    table.extra.pop("calibration", None)  # the old fit is what is replaced; it may not even load
    model = CostModel(table)
    report.statistic = table.statistic  # the nets priced again: the table may read them otherwise than when measured
    for net in report.nets:
        net["predicted_ms"] = model.predict(Arch.parse(net["arch"]), calibrated=False, planned=False).latency_ms
    score(report, model)
    atomic_write_text(Path(report_path), report.to_json())
    store_calibration(table_path, report)
    return report


def store_calibration(table_path: Path, report: ValidationReport) -> None:
    """Write the report's calibration into the table (atomically), with what it was fitted on."""
    if not report.calibration:
        raise ConfigError("the validation fitted no calibration.", "run it with --fit-fraction > 0")
    table = Table.load(table_path)
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    table.extra["calibration"] = {**report.calibration, "created": created,
                                  "heldout_before": report.uncalibrated["heldout"],
                                  "heldout_after": report.calibrated_heldout}
    table.save(table_path)


def feed_measurement(table_path: Path, arch: str, measured_ms: float) -> float:
    """Feed one whole-net measurement (``hwnas verify --calibrate``) back into the table's calibration.

    The fitted calibration is kept; its intercept is shifted by the median residual of every net fed back
    so far (measured − the fitted calibration's prediction): the host's drift since the validation, robust
    to one odd measurement. A table without a calibration gets the identity plus that shift. Returns the
    shift in ms.
    """
    table = Table.load(table_path)
    cal = dict(table.extra.get("calibration") or {"kind": "feedback", "terms": ["predicted_ms"], "coef": [1.0],
                                                 "intercept_ms": 0.0})
    base = {**cal, "feedback": {}}
    table.extra["calibration"] = base
    model = CostModel(table)
    predicted = float(model.predict_many(np.array([Arch.parse(arch).choices]))["latency_ms"][0])
    seen = [o for o in cal.get("feedback", {}).get("observations", []) if o["arch"] != arch]
    seen.append({"arch": arch, "measured_ms": float(measured_ms), "fitted_ms": predicted,
                 "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
    shift = float(np.median([o["measured_ms"] - o["fitted_ms"] for o in seen]))
    if not model.admissible(base["terms"], base["coef"], base["intercept_ms"] + shift):
        raise ConfigError(f"{arch} measured {measured_ms:.3f} ms where the table prices it {predicted:.3f} ms; "
                          f"shifting the calibration by {shift:+.3f} ms would make its correction vary by more than "
                          f"{CALIBRATION_SPREAD:g}× across the space's nets (or fall to 0).",
                          "the table no longer describes this host: fit it again (hwnas table validate "
                          "--calibrate) or profile the device again")
    table.extra["calibration"] = {**cal, "feedback": {"observations": seen, "shift_ms": shift}}
    table.save(table_path)
    return shift


def plot(report: ValidationReport, path: Path) -> Path:
    """Predicted vs measured latency (fitted and held-out nets, ±10% band), and memory where measured."""
    from hwnas.core.plotting import save_png, subplots

    panels = 2 if report.memory else 1
    fig, axes = subplots(1, panels, figsize=(5.5 * panels, 5), squeeze=False)
    ax = axes[0][0]
    for split, color in (("fit", "tab:orange"), ("heldout", "tab:blue")):
        pts = [(n["predicted_ms"], n["measured"][report.statistic]) for n in report.nets if n["split"] == split]
        if pts:
            ax.scatter(*zip(*pts), s=12, color=color, label=f"{split} ({len(pts)})")
    _identity_band(ax, [v for n in report.nets for v in (n["predicted_ms"], n["measured"][report.statistic])])
    ax.set_xlabel("predicted latency (ms, table sum)")
    ax.set_ylabel(f"measured latency (ms, {report.statistic})")
    u = report.uncalibrated["heldout"]
    title = f"{report.device}, held-out: ±10% {u['within_10pct']:.0%} raw"
    if report.calibrated_heldout:
        title += f", {report.calibrated_heldout['within_10pct']:.0%} calibrated"
    ax.set_title(f"{title}; ρ {u['spearman']:.3f}", fontsize=10)
    ax.legend(fontsize=8)
    if report.memory:
        ax = axes[0][1]
        pts = [(n["memory"]["predicted_activation_bytes"] / 2**20, n["memory"]["measured_activation_bytes"] / 2**20)
               for n in report.nets]
        ax.scatter(*zip(*pts), s=12, color="tab:green")
        _identity_band(ax, [v for p in pts for v in p])
        ax.set_xlabel("predicted peak activation (MiB)")
        ax.set_ylabel("runtime's allocation peak (MiB)")
        ax.set_title(f"memory: ±10% {report.memory['all']['within_10pct']:.0%} of {len(pts)} nets", fontsize=10)
    return save_png(fig, path)


def _identity_band(ax, values: list[float]) -> None:
    xs = np.linspace(min(values), max(values), 10)
    ax.plot(xs, xs, "k-", lw=0.8, label="measured = predicted")
    for f in (0.9, 1.1):
        ax.plot(xs, xs / f, "k:", lw=0.6)
