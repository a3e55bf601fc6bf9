"""The backend contract: prepare a model into a runtime artifact, load it, time it, run it.

The base class owns the shared lifecycle (availability checks, the artifact cache, the timing loop and its
statistics, memory reports, the fingerprint); a runtime writes ``_availability`` (what it needs, and the fix),
``_prepare`` (module to file, for a :class:`FileBackend`; a runtime that keeps modules in memory writes
``prepare`` itself), ``_load`` (file to :class:`Session`), and where it has them ``_memory_report``, ``units``
(several devices behind one descriptor), ``cache_salt`` and ``fingerprint`` additions (Polygraphy's layout).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from pydantic import BaseModel

from hwnas.core.atomic import atomic_write_with
from hwnas.core.errors import ConfigError, DeviceUnavailable, HwnasError, MeasurementError, OutputError
from hwnas.core.schema import STRICT, NonNegative, NonNegativeInt, Positive, PositiveInt, settings
from hwnas.core.stats import LatencyStats, pool_summaries, summarize

if TYPE_CHECKING:
    import torch

    from hwnas.devices.device import Device


@settings("measurement settings", "correct the value of that flag (--warmup, --min-runs, --min-seconds, ...)")
class MeasureSettings:
    """How long to time one model: warm-up, then runs until both minimums are met (benchmark_model: 50, 1 s)."""

    warmup_runs: NonNegativeInt = 10
    min_runs: PositiveInt = 50
    min_seconds: NonNegative = 1.0
    max_runs: PositiveInt = 100_000
    max_seconds: Positive = 30.0

    def __post_init__(self) -> None:
        if self.min_runs > self.max_runs:
            raise ConfigError(f"measurement settings: min_runs {self.min_runs} exceeds max_runs {self.max_runs}.",
                              "lower --min-runs")
        if self.min_seconds > self.max_seconds:
            raise ConfigError(f"measurement settings: min_seconds {self.min_seconds:g} exceeds max_seconds "
                              f"{self.max_seconds:g}.", "lower --min-seconds")

    @classmethod
    def at_least(cls, warmup_runs: int, min_runs: int, min_seconds: float) -> MeasureSettings:
        """Settings with these minimums; the caps (max runs, max seconds) grow with them, never below them."""
        caps = cls()
        return cls(warmup_runs=warmup_runs, min_runs=min_runs, min_seconds=min_seconds,
                   max_runs=max(caps.max_runs, min_runs), max_seconds=max(caps.max_seconds, 2 * min_seconds))

    def split(self, rounds: int) -> MeasureSettings:
        """The share of one round when a measurement is spread over ``rounds`` interleaved rounds."""
        return MeasureSettings(
            warmup_runs=self.warmup_runs,
            min_runs=-(-self.min_runs // rounds),
            min_seconds=self.min_seconds / rounds,
            max_runs=-(-self.max_runs // rounds),
            max_seconds=self.max_seconds / rounds,
        )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Artifact:
    """A model prepared for one runtime. ``input_shape`` is NCHW (torch order) whatever the file's layout."""

    path: Path
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]


@dataclass(frozen=True)
class RoundResult:
    """One timed round on one unit: raw samples where the runtime exposes them, else its own summary.

    ``info`` holds what the runtime reported beside the timing (memory footprint, delegated nodes, ...).
    """

    stats: LatencyStats
    samples: np.ndarray | None = None
    unit: str = ""
    info: dict = field(default_factory=dict)

    @classmethod
    def from_samples(cls, samples: np.ndarray, unit: str = "") -> RoundResult:
        return cls(stats=summarize(samples), samples=np.asarray(samples, dtype=np.float64), unit=unit)


def pool_rounds(results: list[RoundResult]) -> LatencyStats:
    """Statistics over rounds: from all raw samples where every round has them, else from the summaries."""
    if all(r.samples is not None for r in results):
        return summarize(np.concatenate([r.samples for r in results]))
    return pool_summaries([r.stats for r in results])


class Session(ABC):
    """A loaded artifact, ready to be timed, or run on inputs."""

    def invoke(self) -> None:
        """Run once on the bound input (the call a host timing loop times)."""
        raise MeasurementError(f"{type(self).__name__} is timed by its own tool, not invoked from here.",
                               "use Session.time()")

    def time(self, settings: MeasureSettings) -> RoundResult:
        """One timed round: by default a host loop around :meth:`invoke`."""
        return RoundResult.from_samples(Backend.time_session(self, settings))

    @abstractmethod
    def run(self, x: np.ndarray) -> np.ndarray:
        """Run on ``x`` (NCHW float32) and return the output in torch's layout."""


