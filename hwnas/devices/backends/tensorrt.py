"""NVIDIA GPUs through TensorRT: torch module -> ONNX -> engine (``trtexec --saveEngine``) -> trtexec timing.

UNVERIFIED: TensorRT cannot be installed where hwnas is developed, so this backend has not yet run on a
GPU. It is written against trtexec's documented flags and outputs;
its parsers (:mod:`hwnas.devices.backends.parsers.trtexec`) are tested on captured trtexec logs and exports.
Timing: ``trtexec --loadEngine --noDataTransfers --useSpinWait --exportTimes``: per-iteration GPU
compute times are the raw samples. Options: ``trtexec`` (path), ``workspace_mb``.
"""

from __future__ import annotations

import shutil
import tempfile
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, Field

from hwnas.core.errors import HwnasError, MeasurementError
from hwnas.core.lazy import available, require
from hwnas.core.schema import STRICT, PositiveInt
from hwnas.devices.backends.base import Artifact, FileBackend, MeasureSettings, RoundResult, Session, run_tool
from hwnas.devices.backends.onnxruntime import export_onnx
from hwnas.devices.backends.parsers import trtexec

if TYPE_CHECKING:
    import torch

    from hwnas.devices.device import Device


def gpu_name(index: int = 0) -> str:
    """The GPU's name and driver (``nvidia-smi``); "unknown NVIDIA GPU" where it cannot say."""
    try:
        proc = run_tool(["nvidia-smi", f"--id={index}", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                        timeout=30, fix="check the NVIDIA driver (nvidia-smi)")
    except HwnasError:
        return "unknown NVIDIA GPU"
    return proc.stdout.strip() or "unknown NVIDIA GPU"


TRTEXEC_TIMEOUT_S = 3600  # an engine build of a large net takes minutes; an hour means trtexec hung
PRECISION_FLAGS = {"fp16": ["--fp16"], "int8": ["--int8"], "fp32": []}


def run_trtexec(trtexec: str, *args: str, timeout: float | None = None) -> str:
    """``trtexec ARGS``, its stdout (within ``timeout``, by default :data:`TRTEXEC_TIMEOUT_S`); a failure names
    the command to run by hand."""
    cmd = [trtexec, *args]
    proc = run_tool(cmd, timeout=TRTEXEC_TIMEOUT_S if timeout is None else timeout, what="trtexec",
                    fix="check the GPU (nvidia-smi) and run the same trtexec command by hand; set options.trtexec "
                        "(or --trtexec) to trtexec's path if it is not on PATH")
    if proc.returncode != 0:
        raise MeasurementError(f"trtexec failed ({proc.returncode}): {(proc.stdout + proc.stderr)[-600:]}",
                               f"run by hand: {' '.join(cmd)}")
    return proc.stdout


def build_engine(module: torch.nn.Module, input_shape: tuple[int, ...], path: Path, precision: str,
                 trtexec: str = "trtexec", workspace_mb: int | None = None, profiled: bool = False) -> None:
    """A TensorRT engine at ``path``, built by ``trtexec`` from the module's ONNX export; ``profiled`` keeps the
    per-layer detail the backend's profiling reads (a larger engine than one shipped)."""
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp, "model.onnx")
        export_onnx(module, input_shape, onnx_path)
        pool = [f"--memPoolSize=workspace:{workspace_mb}M"] if workspace_mb else []
        detail = ["--profilingVerbosity=detailed"] if profiled else []
        run_trtexec(trtexec, f"--onnx={onnx_path}", f"--saveEngine={path}", "--skipInference", *pool, *detail,
                    *PRECISION_FLAGS[precision])


