"""Export a network for deployment: ONNX, TFLite or a TensorRT engine, with parity checked at export.

The source is a search's run directory (its best architecture, trained weights and table hash) or an
architecture string (with ``--weights``, or freshly initialized from a seed, which ``verify`` can rebuild).
Every file carries what it is, so ``verify`` and ``check`` need nothing else:

- ONNX: pinned opset (:data:`hwnas.devices.backends.onnxruntime.OPSET`), ``onnx.checker`` and shape inference,
  ``metadata_props`` ``hwnas.*`` (arch, classes, table hash, hwnas version, weights digest, source).
- TFLite (litert-torch, NHWC input and output like every hwnas TFLite file) and TensorRT engines: the same
  metadata in a sidecar ``<file>.hwnas.json`` (neither format has a field hwnas can fill portably).
- INT8 (``--precision int8``): QDQ ONNX or full-integer TFLite, quantized after training from calibration
  images of the training split with an INT8 device's scheme (:func:`to_quantized`).

Parity: the exported model runs in its runtime (ONNX Runtime, LiteRT) on seeded random inputs and is
compared with the PyTorch module (:mod:`hwnas.deploy.parity`); a TensorRT engine is compared by ``hwnas verify``
on its GPU.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from hwnas import __version__
from hwnas.core.atomic import atomic_write_text, atomic_write_with, ensure_writable_dir
from hwnas.core.errors import ConfigError, DeviceUnavailable, MeasurementError, OutputError
from hwnas.core.registry import Registry
from hwnas.core.schema import read_json, validate
from hwnas.deploy.parity import Parity, compare, random_inputs
from hwnas.devices.registry import PRECISIONS
from hwnas.spaces.arch import Arch

if TYPE_CHECKING:
    from torch import nn

@dataclass(frozen=True)
class ExportFormat:
    """One file format hwnas exports: its suffix, its writer, where its metadata goes, where it runs here."""

    name: str
    suffix: str
    write: Callable[..., None]  # (module, input_shape, path, metadata, precision, trtexec) -> the file at path
    embeds_metadata: bool  # in the file itself (ONNX metadata_props); else a <file>.hwnas.json sidecar
    host_device: str | None  # the device that runs it on this host (parity, verify); None: only on its GPU


def _write_onnx(module, shape, path, metadata, precision, trtexec) -> None:
    to_onnx(module, shape, path, metadata)


def to_quantized(fmt: str, module: nn.Module, input_shape: tuple[int, ...], path: Path, metadata: dict[str, str],
                 calibration: np.ndarray, backend) -> None:
    """The float export of ``fmt`` quantized statically by the INT8 ``backend``'s quantizer (QDQ ONNX, or
    full-integer TFLite; :mod:`hwnas.devices.backends.quantize`) from ``calibration`` inputs ``(N, *input_shape)``,
    with its device's scheme. The metadata gains the precision, the scheme and the calibration's size."""
    spec = FORMATS[fmt]
    scheme = backend.quant_scheme()
    meta = {**metadata, "precision": "int8", "quantization": json.dumps(scheme.to_dict(), sort_keys=True),
            "calibration_images": str(len(calibration) * input_shape[0])}
    with tempfile.TemporaryDirectory(prefix="hwnas-int8-") as tmp:
        float_file, int8_file = Path(tmp) / f"float{spec.suffix}", Path(tmp) / f"int8{spec.suffix}"
        spec.write(module, input_shape, float_file, {}, "fp32", "")
        backend.quantizer(float_file, int8_file, calibration, scheme)
        if spec.embeds_metadata:
            _embed_onnx_metadata(int8_file, path, meta)
        else:
            atomic_write_with(path, lambda tmp_path: shutil.copyfile(int8_file, tmp_path))
            atomic_write_text(sidecar(path), json.dumps(meta, indent=1))


def _embed_onnx_metadata(src: Path, path: Path, meta: dict[str, str]) -> None:
    """``src`` written to ``path`` with ``meta`` as its ``hwnas.*`` metadata (and nothing else), checked."""
    import onnx

    model = onnx.load(str(src))
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=PREFIX + key, value=value)
    model.producer_name, model.producer_version = "hwnas", __version__
    onnx.checker.check_model(model, full_check=True)
    atomic_write_with(path, lambda tmp: onnx.save(model, str(tmp)))


def _write_tflite(module, shape, path, metadata, precision, trtexec) -> None:
    from hwnas.devices.backends.litert import to_tflite

    atomic_write_with(path, lambda tmp: to_tflite(module, shape, tmp))


def _write_engine(module, shape, path, metadata, precision, trtexec) -> None:
    to_engine(module, shape, path, precision, trtexec)


FORMATS: Registry[ExportFormat] = Registry("export format")
for _fmt in (ExportFormat("onnx", ".onnx", _write_onnx, True, "cpu"),
             ExportFormat("tflite", ".tflite", _write_tflite, False, "cpu-tflite"),
             ExportFormat("tensorrt", ".engine", _write_engine, False, None)):
    FORMATS.register(_fmt.name)(_fmt)


def format_for(suffix: str) -> str | None:
    """The export format that writes ``suffix`` files (a backend's model suffix), or None."""
    return next((name for name in FORMATS if FORMATS[name].suffix == suffix), None)
INIT_SEED = 0  # an architecture exported without weights is initialized from this seed (reproducible)
PREFIX = "hwnas."


@dataclass(frozen=True)
class Source:
    """What is exported: an architecture, its weights (None: initialized from ``INIT_SEED``) and provenance."""

    arch: Arch
    classes: int
    state_dict: dict | None = None
    weights_sha256: str = ""
    run_dir: str = ""
    table_sha256: str = ""

    def build(self) -> nn.Module:
        """The PyTorch reference network, in eval mode."""
        from hwnas.learn.loop import build_for

        net = build_for(self.arch, self.classes, INIT_SEED)
        if self.state_dict is not None:
            try:
                net.load_state_dict(self.state_dict, strict=True)
            except RuntimeError as exc:
                first = str(exc).strip().splitlines()[0]
                raise ConfigError(f"the weights do not fit {self.arch}: {first}",
                                  "pass the weights trained for this architecture (its run's weights.pt)") from None
        return net.eval()

    def metadata(self) -> dict[str, str]:
        meta = {"arch": str(self.arch), "classes": str(self.classes), "version": __version__,
                "trained": "true" if self.state_dict is not None else "false"}
        if self.state_dict is None:
            meta["init_seed"] = str(INIT_SEED)
        for key in ("weights_sha256", "run_dir", "table_sha256"):
            if getattr(self, key):
                meta[key] = getattr(self, key)
        return meta

    @classmethod
    def from_metadata(cls, meta: dict[str, str], weights: Path | None = None) -> Source:
        """Rebuild the reference a model was exported from: its run directory, ``weights``, or its seed."""
        if "arch" not in meta:
            raise ConfigError("the model carries no hwnas metadata (not exported by hwnas export).",
                              "pass --reference RUN_DIR or --reference ARCH --weights W to compare against")
        arch = metadata_arch(meta, "the model")
        classes = int(meta["classes"]) if "classes" in meta else _space_classes(arch)
        if weights is not None:
            return _with_weights(arch, weights)
        if meta.get("trained") != "true":
            return cls(arch, classes)
        run = Path(meta.get("run_dir", ""))
        if not (run / "weights.pt").is_file():
            raise ConfigError(f"the model's weights came from {run or 'an unknown run'}, which is not here.",
                              "pass --reference RUN_DIR (or --weights W) with the weights it was exported from")
        src = from_run_dir(run)
        if meta.get("weights_sha256") and src.weights_sha256 != meta["weights_sha256"]:
            raise ConfigError(f"{run}/weights.pt changed since the model was exported (digest differs).",
                              "export the model again, or pass the weights it was exported from")
        return src


def metadata_arch(meta: dict[str, str], source: Path | str) -> Arch:
    """The architecture named by a model's ``hwnas.arch`` metadata; a malformed one names the model."""
    try:
        return Arch.parse(meta["arch"])
    except ConfigError as exc:
        raise ConfigError(f"{source}: its hwnas.arch metadata is wrong: {exc.message}",
                          "re-export the model with hwnas export (its metadata was edited or is corrupt), or "
                          f"pass --reference ARCH ({exc.hint})") from None


def _space_classes(arch: Arch) -> int:
    """The classifier size of the architecture's space setting (its last layer's output)."""
    return int(arch.space.layers[-1].candidates[0].out[-1])


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _classes_of(state: dict) -> int:
    last = [k for k in state if k.endswith(".weight") and state[k].dim() == 2]
    if not last:
        raise ConfigError("the weights have no classifier (no 2-D weight).", "pass a state_dict of an hwnas network")
    return int(state[last[-1]].shape[0])


def _with_weights(arch: Arch, weights: Path, run_dir: str = "", table_sha256: str = "") -> Source:
    from hwnas.foreign.modelfile import load_weights

    state = load_weights(weights)
    return Source(arch, _classes_of(state), state, _sha256(weights), run_dir, table_sha256)


class _Open(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class _Best(_Open):
    """What export reads of a run's ``best.json`` (the rest is the search's own record)."""

    arch: str = Field(min_length=1, max_length=4096)


class _RunConfig(_Open):
    """What export reads of a run's ``config.json``."""

    table_sha256: str = ""


def from_run_dir(run: Path) -> Source:
    run = Path(run)
    best, weights = run / "best.json", run / "weights.pt"
    if not best.is_file() or not weights.is_file():
        raise ConfigError(f"{run} is not a finished search run (no best.json or weights.pt).",
                          "pass a run directory written by hwnas search (finish it with --resume), or an ARCH")
    fix = "re-run the search (or finish it with hwnas search --resume), or export its ARCH with --weights"
    arch_text = validate(_Best, read_json(best, "run file", fix), str(best), fix).arch
    try:
        arch = Arch.parse(arch_text)
    except ConfigError as exc:
        raise ConfigError(f"{best}: its arch is wrong: {exc.message}", fix) from None
    cfg_file = run / "config.json"
    config = validate(_RunConfig, read_json(cfg_file, "run file", fix), str(cfg_file), fix) if cfg_file.exists() \
        else _RunConfig()
    return _with_weights(arch, weights, str(run.resolve()), config.table_sha256)


def resolve_source(source: str, weights: Path | None = None, classes: int | None = None) -> Source:
    """``source`` is a run directory or an architecture string; ``weights`` overrides a run's.

    ``classes`` sizes the classifier of an architecture exported without weights (default: the space's).
    """
    from hwnas.foreign.modelfile import MAX_CLASSES

    if classes is not None and not (isinstance(classes, int) and 1 <= classes <= MAX_CLASSES):
        raise ConfigError(f"--classes {classes!r} is not a class count from 1 to {MAX_CLASSES}.",
                          "pass the number of classes the classifier predicts, e.g. --classes 10")
    path = Path(source)
    if path.is_dir():
        src = from_run_dir(path)
        return src if weights is None else _with_weights(src.arch, weights, src.run_dir, src.table_sha256)
    if "@" not in source:
        raise ConfigError(f"{source} is neither a run directory nor an architecture.",
                          "pass a run directory of hwnas search, or e.g. proxyless@32:066646660666066626662")
    arch = Arch.parse(source)
    if weights is not None:
        return _with_weights(arch, weights)
    return Source(arch, classes or _space_classes(arch))


# -- writers --------------------------------------------------------------------------------------
def to_onnx(module: nn.Module, input_shape: tuple[int, ...], path: Path, metadata: dict[str, str]) -> None:
    """Pinned opset, hwnas metadata, checked and shape-inferred, written atomically."""
    import onnx

    from hwnas.devices.backends.onnxruntime import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp, "raw.onnx")
        export_onnx(module, input_shape, raw)
        model = onnx.load(str(raw))
    for key, value in metadata.items():
        model.metadata_props.add(key=PREFIX + key, value=value)
    model.producer_name, model.producer_version = "hwnas", __version__
    model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    atomic_write_with(path, lambda tmp: onnx.save(model, str(tmp)))


def to_engine(module: nn.Module, input_shape: tuple[int, ...], path: Path, precision: str, trtexec: str) -> None:
    """A TensorRT engine built by ``trtexec`` from the ONNX export (needs TensorRT and an NVIDIA GPU)."""
    from hwnas.devices.backends.tensorrt import build_engine

    if shutil.which(trtexec) is None:
        raise DeviceUnavailable("exporting a TensorRT engine needs trtexec, which is not on PATH.",
                                "run on a machine with TensorRT and an NVIDIA GPU, or export --format onnx and "
                                "build the engine there (trtexec --onnx=model.onnx --saveEngine=model.engine)")
    precision = _precision(precision, "tensorrt")
    atomic_write_with(path, lambda tmp: build_engine(module, input_shape, tmp, precision, trtexec))


QUANTIZED = {"onnx": "cpu-int8", "tflite": "cpu-tflite-int8"}  # formats hwnas quantizes to INT8, and the device
# whose scheme (and quantizer) they take by default


def _precision(precision: str, fmt: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision '{precision}'.", f"use one of {', '.join(PRECISIONS)}")
    if fmt == "tensorrt" or precision == "fp32" or (precision == "int8" and fmt in QUANTIZED):
        return precision
    raise ConfigError(f"--precision {precision} does not apply to {fmt} exports.",
                      f"{fmt} exports are fp32{' or int8' if fmt in QUANTIZED else ''}; fp16 is for TensorRT "
                      "engines (--format tensorrt)")


def output_path(out: Path, arch: Arch, fmt: str) -> Path:
    """The file ``out`` names: itself, or ``<arch id>.<ext>`` in it when it is a folder (or has no suffix);
    its folder created and checked writable, before any conversion runs."""
    out = Path(out)
    if out.is_dir() or not out.suffix:
        out = out / f"{arch.id}{FORMATS[fmt].suffix}"
    if out.is_dir():
        raise OutputError(f"--out {out} is a directory, so the model cannot be written there.",
                          "pass a file path, or a folder that does not hold a folder of that name")
    ensure_writable_dir(out.parent)
    return out


def sidecar(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + ".hwnas.json")


def read_metadata(path: Path) -> dict[str, str]:
    """The hwnas metadata of a model file, checked (:func:`hwnas.foreign.modelfile.check_metadata`): ONNX
    ``metadata_props``, else its sidecar; {} when it has none."""
    from hwnas.foreign.modelfile import check_metadata

    path = Path(path)
    if path.suffix == ".onnx":
        from hwnas.foreign.modelfile import load_onnx

        return onnx_metadata(load_onnx(path, check=False), path)
    side = sidecar(path)
    if not side.exists():
        return {}
    data = read_json(side, "metadata sidecar", "export the model again with hwnas export (it writes the sidecar), "
                     "or delete the sidecar")
    return check_metadata(data, side)


def onnx_metadata(model, source: Path | str = "the model") -> dict[str, str]:
    """The ``hwnas.*`` ``metadata_props`` of an ONNX model, checked against one schema."""
    from hwnas.foreign.modelfile import check_metadata

    props = {}
    for p in model.metadata_props:
        if p.key.startswith(PREFIX):
            props[p.key[len(PREFIX):]] = p.value
    return check_metadata(props, source)


# -- the export ----------------------------------------------------------------------------------
@dataclass
class ExportResult:
    path: Path
    format: str
    arch: str
    metadata: dict[str, str]
    parity: Parity | None = None
    notes: list[str] = field(default_factory=list)


def export(source: Source, fmt: str, out: Path, *, precision: str = "fp32", trtexec: str = "trtexec",
           check_parity: bool = True, calibration: np.ndarray | None = None,
           device: str | None = None) -> ExportResult:
    """Write ``source`` as ``fmt`` to ``out``; parity with PyTorch is checked where the runtime is on this host.

    At ``precision`` int8 (ONNX or TFLite), the model is quantized from ``calibration`` images
    ``(N, *input_shape)``, the training split's, with the scheme of ``device`` (by default ``cpu-int8`` for ONNX,
    ``cpu-tflite-int8`` for TFLite), so that it is the model that device's table prices. Elementwise parity does
    not hold for it: the top-1 agreement on the calibration images is reported, and ``hwnas verify --data``
    measures the accuracy it loses on the test split.
    """
    spec = FORMATS.get(fmt)  # a known name, or the error with the choices
    _precision(precision, fmt)
    quantized = precision == "int8" and fmt in QUANTIZED
    if quantized and calibration is None:
        raise ConfigError(f"an INT8 {fmt} export is quantized from calibration images, and none were given.",
                          "pass --data SPEC (its training split gives the images; --calibration-images N of them)")
    out = output_path(out, source.arch, fmt)
    module = source.build()
    shape = source.arch.space.input_shape
    meta = source.metadata()
    result = ExportResult(out, fmt, str(source.arch), meta)
    if quantized:
        backend = _quant_device(device or QUANTIZED[fmt], fmt).backend_instance()
        scheme = backend.quant_scheme()
        to_quantized(fmt, module, shape, out, meta, _batched(calibration, shape), backend)
        result.metadata = read_metadata(out)
        if check_parity:
            result.parity = parity_with_torch(module, out, shape, "int8", inputs=_batched(calibration, shape))
            result.notes.append(f"INT8 ({scheme.weights} weights, {scheme.activations} activations, "
                                f"{scheme.calibration} calibration on {len(calibration)} images): top-1 agreement "
                                f"{result.parity.top1_agreement:.1%} on those images; hwnas verify --data measures "
                                "the accuracy lost on the test split")
        return result
    spec.write(module, shape, out, meta, precision, trtexec)
    if not spec.embeds_metadata:
        atomic_write_text(sidecar(out), json.dumps(meta, indent=1))
    if spec.host_device is None:
        result.notes.append("parity of a TensorRT engine is checked by hwnas verify on its GPU")
    elif check_parity:
        result.parity = parity_with_torch(module, out, shape, precision)
        if not result.parity.passed:
            raise MeasurementError(f"the exported {fmt} model disagrees with PyTorch: {result.parity.describe()}",
                                   "report this with the architecture; the file was written for inspection")
    return result


def host_session(path: Path, input_shape: tuple[int, ...]):
    """The model file loaded in its host runtime (ONNX Runtime or LiteRT), for running inputs."""
    from hwnas.devices.backends.base import Artifact
    from hwnas.devices.registry import get_device

    fmt = format_for(Path(path).suffix)
    host = FORMATS[fmt].host_device if fmt else None
    if host is None:
        raise ConfigError(f"{Path(path).name} runs on no runtime of this host.",
                          "check its parity with hwnas verify on its device")
    device = get_device(host)
    backend = device.backend_instance()
    backend.check_ready()
    return backend.load(Artifact(Path(path), tuple(input_shape), ()))


def export_calibration(source: Source, fmt: str, precision: str, data: str | None, n: int) -> np.ndarray | None:
    """The calibration images an export at ``precision`` needs (None where it needs none): ``n`` of the training
    split of ``data``, or of the data the source's run trained on, with that run's seed and limit."""
    if precision != "int8" or fmt not in QUANTIZED:
        return None
    from hwnas.learn.data import calibration_images

    spec, seed, limit = run_data(source, data)
    if not spec:
        raise ConfigError("an INT8 export calibrates on training images, and no dataset is known.",
                          "pass --data SPEC (e.g. --data digits, or the data the network was trained on)")
    return calibration_images(spec, source.arch.space.resolution, n, seed=seed, limit=limit)


def run_data(source: Source, data: str | None, seed: int = 0) -> tuple[str | None, int, int | None]:
    """``(spec, seed, limit)`` of the dataset read for ``source``: ``data``, or the data its run trained on. Where
    it is the run's data, that run's seed and limit, so that its images are split and normalized as in training:
    a pool without a test set of its own holds its test images out by the seed, and the limit caps the training
    pool whose sample gives the normalization. Other data: ``seed``, no limit."""
    run: dict = {}
    if source.run_dir and (Path(source.run_dir) / "config.json").is_file():
        run = read_json(Path(source.run_dir) / "config.json", "run file", "pass --data SPEC")
    spec = data or run.get("data")
    if spec is not None and spec == run.get("data"):
        return spec, int(run.get("seed", 0)), run.get("limit")
    return spec, seed, None


def _quant_device(name: str, fmt: str):
    """The INT8 device whose scheme an export of ``fmt`` takes: one hwnas quantizes for, that loads ``fmt``."""
    from hwnas.devices.registry import get_device

    device = get_device(name)
    if device.precision != "int8" or not device.backend_class.quantizer:
        raise ConfigError(f"device '{name}' does not run models hwnas quantizes (precision {device.precision}, "
                          f"backend {device.backend}).", f"pass an INT8 device, e.g. --device {QUANTIZED[fmt]}")
    if device.backend_class.suffix != FORMATS[fmt].suffix:
        raise ConfigError(f"device '{name}' runs {device.backend_class.suffix} models, not {fmt} ones.",
                          f"pass an INT8 device that runs {fmt} models, e.g. --device {QUANTIZED[fmt]}")
    return device


def _batched(images: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    """Images ``(N, C, H, W)`` as ``(N // batch, *input_shape)``: inputs the exported model takes as they are."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != len(input_shape) or images.shape[1:] != tuple(input_shape[1:]):
        raise ConfigError(f"calibration images of shape {images.shape[1:]} do not fit the model's input "
                          f"{tuple(input_shape[1:])}.", "pass images of the network's resolution (the data it "
                                                        "was trained on)")
    batch = input_shape[0]
    n = len(images) // batch
    if n == 0:
        raise ConfigError(f"{len(images)} calibration images fill no batch of {batch}.",
                          f"pass at least {batch} (--calibration-images)")
    return images[:n * batch].reshape(n, *input_shape)


def parity_with_torch(module: nn.Module, path: Path, input_shape: tuple[int, ...], precision: str = "fp32",
                      batches: int = 3, inputs: np.ndarray | None = None) -> Parity:
    import torch

    session = host_session(path, input_shape)
    xs = random_inputs(input_shape, batches) if inputs is None else list(inputs)
    with torch.no_grad():
        ref = np.stack([module(torch.from_numpy(x)).numpy() for x in xs])
    got = np.stack([session.run(x) for x in xs])
    return compare(ref, got, precision)