_CACHE_FIX = "set HWNAS_CACHE_DIR to a writable folder with free space (it holds the converted models)"


def cache_dir() -> Path:
    """Where converted artifacts are kept between runs (``HWNAS_CACHE_DIR`` overrides)."""
    root = os.environ.get("HWNAS_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hwnas"
    return Path(root)


def cache_folder(*parts: str) -> Path:
    """A folder of the artifact cache, created; an unwritable cache is one :class:`OutputError` with the fix."""
    folder = cache_dir().joinpath(*parts)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot use the artifact cache {cache_dir()}: {exc.strerror or exc} ({folder}).",
                          _CACHE_FIX) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"the artifact cache {folder} is not writable.", _CACHE_FIX)
    return folder


def run_tool(cmd: list[str], *, timeout: float, fix: str, what: str = "") -> subprocess.CompletedProcess:
    """Run an external tool (adb, trtexec, nvidia-smi, a probe) with a time limit, its output captured.

    A tool that cannot be started is a :class:`DeviceUnavailable`, one that outlives ``timeout`` a
    :class:`MeasurementError`, each saying which tool and ``fix``; the caller judges the exit status.
    """
    what = what or Path(cmd[0]).name
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise MeasurementError(f"{what} did not finish within {timeout:.0f} s ({' '.join(cmd)[:160]}).",
                               fix) from None
    except FileNotFoundError:
        raise DeviceUnavailable(f"{what} not found: {cmd[0]}.", fix) from None
    except PermissionError:
        raise DeviceUnavailable(f"{what} cannot be run: {cmd[0]} is not executable.",
                                f"make it executable (chmod +x {cmd[0]}), or {fix}") from None
    except OSError as exc:
        raise DeviceUnavailable(f"{what} cannot be run ({cmd[0]}): {exc.strerror or exc}.", fix) from None


def common_fingerprint(units: list[tuple[str, Backend]]) -> dict:
    """The fingerprint all units share; units that differ (model, build, tool version) are refused."""
    prints = {label: b.fingerprint() for label, b in units}
    first_label, first = next(iter(prints.items()))
    for label, fp in prints.items():
        diff = sorted(k for k in set(fp) | set(first) if fp.get(k) != first.get(k))
        if diff:
            raise ConfigError(f"units {first_label} and {label} differ in {', '.join(diff)}: one table cannot "
                              "mix them.", "profile each kind separately: pick the phones with --serial, or set "
                              "connection.serial in the descriptor")
    return first


class NoOptions(BaseModel):
    """The ``[options]`` of a backend that takes none."""

    model_config = STRICT


