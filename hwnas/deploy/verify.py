"""Verify an exported model on its device: parity with PyTorch, measured latency and memory, the prediction, the budget.

1. The model file is loaded as untrusted input (:mod:`hwnas.foreign.modelfile`) and must suit the device's runtime
   (``.onnx`` for ONNX Runtime, ``.tflite`` for LiteRT and phones, ``.engine`` for TensorRT).
2. Parity: the PyTorch reference the model was exported from (its hwnas metadata names it; or
   ``reference``) and the model run on seeded random inputs and on real test-split images, compared with
   the precision's tolerance (:mod:`hwnas.deploy.parity`); top-1 agreement on the real images. Runtimes that only
   time (a phone's ``benchmark_model``, ``trtexec``) are compared on the host runtime of the same file.
3. Latency: the device's timing loop in consecutive rounds of the one model, pooled with the profiler's statistics,
   read as the prediction table's statistic (the median, or the min of a table profiled ``--statistic min``): the
   prediction's error and the latency budget are judged on that one figure.
4. Memory: activation memory as the runtime allocates it (:mod:`hwnas.measure.memprobe`, host runtimes) plus the
   weights; predicted figures from the device's table for the model's architecture, with their errors.
5. Budget: a budgets file and/or limits; the report says pass or fail for each.

The report is written as ``verify.json`` and ``verify.md`` with ``latency.png`` (the measured distribution,
the prediction and the budget) in the output folder.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hwnas.core.atomic import atomic_write_text, ensure_writable_dir
from hwnas.core.errors import ConfigError, MeasurementError, TableError
from hwnas.deploy.budgets import Limits
from hwnas.deploy.export import FORMATS, Source, format_for, host_session, resolve_source, run_data
from hwnas.deploy.modelrun import DEFAULT_SETTINGS, DeviceRun
from hwnas.deploy.parity import compare, random_inputs
from hwnas.devices.backends.base import MeasureSettings
from hwnas.devices.registry import Device


@dataclass
class VerifyReport:
    model: str
    device: str
    arch: str | None
    input_shape: list[int]
    parity: dict = field(default_factory=dict)  # "random" / "real" -> Parity dict; "runtime": where it ran
    latency: dict = field(default_factory=dict)  # LatencyStats
    memory: dict = field(default_factory=dict)  # weight/activation bytes, measured and predicted
    predicted: dict | None = None  # latency_ms, memory_bytes, ... from the table; errors vs measured
    budget: dict = field(default_factory=dict)  # limits, and pass/fail per limit
    notes: list[str] = field(default_factory=list)
    passed: bool = False
    statistic: str = "median"  # what the measured latency is read as: the prediction table's (hwnas.core.stats)

    @property
    def measured_ms(self) -> float:
        """The measured latency as the report's statistic reads it (what the prediction and budget are held to)."""
        return self.latency[self.statistic]

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "measured_ms": self.measured_ms}, indent=1)


def _reference(path: Path, meta: dict[str, str], reference: str | None, weights: Path | None) -> Source | None:
    if reference is not None:
        return resolve_source(reference, weights)
    if "arch" in meta:
        return Source.from_metadata(meta, weights)
    return None


def _outputs(session, xs: list[np.ndarray]) -> np.ndarray:
    return np.stack([session.run(x) for x in xs])


MAX_ACCURACY_DROP = 0.01  # an INT8 model may lose at most 1 point of test accuracy against its fp32 reference
REAL_IMAGES = 256  # test-split images a verification runs by default