class _TrtexecSession(Session):
    def __init__(self, backend: TensorRTBackend, engine: Path) -> None:
        self.backend, self.engine = backend, engine

    def time(self, settings: MeasureSettings) -> RoundResult:
        with tempfile.TemporaryDirectory() as tmp:
            times, profile = Path(tmp, "times.json"), Path(tmp, "profile.json")
            log = self.backend.trtexec_run(
                f"--loadEngine={self.engine}", "--noDataTransfers", "--useSpinWait", "--separateProfileRun",
                f"--warmUp={max(settings.warmup_runs, 1) * 10}", f"--iterations={settings.min_runs}",
                f"--duration={settings.min_seconds:g}", "--percentile=10,50,90", f"--exportTimes={times}",
                f"--exportProfile={profile}", f"--device={self.backend.device.connection.index}")
            parsed = trtexec.parse_log(log)
            if not times.is_file():
                raise MeasurementError(f"trtexec wrote no --exportTimes file:\n{log[-400:]}",
                                       "run the same trtexec command by hand to see why")
            samples = trtexec.parse_times(times.read_text())
            _, layers = trtexec.parse_profile(profile.read_text()) if profile.exists() else (0, [])
        info = {"memory": parsed.memory_bytes,
                "layers": [{"name": x.name, "avg_ms": x.average_ms, "percent": x.percentage} for x in layers]}
        base = RoundResult.from_samples(samples)
        return RoundResult(base.stats, base.samples, "", info)

    def run(self, x: np.ndarray) -> np.ndarray:
        raise MeasurementError("the TensorRT backend times engines; parity checks run on the host runtimes.",
                               "compare outputs with --device cpu")


class TensorRTOptions(BaseModel):
    model_config = STRICT
    trtexec: str = Field("trtexec", min_length=1)  # its path, where it is not on PATH
    workspace_mb: PositiveInt = 1024


class TensorRTBackend(FileBackend):
    name = "tensorrt"
    runtime = "tensorrt"
    extra = "tensorrt"
    suffix = ".engine"
    precisions = ("fp32", "fp16", "int8")
    verified = False
    options_schema = TensorRTOptions

    @classmethod
    def _availability(cls, device: Device) -> tuple[bool, str]:
        tool = device.option("trtexec", "trtexec")
        if shutil.which(tool) is None:
            hint = " (the tensorrt package is installed, but hwnas drives trtexec)" if available("tensorrt") else ""
            return False, (f"trtexec not found{hint}: install TensorRT on a machine with an NVIDIA GPU and put "
                           "trtexec on PATH or set options.trtexec")
        if shutil.which("nvidia-smi") is None:
            return False, "no NVIDIA driver found (nvidia-smi missing): TensorRT needs an NVIDIA GPU"
        return True, "ready"

    def trtexec_run(self, *args: str, timeout: float = TRTEXEC_TIMEOUT_S) -> str:
        return run_trtexec(self.device.option("trtexec", "trtexec"), *args, timeout=timeout)

    @cached_property
    def _version(self) -> str:
        if available("tensorrt"):
            return require("tensorrt", "tensorrt").__version__
        head = run_tool([self.device.option("trtexec", "trtexec"), "--help"], timeout=60, what="trtexec",
                        fix="install TensorRT and put trtexec on PATH, or set options.trtexec").stdout
        return next((line.split("[TensorRT v")[1].split("]")[0] for line in head.splitlines()
                     if "[TensorRT v" in line), "unknown")

    def runtime_version(self) -> str:
        return self._version

    def cache_salt(self) -> str:
        return f"trt{self._version}-{gpu_name(self.device.connection.index)}-{self.device.precision}"

    def fingerprint(self) -> dict:
        fp = super().fingerprint()
        fp["host_cpu"] = gpu_name(self.device.connection.index)  # the device that runs the engine
        return fp

    def _prepare(self, module: torch.nn.Module, input_shape: tuple[int, ...], path: Path) -> None:
        build_engine(module, input_shape, path, self.device.precision, self.device.option("trtexec", "trtexec"),
                     workspace_mb=int(self.device.option("workspace_mb", 1024)), profiled=True)

    def _load(self, artifact: Artifact) -> Session:
        return _TrtexecSession(self, artifact.path)

    def _memory_report(self, artifact: Artifact) -> dict:
        with tempfile.TemporaryDirectory() as tmp:
            info = Path(tmp, "layers.json")
            log = self.trtexec_run(f"--loadEngine={artifact.path}", "--iterations=1", "--duration=0",
                                   "--warmUp=0", f"--exportLayerInfo={info}", "--profilingVerbosity=detailed")
            layers = trtexec.parse_layer_info(info.read_text()) if info.exists() else []
        return {**trtexec.parse_log(log).memory_bytes, "trt_layers": len(layers)}