class Backend(ABC):
    """One runtime. Constructors store; methods act."""

    name: ClassVar[str]
    runtime: ClassVar[str]  # the Python distribution that provides the runtime, for its version
    extra: ClassVar[str] = ""  # the pip extra that installs it
    suffix: ClassVar[str] = ""
    cache_name: ClassVar[str] = ""  # artifact cache folder, when shared with another backend
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    verified: ClassVar[bool] = True  # False until the backend has run on real hardware
    # How hwnas quantizes the runtime's INT8 models itself, float file to INT8 file (source, destination,
    # calibration inputs, scheme from the descriptor's options); None where the runtime's own tool does it
    # (trtexec --int8) or the runtime runs no INT8.
    quantizer: ClassVar[Callable[..., None] | None] = None
    quant_format: ClassVar[str] = "qdq"  # what the quantizer writes (QuantScheme.format): qdq or tflite
    # True where the runtime keeps the graph's input and output tensors allocated for the whole run (TFLite's
    # arena); False where it reads the caller's input buffer in place (ONNX Runtime). Shapes the memory model.
    holds_graph_io: ClassVar[bool] = False
    # How the runtime places activation buffers (:mod:`hwnas.cost.memplan`); "liveness" where not yet emulated.
    memory_planner: ClassVar[str] = "liveness"
    # What its kernels allocate beyond their outputs, per precision (:data:`hwnas.cost.memplan.KERNELS`); a
    # precision not named allocates nothing more.
    memory_kernels: ClassVar[dict[str, str]] = {}
    # The schema of the descriptor's ``[options]`` table (types, ranges, known keys): a runtime declares its own.
    options_schema: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, device: Device) -> None:
        self.device = device

    # -- availability -------------------------------------------------------------------------
    @classmethod
    def availability(cls, device: Device) -> tuple[bool, str]:
        """``(True, "ready")`` or ``(False, why + how to fix)``; must not raise."""
        if device.precision not in cls.precisions:
            return False, f"{cls.name} runs {'/'.join(cls.precisions)} only; set precision in {device.source}"
        quant = sorted(k for k in device.options if k.startswith("quant_"))
        if quant and device.precision != "int8":
            return False, (f"{', '.join(quant)} in {device.source} apply at precision int8 only: set "
                           "precision = \"int8\", or remove them")
        return cls._availability(device)

    @classmethod
    @abstractmethod
    def _availability(cls, device: Device) -> tuple[bool, str]: ...

    def runtime_version(self) -> str:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version(self.runtime)
        except PackageNotFoundError:
            return "not installed"

    def units(self) -> list[tuple[str, Backend]]:
        """The physical units this device stands for, each with its own backend; a host device is one."""
        return [("", self)]

    def check_alive(self) -> None:
        """Raise :class:`hwnas.core.errors.DeviceLost` if the unit went away (checked before every job)."""
        return None  # a host device cannot go away

    def check_ready(self) -> None:
        """Raise a :class:`DeviceUnavailable` with the fix when the device cannot be used."""
        ok, why = self.availability(self.device)
        if not ok:
            raise DeviceUnavailable(f"device '{self.device.name}' is not ready.", why)

    # -- prepare ------------------------------------------------------------------------------
    @abstractmethod
    def prepare(self, module: torch.nn.Module, input_shape: tuple[int, ...], tag: str,
                calibration: np.ndarray | None = None) -> Artifact:
        """``module`` (eval mode) made into what this runtime loads: a cached file (:class:`FileBackend`), or
        the module itself where the runtime keeps modules in memory (torch_cuda); ``calibration`` inputs for
        the runtimes hwnas quantizes at INT8."""

    # -- load / time / run --------------------------------------------------------------------
    def load(self, artifact: Artifact) -> Session:
        try:
            return self._load(artifact)
        except Exception as exc:
            raise MeasurementError(f"{self.name} could not load {artifact.path}: {exc}",
                                   f"delete the cached file {artifact.path} and retry") from exc

    @abstractmethod
    def _load(self, artifact: Artifact) -> Session: ...

    @staticmethod
    def time_session(session: Session, settings: MeasureSettings) -> np.ndarray:
        """Warm up, then time single invocations until both minimums (count, seconds) are reached."""
        for _ in range(settings.warmup_runs):
            session.invoke()
        samples: list[float] = []
        clock = time.perf_counter_ns
        start = clock()
        deadline_min = start + int(settings.min_seconds * 1e9)
        deadline_max = start + int(settings.max_seconds * 1e9)
        while True:
            t0 = clock()
            session.invoke()
            t1 = clock()
            samples.append((t1 - t0) / 1e6)
            enough = len(samples) >= settings.min_runs and t1 >= deadline_min
            if enough or len(samples) >= settings.max_runs or t1 >= deadline_max:
                return np.asarray(samples)

    def measure(self, artifact: Artifact, settings: MeasureSettings | None = None) -> LatencyStats:
        """Load, warm up and time ``artifact``: robust statistics in milliseconds."""
        return self.load(artifact).time(settings or MeasureSettings()).stats

    def run(self, artifact: Artifact, x: np.ndarray) -> np.ndarray:
        """Outputs of ``artifact`` on ``x`` (NCHW), for parity checks."""
        return self.load(artifact).run(x)

    def memory_report(self, artifact: Artifact) -> dict:
        """What the runtime itself reports about memory for ``artifact`` (bytes), plus the file size."""
        report = {"artifact_bytes": artifact.path.stat().st_size}
        report.update(self._memory_report(artifact))
        return report

    def _memory_report(self, artifact: Artifact) -> dict:
        return {}

    # -- identity -----------------------------------------------------------------------------
    def fingerprint(self) -> dict:
        """What a table measured on this backend must match to be reused."""
        from hwnas.core.hostinfo import cpu_model

        dev = self.device
        return {
            "device": dev.name,
            "backend": self.name,
            "runtime": self.runtime,
            "runtime_version": self.runtime_version(),
            "precision": dev.precision,
            "threads": dev.threads,
            "host_cpu": cpu_model(),
            "descriptor": {"description": dev.description, "connection": asdict(dev.connection),
                           "options": dict(dev.options)},
            **({"quantization": self.quant_scheme().to_dict()} if dev.precision == "int8" and self.quantizer else {}),
        }

    def quant_scheme(self):  # -> QuantScheme
        """How this device's INT8 models are quantized (:class:`hwnas.devices.backends.quantize.QuantScheme`)."""
        from hwnas.devices.backends.quantize import QuantScheme

        return QuantScheme.of(self.device.options, self.options_schema, self.quant_format)


