"""The CI gate: does each model stay within its budget on the device? Exit 0 yes, 1 no (or regressed), 2 bad input.

Two ways to know a model's cost:

- ``measure``: run it on the device (the verify measurement: consecutive timing rounds, the runtime's
  allocation probe for memory);
- ``predict``: price it from the device's table, for devices CI cannot reach (a phone). A model exported
  by hwnas carries its architecture and is priced exactly like ``hwnas predict``; any other ONNX model is
  cut into the fused blocks a model table keys (:mod:`hwnas.foreign.onnxblocks`, made by ``hwnas profile --model``),
  and every block the table cannot price is named (bad input, exit 2), never guessed.

Parameters are counted from the file (ONNX initializers) or from the architecture. Against a
``baseline`` (an earlier ``--out`` report) latency and memory may not grow by more than ``max_regression``.
Outputs: a table for people, JSON, JUnit XML for CI systems and GitHub Actions annotations when run there.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from hwnas.core.atomic import atomic_write_text
from hwnas.core.errors import ConfigError, TableError
from hwnas.core.schema import Positive, read_json, validate
from hwnas.deploy.budgets import Budgets, Limits, resolve_limits
from hwnas.devices.registry import Device

MODES = ("measure", "predict")


@dataclass
class ModelResult:
    model: str
    device: str
    source: str  # "measured", "predicted (arch)" or "predicted (blocks)"
    arch: str | None
    latency_ms: float
    memory_bytes: float | None
    params: int
    limits: dict
    failures: list[str] = field(default_factory=list)
    baseline: dict | None = None
    warnings: list[str] = field(default_factory=list)  # e.g. priced with another host's table (--allow-foreign-table)

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class CheckReport:
    device: str
    mode: str
    results: list[ModelResult]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def to_dict(self) -> dict:
        return {"device": self.device, "mode": self.mode, "passed": self.passed,
                "results": [{**asdict(r), "passed": r.passed} for r in self.results]}


def _table_path(device: Device, table: Path | None, tables: Path, arch=None, model: Path | None = None) -> Path:
    from hwnas.measure.profiler import default_table_path

    if table is not None:
        return Path(table)
    if arch is not None:
        return default_table_path(device, arch.space, tables)
    from hwnas.foreign.modelcost import default_model_table_path

    return default_model_table_path(device, model, tables)


def _load_table(path: Path, device: Device, model: Path, arch=None, allow_foreign: bool = False):
    """The table that prices ``model``, refused (TableError) unless it was measured on this device and host.

    The device's fingerprint is taken where the device can be reached (a local runtime always can); a remote
    device CI cannot reach (a phone) is matched by name, and the result carries that it was not checked.
    """
    from hwnas.core.errors import DeviceUnavailable
    from hwnas.tables.table import Table

    if not path.exists():
        how = (f"hwnas profile --device {device.name} --model {model}" if arch is None else
               f"hwnas profile --device {device.name} --space {arch.space.name} --resolution {arch.resolution}")
        raise ConfigError(f"no table at {path} to price {model} on {device.name}.", f"make it: {how}, or pass --table")
    table = Table.load(path)
    if table.fingerprint.get("device") != device.name:
        raise TableError(f"{path} was measured on '{table.fingerprint.get('device')}', not '{device.name}'.",
                         f"pass the table of {device.name}, or --device {table.fingerprint.get('device')}")
    try:
        fingerprint = device.backend_instance().fingerprint()
    except DeviceUnavailable as exc:
        return table, [f"table fingerprint not checked: {device.name} cannot be reached here ({exc.message}); "
                       f"the table is matched by device name only"]
    warning = table.check_fingerprint(fingerprint, allow_foreign=allow_foreign)
    return table, [warning] if warning else []


def predict_cost(path: Path, device: Device, table: Path | None, tables: Path, allow_foreign: bool = False) -> dict:
    """Cost of one model file from a table, without the device.

    The file is opened and checked first (:class:`hwnas.deploy.modelrun.ModelFile`: a truncated model or a sidecar of
    another model is refused), and its parameters are counted the way ``--measure`` counts them.
    """
    from hwnas.deploy.modelrun import ModelFile

    mf = ModelFile(path)
    params = mf.weights[0]
    if "arch" in mf.meta:
        from hwnas.cost.model import CostModel
        from hwnas.deploy.export import metadata_arch

        arch = metadata_arch(mf.meta, path)
        tab, warnings = _load_table(_table_path(device, table, tables, arch=arch), device, path, arch, allow_foreign)
        p = CostModel(tab).predict(arch)
        return {"source": "predicted (arch)", "arch": str(arch), "latency_ms": p.latency_ms,
                "memory_bytes": p.memory_bytes, "params": params, "warnings": warnings}
    if mf.onnx is None:
        raise ConfigError(f"{path} carries no hwnas architecture, so --predict cannot price it.",
                          "predict ONNX models (their graph is priced block by block), or use --measure")
    from hwnas.foreign.modelcost import predict_model

    tab, warnings = _load_table(_table_path(device, table, tables, model=path), device, path, None, allow_foreign)
    pred = predict_model(tab, mf.onnx)
    if pred.unpriced:
        names = "; ".join(str(u) for u in pred.unpriced[:12]) + (" …" if len(pred.unpriced) > 12 else "")
        raise TableError(f"{path}: the table cannot price {len(pred.unpriced)} of {pred.blocks} blocks: {names}.",
                         f"profile this model's blocks on the device: hwnas profile --device {device.name} "
                         f"--model {path}, then pass that --table")
    return {"source": "predicted (blocks)", "arch": None, "latency_ms": pred.latency_ms,
            "memory_bytes": pred.memory_bytes, "params": params, "warnings": warnings}


def measure_cost(path: Path, device: Device, rounds: int = 9, statistic: str = "median") -> dict:
    """Cost of one model file measured on the device (the verify measurement, without parity); its latency read as
    ``statistic`` (:mod:`hwnas.core.stats`)."""
    from hwnas.deploy.modelrun import DeviceRun

    run = DeviceRun(path, device).start()
    latency, _ = run.time(rounds)
    params, weights = run.file.weights
    probe = run.activation_memory()
    return {"source": "measured", "arch": run.file.meta.get("arch"), "latency_ms": latency[statistic],
            "memory_bytes": weights + probe["activation_bytes"] if probe is not None else None, "params": params}


def _judge(result: ModelResult, limits: Limits, baseline: dict | None) -> None:
    if limits.latency_ms is not None and result.latency_ms > limits.latency_ms:
        result.failures.append(f"latency {result.latency_ms:.3f} ms > {limits.latency_ms:g} ms")
    if limits.memory_bytes is not None:
        if result.memory_bytes is None:
            result.failures.append("memory budget set, but this runtime's memory cannot be measured (use --predict)")
        elif result.memory_bytes > limits.memory_bytes:
            result.failures.append(f"memory {result.memory_bytes / 1e6:.3f} MB > {limits.memory_bytes / 1e6:g} MB")
    if limits.params is not None and result.params > limits.params:
        result.failures.append(f"params {result.params / 1e6:.3f} M > {limits.params / 1e6:g} M")
    if baseline is not None:
        result.baseline = {k: baseline.get(k) for k in ("latency_ms", "memory_bytes")}
        allowed = limits.max_regression if limits.max_regression is not None else 0.05
        for key, unit, scale in (("latency_ms", "ms", 1.0), ("memory_bytes", "MB", 1e-6)):
            old, new = baseline.get(key), getattr(result, key)
            if old and new is not None and new > old * (1 + allowed):
                result.failures.append(f"{key.split('_')[0]} regressed {new / old - 1:+.1%} "
                                       f"({old * scale:.3f} → {new * scale:.3f} {unit}; allowed {allowed:.1%})")


class _BaselineRow(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    model: str
    latency_ms: Positive
    memory_bytes: Positive | None = None


class _Baseline(BaseModel):
    """What a baseline needs of an earlier ``--out`` report."""

    model_config = ConfigDict(strict=True, extra="allow")
    results: list[_BaselineRow]


def load_baseline(path: Path) -> dict[str, dict]:
    fix = "pass a report written by hwnas check --out"
    data = validate(_Baseline, read_json(Path(path), "baseline", fix), f"baseline {path}", fix)
    return {r.model: r.model_dump() for r in data.results}


def check(models: list[Path], device: Device, *, mode: str = "measure", budgets: Budgets | None = None,
          flags: Limits = Limits(), table: Path | None = None, tables: Path = Path("latency_tables"),
          baseline: Path | None = None, rounds: int = 9, allow_foreign: bool = False,
          statistic: str = "median") -> CheckReport:
    if mode not in MODES:
        raise ConfigError(f"unknown mode '{mode}'.", "use --measure or --predict")
    if not models:
        raise ConfigError("no model to check.", "pass one or more model files")
    base = load_baseline(baseline) if baseline else {}
    plans = []
    for path in map(Path, models):  # every input is validated before anything is measured
        limits = resolve_limits(device.name, path, budgets, flags)
        if limits.empty and not base:
            raise ConfigError(f"no budget applies to {path} on {device.name}.",
                              "pass --budget FILE with a matching [[budget]] rule, or --max-latency-ms / "
                              "--max-memory-mb / --max-params")
        if baseline and str(path) not in base:
            raise ConfigError(f"the baseline {baseline} has no result for {path}.",
                              "check the same model paths the baseline was made with")
        plans.append((path, limits))
    results = []
    for path, limits in plans:
        cost = (predict_cost(path, device, table, tables, allow_foreign) if mode == "predict"
                else measure_cost(path, device, rounds, statistic))
        res = ModelResult(str(path), device.name, cost["source"], cost["arch"], cost["latency_ms"],
                          cost["memory_bytes"], int(cost["params"]),
                          {k: v for k, v in asdict(limits).items() if v is not None},
                          warnings=cost.get("warnings", []))
        _judge(res, limits, base.get(str(path)))
        results.append(res)
    return CheckReport(device.name, mode, results)


# -- outputs --------------------------------------------------------------------------------------
def write_json(report: CheckReport, path: Path) -> None:
    atomic_write_text(Path(path), json.dumps(report.to_dict(), indent=1))


def junit_xml(report: CheckReport) -> str:
    """One test suite; one test case per model, failed with every limit it broke."""
    import xml.etree.ElementTree as ET

    failures = sum(not r.passed for r in report.results)
    suite = ET.Element("testsuite", name=f"hwnas check ({report.device}, {report.mode})",
                       tests=str(len(report.results)), failures=str(failures), errors="0")
    for r in report.results:
        case = ET.SubElement(suite, "testcase", classname=f"hwnas.check.{report.device}", name=r.model)
        if r.failures:
            ET.SubElement(case, "failure", message="; ".join(r.failures), type="budget").text = "\n".join(r.failures)
        mem = f"{r.memory_bytes / 1e6:.3f} MB" if r.memory_bytes is not None else "n/a"
        ET.SubElement(case, "system-out").text = (f"{r.source}: latency {r.latency_ms:.4f} ms, memory {mem}, "
                                                  f"params {r.params}")
    root = ET.Element("testsuites")
    root.append(suite)
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def write_junit(report: CheckReport, path: Path) -> None:
    atomic_write_text(Path(path), junit_xml(report))


def github_annotations(report: CheckReport) -> list[str]:
    """``::error`` workflow commands, one per failing model (GitHub shows them on the run and the PR)."""
    def esc(text: str) -> str:
        return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")

    return [f"::error file={esc(r.model)},title=hwnas check ({report.device})::{esc('; '.join(r.failures))}"
            for r in report.results if r.failures]


def in_github_actions() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"
