"""Export a network for deployment: ONNX, TFLite or a TensorRT engine, with parity checked at export.

The source is a search's run directory (its best architecture, trained weights and table hash) or an
architecture string (with ``--weights``, or freshly initialized from a seed, which ``verify`` can rebuild).
Every file carries what it is, so ``verify`` and ``check`` need nothing else:

- ONNX: pinned opset (:data:`hwnas.backends.onnxruntime.OPSET`), ``onnx.checker`` and shape inference,
  ``metadata_props`` ``hwnas.*`` (arch, classes, table hash, hwnas version, weights digest, source).
- TFLite (litert-torch, NHWC input and output like every hwnas TFLite file) and TensorRT engines: the same
  metadata in a sidecar ``<file>.hwnas.json`` (neither format has a field hwnas can fill portably).

Parity: the exported model runs in its runtime (ONNX Runtime, LiteRT) on seeded random inputs and is
compared with the PyTorch module (:mod:`hwnas.parity`); a TensorRT engine is compared by ``hwnas verify``
on its GPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hwnas import __version__
from hwnas.arch import Arch
from hwnas.atomic import atomic_write_text, ensure_writable_dir
from hwnas.errors import ConfigError, DeviceUnavailable, MeasurementError
from hwnas.parity import Parity, compare, random_inputs

if TYPE_CHECKING:
    from torch import nn

FORMATS = {"onnx": ".onnx", "tflite": ".tflite", "tensorrt": ".engine"}
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
        from hwnas.train import build_for

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
        arch = Arch.parse(meta["arch"])
        classes = int(meta["classes"]) if meta.get("classes", "").isdigit() else _space_classes(arch)
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
    from hwnas.modelfile import load_weights

    state = load_weights(weights)
    return Source(arch, _classes_of(state), state, _sha256(weights), run_dir, table_sha256)


def from_run_dir(run: Path) -> Source:
    run = Path(run)
    best, weights = run / "best.json", run / "weights.pt"
    if not best.is_file() or not weights.is_file():
        raise ConfigError(f"{run} is not a finished search run (no best.json or weights.pt).",
                          "pass a run directory written by hwnas search (finish it with --resume), or an ARCH")
    try:
        arch = Arch.parse(json.loads(best.read_text())["arch"])
        config = json.loads((run / "config.json").read_text()) if (run / "config.json").is_file() else {}
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"{run}: best.json or config.json is malformed ({exc}).", "re-run the search") from None
    return _with_weights(arch, weights, str(run.resolve()), str(config.get("table_sha256", "")))


def resolve_source(source: str, weights: Path | None = None, classes: int | None = None) -> Source:
    """``source`` is a run directory or an architecture string; ``weights`` overrides a run's.

    ``classes`` sizes the classifier of an architecture exported without weights (default: the space's).
    """
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

    from hwnas.backends.onnxruntime import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp, "raw.onnx")
        export_onnx(module, input_shape, raw)
        model = onnx.load(str(raw))
    for key, value in metadata.items():
        model.metadata_props.add(key=PREFIX + key, value=value)
    model.producer_name, model.producer_version = "hwnas", __version__
    model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    _atomic(path, lambda tmp: onnx.save(model, str(tmp)))


def to_engine(module: nn.Module, input_shape: tuple[int, ...], path: Path, precision: str, trtexec: str) -> None:
    """A TensorRT engine built by ``trtexec`` from the ONNX export (needs TensorRT and an NVIDIA GPU)."""
    from hwnas.backends.onnxruntime import export_onnx

    if shutil.which(trtexec) is None:
        raise DeviceUnavailable("exporting a TensorRT engine needs trtexec, which is not on PATH.",
                                "run on a machine with TensorRT and an NVIDIA GPU, or export --format onnx and "
                                "build the engine there (trtexec --onnx=model.onnx --saveEngine=model.engine)")
    flags = {"fp16": ["--fp16"], "int8": ["--int8"], "fp32": []}[precision]
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp, "model.onnx")
        export_onnx(module, input_shape, onnx_path)

        def build(out: Path) -> None:
            cmd = [trtexec, f"--onnx={onnx_path}", f"--saveEngine={out}", "--skipInference", *flags]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, check=False)
            if proc.returncode != 0:
                raise MeasurementError(f"trtexec failed ({proc.returncode}): {(proc.stdout + proc.stderr)[-600:]}",
                                       f"run by hand: {' '.join(cmd)}")

        _atomic(path, build)


def _atomic(path: Path, write) -> None:
    path = Path(path)
    ensure_writable_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def sidecar(path: Path) -> Path:
    return Path(path).with_name(Path(path).name + ".hwnas.json")


def read_metadata(path: Path) -> dict[str, str]:
    """The hwnas metadata of a model file: ONNX ``metadata_props``, else its sidecar; {} when it has none."""
    path = Path(path)
    if path.suffix == ".onnx":
        from hwnas.modelfile import load_onnx

        return onnx_metadata(load_onnx(path, check=False))
    side = sidecar(path)
    if not side.is_file():
        return {}
    try:
        data = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{side} is malformed ({exc}).", "export the model again") from None
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def onnx_metadata(model) -> dict[str, str]:
    return {p.key[len(PREFIX):]: p.value for p in model.metadata_props if p.key.startswith(PREFIX)}


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
           check_parity: bool = True) -> ExportResult:
    """Write ``source`` as ``fmt`` to ``out``; parity with PyTorch is checked where the runtime is on this host."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format '{fmt}'.", f"use one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.is_dir() or not out.suffix:  # a folder: the file is named after the architecture
        out = out / f"{source.arch.id}{FORMATS[fmt]}"
    module = source.build()
    shape = source.arch.space.input_shape
    meta = source.metadata()
    result = ExportResult(out, fmt, str(source.arch), meta)
    if fmt == "onnx":
        to_onnx(module, shape, out, meta)
    elif fmt == "tflite":
        from hwnas.backends.litert import to_tflite

        _atomic(out, lambda tmp: to_tflite(module, shape, tmp))
    else:
        to_engine(module, shape, out, precision, trtexec)
        result.notes.append("parity of a TensorRT engine is checked by hwnas verify on its GPU")
    if fmt != "onnx":
        atomic_write_text(sidecar(out), json.dumps(meta, indent=1))
    if check_parity and fmt != "tensorrt":
        result.parity = parity_with_torch(module, out, shape, precision)
        if not result.parity.passed:
            raise MeasurementError(f"the exported {fmt} model disagrees with PyTorch: {result.parity.describe()}",
                                   "report this with the architecture; the file was written for inspection")
    return result


def host_session(path: Path, input_shape: tuple[int, ...]):
    """The model file loaded in its host runtime (ONNX Runtime or LiteRT), for running inputs."""
    from hwnas.backends.base import Artifact
    from hwnas.devices import get_device

    device = get_device("cpu" if Path(path).suffix == ".onnx" else "cpu-tflite")
    backend = device.backend_instance()
    backend.check_ready()
    return backend.load(Artifact(Path(path), tuple(input_shape), ()))


def parity_with_torch(module: nn.Module, path: Path, input_shape: tuple[int, ...], precision: str = "fp32",
                      batches: int = 3) -> Parity:
    import torch

    session = host_session(path, input_shape)
    xs = random_inputs(input_shape, batches)
    with torch.no_grad():
        ref = np.stack([module(torch.from_numpy(x)).numpy() for x in xs])
    got = np.stack([session.run(x) for x in xs])
    return compare(ref, got, precision)