class FileBackend(Backend):
    """A runtime that loads converted model files: :meth:`prepare` converts through :meth:`_prepare` into the
    artifact cache, keyed so that a changed module or converter converts again."""

    def prepare(self, module: torch.nn.Module, input_shape: tuple[int, ...], tag: str,
                calibration: np.ndarray | None = None) -> Artifact:
        """Convert ``module`` (eval mode) for this runtime, reusing a cached artifact.

        On an INT8 device of a runtime hwnas quantizes for (its ``quantizer``), the file is quantized from
        ``calibration`` inputs, ``(N, *input_shape)``: images of the training split for a network that ships;
        seeded random inputs by default, enough to time a block (integer kernels run alike whatever the scales).

        The cache key covers ``tag``, the input shape, the module's structure (its repr) and weights, the
        converter's version, and for INT8 the scheme and the calibration inputs: a changed block, or the same
        block with other weights, is converted again.
        """
        h = hashlib.sha256(f"{tag}|{input_shape}|{module!r}|{self.cache_salt()}".encode())
        for tensor in module.state_dict().values():
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        quantized = self.device.precision == "int8" and self.quantizer is not None
        if quantized:
            from hwnas.devices.backends.quantize import random_calibration

            calibration = random_calibration(input_shape) if calibration is None else np.asarray(calibration,
                                                                                               dtype=np.float32)
            h.update(f"|int8|{self.quant_scheme().salt()}|{calibration.shape}".encode())
            h.update(np.ascontiguousarray(calibration).tobytes())
        digest = h.hexdigest()[:20]
        path = cache_dir() / (self.cache_name or self.name) / f"{digest}{self.suffix}"
        import torch

        module = module.eval()
        with torch.no_grad():
            output_shape = tuple(module(torch.zeros(input_shape)).shape)
        if not path.is_file():
            cache_folder(path.parent.name)
            try:  # an OSError (a full disk, the cache taken away mid-run) is an OutputError with the fix
                atomic_write_with(path, (lambda tmp: self._prepare_quantized(module, input_shape, tmp, calibration))
                                  if quantized else (lambda tmp: self._prepare(module, input_shape, tmp)),
                                  fix=_CACHE_FIX)
            except HwnasError:
                raise
            except Exception as exc:
                raise MeasurementError(f"{self.name} could not convert '{tag}': {exc}",
                                       "report this as a bug with the op key") from exc
        return Artifact(path=path, input_shape=tuple(input_shape), output_shape=output_shape)

    def cache_salt(self) -> str:
        """What invalidates cached artifacts: the converter's version."""
        return self.runtime_version()

    @abstractmethod
    def _prepare(self, module: torch.nn.Module, input_shape: tuple[int, ...], path: Path) -> None:
        """Write the runtime's artifact of ``module`` to ``path`` (a temp path, renamed once complete)."""

    def _prepare_quantized(self, module: torch.nn.Module, input_shape: tuple[int, ...], path: Path,
                           calibration: np.ndarray) -> None:
        """Write the INT8 artifact of ``module`` to ``path``: the float artifact (:meth:`_prepare`), quantized by
        the runtime's ``quantizer`` from ``calibration`` with the device's scheme."""
        with tempfile.TemporaryDirectory(prefix=f"hwnas-{self.name}-") as tmp:
            float_file = Path(tmp) / f"float{self.suffix}"
            self._prepare(module, input_shape, float_file)
            self.quantizer(float_file, path, calibration, self.quant_scheme())
