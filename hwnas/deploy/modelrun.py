"""A model file on its device: read once as untrusted input, loaded into the device's runtime, timed.

One path for every command that measures a model file (``hwnas verify``, ``hwnas check --measure``): the file
must be the kind the device's runtime runs (its backend's ``suffix``: ``.onnx`` for ONNX Runtime, ``.tflite``
for LiteRT and phones, ``.engine`` for TensorRT); it is timed in consecutive rounds pooled with the profiler's
statistics, and its activation memory is measured as the runtime allocates it where a probe exists.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np

from hwnas.core.errors import ConfigError
from hwnas.deploy.export import Source, format_for
from hwnas.devices.backends import BACKENDS, get_backend_class
from hwnas.devices.backends.base import Artifact, Backend, MeasureSettings, RoundResult, Session, pool_rounds
from hwnas.devices.registry import Device

DEFAULT_SETTINGS = MeasureSettings(warmup_runs=5, min_runs=30, min_seconds=1.8)


class ModelFile:
    """A model file read once, as untrusted input: its hwnas metadata, NCHW input shape and weights.

    ONNX: the checked graph gives all three. TFLite/engines: the metadata sidecar names the architecture,
    which gives the shape and the (BN-folded) weights.
    """

    def __init__(self, path: Path) -> None:
        from hwnas.deploy.export import metadata_arch, onnx_metadata, read_metadata
        from hwnas.foreign.modelfile import check_model_file, check_tflite, image_input, load_onnx

        self.path = Path(path)
        self.onnx = load_onnx(self.path) if self.path.suffix == ".onnx" else None
        if self.onnx is not None:
            self.meta = onnx_metadata(self.onnx, self.path)
            self.input_shape = tuple(image_input(self.onnx, self.path).shape)
            return
        check_model_file(self.path)
        self.meta = read_metadata(self.path)
        if "arch" not in self.meta:
            raise ConfigError(f"{path}: cannot tell its input shape (no hwnas metadata sidecar "
                              f"{self.path.name}.hwnas.json).",
                              "verify models written by hwnas export, or ONNX models (their graph has the shape)")
        self.input_shape = tuple(metadata_arch(self.meta, self.path).space.input_shape)
        if self.path.suffix == ".tflite":  # it loads (a truncated file does not), and the sidecar belongs to it
            check_tflite(self.path, self.input_shape, "int8" if self.meta.get("precision") == "int8" else "float32")

    @classmethod
    def for_backend(cls, path: Path, device: Device, backend_name: str) -> ModelFile:
        """The file, if it is the kind of model the device's runtime runs."""
        from hwnas.foreign.modelfile import check_model_file

        check_model_file(path)  # missing, a folder, empty or too large: said as such, before its suffix
        want = get_backend_class(backend_name).suffix
        if not want:
            runs = [n for n in BACKENDS if get_backend_class(n).suffix]
            raise ConfigError(f"hwnas does not run model files on the {backend_name} backend ({device.name}).",
                              f"use a device whose backend is one of {', '.join(runs)}")
        if Path(path).suffix != want:
            raise ConfigError(f"{device.name} runs {want} models, not {Path(path).name}.",
                              f"export for it: hwnas export … --format {format_for(want)}")
        return cls(path)

    @cached_property
    def weights(self) -> tuple[int, int]:
        """(parameter count, bytes): the ONNX initializers, or the architecture's BN-folded weights (fp32)."""
        if self.onnx is not None:
            from hwnas.foreign.modelfile import onnx_weights

            return onnx_weights(self.onnx)
        from hwnas.measure.footprint import folded_weight_count

        count = folded_weight_count(Source.from_metadata({**self.meta, "trained": "false"}).build())
        return count, count * 4


class DeviceRun:
    """``model`` loaded on ``device``'s first unit, the file checked first (:meth:`ModelFile.for_backend`)."""

    def __init__(self, model: Path, device: Device) -> None:
        self.device = device
        self.backend: Backend = device.backend_instance()
        self.file = ModelFile.for_backend(Path(model), device, self.backend.name)

    def start(self) -> DeviceRun:
        """Check the runtime and load the model (after the caller's own checks of the file, before any timing)."""
        self.backend.check_ready()
        self.unit: Backend = self.backend.units()[0][1]
        self.session: Session = self.unit.load(Artifact(self.file.path, self.file.input_shape, ()))
        return self

    def time(self, rounds: int, settings: MeasureSettings = DEFAULT_SETTINGS) -> tuple[dict, np.ndarray | None]:
        """Latency statistics of ``rounds`` consecutive rounds, pooled; the raw samples where the runtime has them."""
        results: list[RoundResult] = [self.session.time(settings.split(rounds)) for _ in range(rounds)]
        samples = np.concatenate([r.samples for r in results]) if all(r.samples is not None for r in results) \
            else None
        return pool_rounds(results).to_dict(), samples

    def activation_memory(self) -> dict | None:
        """The runtime's activation allocation (bytes and how it was measured), or None where no probe exists."""
        from hwnas.measure.memprobe import PROBES, measure_activation_memory

        if self.backend.name not in PROBES:
            return None
        return measure_activation_memory(self.backend.name, self.file.path, self.file.input_shape,
                                         self.device.threads)
