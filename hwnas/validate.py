"""Does the table predict what the device measures? Sample networks, measure them end to end, compare.

``validate`` samples N random architectures of the table's space (plus its reference net), builds and
converts each whole network for the device's runtime, and times them in interleaved rounds, each in a new
random order (checkpointed like profiling, so ``resume`` loses nothing). It reports, per split, the share of
nets within ±5% and ±10%, the mean absolute % error, Spearman ρ and Kendall τ of predicted vs measured
latency. The first ``fit_fraction`` of the nets fit a scale + offset calibration; the rest are held out
and reported before and after it (never on the nets it was fitted on).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hwnas.arch import Arch, sample_choices
from hwnas.atomic import atomic_write_text
from hwnas.backends.base import MeasureSettings, pool_rounds
from hwnas.checkpoint import Checkpoint
from hwnas.cost import CostModel
from hwnas.devices import Device
from hwnas.errors import ConfigError
from hwnas.pool import Job, Pool, Unit
from hwnas.profiling import _Progress
from hwnas.tables import Table


@dataclass(frozen=True)
class Calibration:
    """measured ≈ scale · predicted + offset, fitted on ``fitted_on`` (arch strings)."""

    scale: float
    offset_ms: float
    fitted_on: tuple[str, ...] = ()

    def apply(self, predicted_ms):
        return self.scale * predicted_ms + self.offset_ms

    @classmethod
    def fit(cls, predicted: np.ndarray, measured: np.ndarray, archs: list[str]) -> Calibration:
        if len(predicted) < 3:
            raise ConfigError("calibration needs at least 3 fitted nets.", "raise --samples or --fit-fraction")
        scale, offset = np.polyfit(predicted, measured, 1)
        return cls(float(scale), float(offset), tuple(archs))


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
    nets: list[dict] = field(default_factory=list)  # arch, predicted_ms, measured (stats), split
    uncalibrated: dict = field(default_factory=dict)  # split -> metrics
    calibration: dict | None = None
    calibrated_heldout: dict | None = None

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


def validate(device: Device, table_path: Path, samples: int = 100, *, seed: int = 0, rounds: int = 3,
             settings: MeasureSettings | None = None, fit_fraction: float = 0.3, out: Path | None = None,
             resume: bool = False, force: bool = False, progress: bool = True) -> ValidationReport:
    table = Table.load(table_path)
    backend = device.backend_instance()
    backend.check_ready()
    table.check_fingerprint(backend.fingerprint())
    model = CostModel(table)
    archs = _archs(model, samples, seed)
    settings = settings or MeasureSettings(warmup_runs=5, min_runs=30, min_seconds=0.6)
    out = Path(out) if out else Path(table_path).with_name(Path(table_path).stem + f".validation-{samples}.json")
    state = {"table": table.to_dict()["device"], "archs": [str(a) for a in archs], "settings": settings.to_dict(),
             "rounds": rounds}
    ckpt = Checkpoint.open(out, state, resume=resume, force=force)
    with _Progress(progress) as bars:
        advance = bars.task("convert", len(archs))
        artifacts = {}
        for a in archs:
            artifacts[str(a)] = backend.prepare(a.build(), model.space.input_shape, tag=f"net/{a}")
            advance()
        names = list(artifacts)
        jobs = [Job(names[i], f"r{r}") for r in range(rounds)
                for i in np.random.default_rng([seed, r]).permutation(len(names))]
        advance = bars.task("measure", len(jobs))
        advance(sum(ckpt.has(j.file) for j in jobs))
        units = [Unit(label, b, artifacts) for label, b in backend.units()]
        Pool(units, ckpt, advance).run(jobs, settings.split(rounds))
    measured = {n: pool_rounds([ckpt.load(Checkpoint.name(n, f"r{r}")) for r in range(rounds)]) for n in names}
    raw = {n: model.predict(Arch.parse(n), calibrated=False).latency_ms for n in names}
    n_fit = max(3, int(round(fit_fraction * (len(names) - 1)))) if fit_fraction > 0 else 0
    fit, held = names[1:1 + n_fit], [names[0], *names[1 + n_fit:]]  # the reference net is always held out
    report = ValidationReport(device=device.name, table=str(table_path))
    for n in names:
        report.nets.append({"arch": n, "predicted_ms": raw[n], "measured": measured[n].to_dict(),
                            "split": "fit" if n in fit else "heldout"})

    def arr(ns):
        return np.array([raw[n] for n in ns]), np.array([measured[n].median for n in ns])

    report.uncalibrated = {"all": metrics(*arr(names)), "heldout": metrics(*arr(held))}
    if fit:
        cal = Calibration.fit(*arr(fit), fit)
        p, m = arr(held)
        report.calibration = asdict(cal)
        report.calibrated_heldout = metrics(cal.apply(p), m)
    atomic_write_text(out, report.to_json())
    ckpt.remove()
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


def plot(report: ValidationReport, path: Path) -> Path:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hwnas.atomic import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for split, color in (("fit", "tab:orange"), ("heldout", "tab:blue")):
        pts = [(n["predicted_ms"], n["measured"]["median"]) for n in report.nets if n["split"] == split]
        if pts:
            ax.scatter(*zip(*pts), s=12, color=color, label=f"{split} ({len(pts)})")
    lo = min(min(n["predicted_ms"], n["measured"]["median"]) for n in report.nets)
    hi = max(max(n["predicted_ms"], n["measured"]["median"]) for n in report.nets)
    xs = np.linspace(lo, hi, 10)
    ax.plot(xs, xs, "k-", lw=0.8, label="measured = predicted")
    for f in (0.9, 1.1):
        ax.plot(xs, xs / f, "k:", lw=0.6)
    ax.set_xlabel("predicted latency (ms, table sum)")
    ax.set_ylabel("measured latency (ms, median)")
    u = report.uncalibrated["heldout"]
    ax.set_title(f"{report.device}: held-out within ±10% {u['within_10pct']:.0%}, ρ {u['spearman']:.3f}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)