def check_parity(source: Source, path: Path, device_session, shape: tuple[int, ...], precision: str,
                 data: str | None, seed: int, real_images: int,
                 max_accuracy_drop: float = MAX_ACCURACY_DROP) -> dict:
    """Random and real inputs through the reference and the model (on the device where it returns outputs).

    An INT8 model does not match its reference elementwise: random inputs only report their top-1 agreement, and
    on real test images it passes when its accuracy is at most ``max_accuracy_drop`` below the reference's.
    """
    quantized = precision == "int8"
    import torch

    module = source.build()
    where = "device"
    try:
        device_session.run(np.zeros(shape, np.float32))
        session = device_session
    except MeasurementError:  # a timing-only tool: compare the same file on the host runtime, where one runs it
        fmt = format_for(Path(path).suffix)
        if fmt is None or FORMATS[fmt].host_device is None:
            return {"runtime": "none: the device's tool only times, and no runtime of this host runs this file"}
        session, where = host_session(path, shape), "host runtime (the device's tool only times)"
    out: dict = {"runtime": where}
    xs = random_inputs(shape, 4, seed)
    with torch.no_grad():
        ref = np.stack([module(torch.from_numpy(x)).numpy() for x in xs])
    out["random"] = compare(ref, _outputs(session, xs), precision, need_top1=0.0 if quantized else 1.0).to_dict()
    if data:
        from hwnas.learn.data import load

        spec, data_seed, limit = run_data(source, data, seed)
        ds = load(spec, shape[-1], seed=data_seed, limit=limit)
        test_x, test_y = ds.test.head(real_images)  # the test split: images no search decision saw
        images = test_x.numpy()
        xs = [images[i:i + shape[0]] for i in range(0, len(images) - shape[0] + 1, shape[0])]
        with torch.no_grad():
            ref = np.stack([module(torch.from_numpy(x)).numpy() for x in xs])
        got = _outputs(session, xs)
        out["real"] = compare(ref, got, precision, need_top1=0.0 if quantized else 0.99).to_dict()
        labels = test_y[:len(xs) * shape[0]].numpy()
        out["real"]["accuracy"] = float(np.mean(got.reshape(-1, got.shape[-1]).argmax(-1) == labels))
        out["real"]["images"] = int(len(labels))
        if quantized:
            reference = float(np.mean(ref.reshape(-1, ref.shape[-1]).argmax(-1) == labels))
            drop = reference - out["real"]["accuracy"]
            out["real"].update(reference_accuracy=reference, accuracy_drop=drop, max_accuracy_drop=max_accuracy_drop,
                               passed=bool(drop <= max_accuracy_drop))
        out["real"]["data"] = data
        out["real"]["split"] = "test"
    return out


def _check_precision(meta: dict[str, str], device: Device, model: Path) -> None:
    """A model quantized by hwnas export runs on an INT8 device, a float one on a float device: otherwise the
    measurement is not the one the device's table prices."""
    if "arch" not in meta or not device.backend_class.quantizer:
        return  # not exported by hwnas (its precision is the user's to know), or quantized by the runtime's tool
    exported = meta.get("precision", "fp32")
    if (exported == "int8") != (device.precision == "int8"):
        raise ConfigError(f"{model.name} was exported at {exported} and device '{device.name}' runs "
                          f"{device.precision}.",
                          "verify an INT8 export on an INT8 device (--device cpu-int8 or cpu-tflite-int8), a float "
                          "one on its float device; or export again with the device's --precision")


def _prediction(device: Device, fingerprint: dict, table: Path | None, arch: str | None,
                tables: Path, allow_foreign: bool = False) -> tuple[dict | None, str]:
    """The table's prediction for the model, or None and why not (no arch, no table, another host's table).

    A table measured elsewhere is no prediction of this device (and no reason to fail a verification):
    with ``allow_foreign`` it is used, and the report carries the warning.
    """
    if arch is None:
        return None, "no prediction: the model carries no hwnas architecture (price it with hwnas check --predict)"
    from hwnas.cost.model import CostModel
    from hwnas.measure.profiler import default_table_path
    from hwnas.spaces.arch import Arch
    from hwnas.tables.table import FOREIGN_FLAG, Table

    a = Arch.parse(arch)
    path = table or default_table_path(device, a.space, tables)
    if not Path(path).exists():
        return None, (f"no prediction: no table at {path} "
                      f"(hwnas profile --device {device.name} --resolution {a.resolution})")
    loaded = Table.load(path)
    try:
        warning = loaded.check_fingerprint(fingerprint, allow_foreign=allow_foreign)
    except TableError as exc:
        return None, f"no prediction: {exc.message} ({FOREIGN_FLAG} uses it anyway)"
    model = CostModel(loaded)
    p = model.predict(a)
    return {"table": str(path), "latency_ms": p.latency_ms, "statistic": loaded.statistic,
            "raw_latency_ms": model.predict(a, calibrated=False, planned=False).latency_ms,
            "calibrated": model.calibration is not None, "weight_bytes": p.weight_bytes,
            "planned_activation_bytes": p.planned_activation_bytes, "memory_bytes": p.memory_bytes}, warning


def _judge(report: VerifyReport, limits: Limits) -> None:
    checks = {}
    if limits.latency_ms is not None:
        checks["latency"] = {"limit_ms": limits.latency_ms, "measured_ms": report.measured_ms,
                             "statistic": report.statistic, "passed": report.measured_ms <= limits.latency_ms}
    if limits.memory_bytes is not None:
        total = report.memory.get("measured_total_bytes")
        if total is None:
            report.notes.append("memory budget not checked: this runtime's memory could not be measured")
        else:
            checks["memory"] = {"limit_bytes": limits.memory_bytes, "measured_bytes": total,
                                "passed": total <= limits.memory_bytes}
    report.budget = {"limits": limits.describe(), "checks": checks}
    parity_ok = all(p.get("passed", True) for k, p in report.parity.items() if k in ("random", "real"))
    report.passed = parity_ok and all(c["passed"] for c in checks.values())


def verify(model: Path, device: Device, *, table: Path | None = None, tables: Path = Path("latency_tables"),
           limits: Limits = Limits(), reference: str | None = None, weights: Path | None = None,
           data: str | None = "digits", real_images: int = REAL_IMAGES, settings: MeasureSettings = DEFAULT_SETTINGS,
           rounds: int = 9, seed: int = 0, memory: bool = True, out: Path | None = None,
           allow_foreign: bool = False, max_accuracy_drop: float = MAX_ACCURACY_DROP) -> VerifyReport:
    from hwnas.learn.data import check_spec

    model = Path(model)
    if data is not None:
        check_spec(data)  # a wrong --data is an error even where this model's parity would not read it
    run = DeviceRun(model, device)
    mf = run.file
    meta, shape = mf.meta, mf.input_shape
    if out is not None:
        ensure_writable_dir(Path(out))  # before the measurement, not after it
    _check_precision(meta, device, model)
    session = run.start().session
    report = VerifyReport(str(model), device.name, meta.get("arch"), list(shape))
    source = _reference(model, meta, reference, weights)
    if source is None:
        report.notes.append("no PyTorch reference (a model hwnas did not export): parity not checked")
    else:
        if source.arch.space.input_shape != shape:
            raise ConfigError(f"the reference {source.arch} takes {source.arch.space.input_shape}, the model {shape}.",
                              "pass the reference the model was exported from")
        report.arch = str(source.arch)
        report.parity = check_parity(source, model, session, shape, device.precision,
                                     data if source.state_dict is not None else None, seed, real_images,
                                     max_accuracy_drop)
        if source.state_dict is None:
            report.notes.append("untrained weights (exported from an architecture): real-data parity skipped")
    report.latency, samples = run.time(rounds, settings)
    wbytes = mf.weights[1]
    predicted, why = _prediction(device, run.unit.fingerprint(), table, report.arch, tables, allow_foreign)
    if why:
        report.notes.append(why)
    if predicted:
        report.statistic = predicted["statistic"]
        predicted["latency_error"] = report.measured_ms / predicted["latency_ms"] - 1
        report.predicted = predicted
    report.memory = {"weight_bytes": wbytes}
    probe = run.activation_memory() if memory else None
    if probe is not None:
        report.memory.update(activation_bytes=probe["activation_bytes"], method=probe["method"],
                             measured_total_bytes=(wbytes or 0) + probe["activation_bytes"])
        if predicted:
            predicted["activation_error"] = probe["activation_bytes"] / predicted["planned_activation_bytes"] - 1
    _judge(report, limits)
    if out is not None:
        write_report(report, Path(out), samples, limits)
    return report


def feed_back(report: VerifyReport) -> float:
    """Feed the measured latency (the table's statistic) into the table the prediction came from
    (``hwnas verify --calibrate``): the calibration's intercept moves (:func:`hwnas.cost.validate.feed_measurement`).
    Returns the shift in ms."""
    from hwnas.cost.validate import feed_measurement

    if not report.predicted:
        raise ConfigError("--calibrate needs a prediction to correct.",
                          "verify a model exported by hwnas, with its device's table")
    return feed_measurement(Path(report.predicted["table"]), report.arch, report.measured_ms)


def write_report(report: VerifyReport, out: Path, samples: np.ndarray | None, limits: Limits) -> None:
    ensure_writable_dir(out)
    atomic_write_text(out / "verify.json", report.to_json())
    if samples is not None:
        latency_plot(samples, report, limits, out / "latency.png")
    atomic_write_text(out / "verify.md", markdown(report, samples is not None))


def latency_plot(samples: np.ndarray, report: VerifyReport, limits: Limits, path: Path) -> Path:
    from hwnas.core.plotting import save_png, subplots

    fig, ax = subplots(figsize=(6, 3.5))
    hi = np.percentile(samples, 99)
    ax.hist(samples[samples <= hi], bins=60, color="tab:blue", alpha=0.75, label=f"measured ({len(samples)} runs)")
    ax.axvline(report.measured_ms, color="tab:blue", lw=1.5, label=f"{report.statistic} {report.measured_ms:.3f} ms")
    if report.predicted:
        ax.axvline(report.predicted["latency_ms"], color="tab:orange", ls="--",
                   label=f"predicted {report.predicted['latency_ms']:.3f} ms")
    if limits.latency_ms is not None:
        ax.axvline(limits.latency_ms, color="k", ls=":", label=f"budget {limits.latency_ms:g} ms")
    ax.set_xlabel("latency (ms)")
    ax.set_title(f"{Path(report.model).name} on {report.device}", fontsize=10)
    ax.legend(fontsize=8)
    return save_png(fig, path)


def _pct(x: float) -> str:
    return f"{x:+.1%}"


def markdown(report: VerifyReport, with_plot: bool = True) -> str:
    lat = report.latency
    lines = [f"# hwnas verify: `{Path(report.model).name}` on {report.device}", "",
             f"**{'PASS' if report.passed else 'FAIL'}** — architecture `{report.arch or 'unknown'}`, "
             f"input {tuple(report.input_shape)}", "", "| check | result |", "|---|---|"]
    for kind in ("random", "real"):
        p = report.parity.get(kind)
        if p:
            tolerance = (f"{p['within_tolerance']:.2%} within rtol/atol {p['rtol']:g}" if p["rtol"] is not None
                         else "INT8: no elementwise tolerance")
            lines.append(f"| parity, {kind} inputs ({report.parity['runtime']}) | "
                         f"{'pass' if p['passed'] else 'FAIL'}: max abs {p['max_abs_error']:.2e}, {tolerance}, "
                         f"top-1 agreement {p['top1_agreement']:.2%} of {p['inputs']}"
                         + (f"; test accuracy {p['accuracy']:.2%} against fp32 {p['reference_accuracy']:.2%} "
                            f"(lost {p['accuracy_drop']:+.2%}, at most {p['max_accuracy_drop']:.0%})"
                            if "accuracy_drop" in p else "") + " |")
    others = "".join(f", {k} {lat[k]:.4f}" for k in ("median", "min", "p10", "p90")
                     if k != report.statistic and lat.get(k) is not None)
    lines.append(f"| latency ({report.statistic} of {lat['n']} runs) | {report.measured_ms:.4f} ms "
                 f"({others[2:]}) |")
    if report.predicted:
        p = report.predicted
        lines.append(f"| predicted latency ({'calibrated' if p['calibrated'] else 'raw'} table) | "
                     f"{p['latency_ms']:.4f} ms: measured is {_pct(p['latency_error'])} |")
    mem = report.memory
    if "activation_bytes" in mem:
        lines.append(f"| memory | {mem['measured_total_bytes'] / 1e6:.3f} MB (weights {mem['weight_bytes'] / 1e6:.3f} "
                     f"+ activations {mem['activation_bytes'] / 1e6:.3f}) |")
        if report.predicted:
            lines.append(f"| predicted activations | {report.predicted['planned_activation_bytes'] / 1e6:.3f} MB: "
                         f"measured is {_pct(report.predicted['activation_error'])} |")
    for name, c in report.budget.get("checks", {}).items():
        limit = f"{c['limit_ms']:g} ms" if name == "latency" else f"{c['limit_bytes'] / 1e6:g} MB"
        lines.append(f"| budget: {name} ≤ {limit} | {'pass' if c['passed'] else 'FAIL'} |")
    lines += [""] + [f"- {n}" for n in report.notes]
    if with_plot:
        lines += ["", "![latency](latency.png)"]
    return "\n".join(lines) + "\n"
