"""Untrusted model and weight files: bounded, checked, never unpickled.

Every model a user hands to ``verify``, ``check`` or ``profile --model`` is treated as hostile:

- sizes are bounded before anything is parsed (``HWNAS_MAX_MODEL_MB``, 2048 by default);
- ONNX external data must live in the model's own folder: an absolute ``location``, a ``..`` that climbs
  out, or a symlink that points out is refused (CVE-2022-25882, CVE-2024-27318), and so is a range past
  the end of the data file;
- the graph must pass ``onnx.checker`` and strict shape inference;
- the image input must be one rank-4 float tensor with bounded dimensions;
- weights are read through safetensors or ``torch.load(weights_only=True)``, which cannot run code.

Every refusal is a :class:`hwnas.errors.ConfigError` (exit 2) that says what is wrong and how to fix it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hwnas.errors import ConfigError

if TYPE_CHECKING:
    import onnx
    import torch

MAX_DIM = 8192  # largest image side or channel count accepted
TFLITE_MAGIC = b"TFL3"


def max_model_bytes() -> int:
    raw = os.environ.get("HWNAS_MAX_MODEL_MB", "2048")
    try:
        return int(float(raw) * 2**20)
    except ValueError:
        raise ConfigError(f"HWNAS_MAX_MODEL_MB={raw!r} is not a number.",
                          "set it to a size in MiB, e.g. 2048") from None


def _existing_file(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{what} {path} does not exist.", "check the path")
    if not path.is_file():
        raise ConfigError(f"{what} {path} is not a file.", "pass the model file itself, not a folder")
    size = path.stat().st_size
    if size > max_model_bytes():
        raise ConfigError(f"{what} {path} is {size / 2**20:.0f} MiB, over the "
                          f"{max_model_bytes() / 2**20:.0f} MiB limit.",
                          "raise HWNAS_MAX_MODEL_MB if the file is trusted and really this large")
    if size == 0:
        raise ConfigError(f"{what} {path} is empty.", "re-export the model")
    return path


def _all_tensors(graph: onnx.GraphProto):
    """Every TensorProto of a graph: initializers, sparse initializers, and constants in (sub)graph attributes."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _all_tensors(attr.g)
            for g in attr.graphs:
                yield from _all_tensors(g)


def _check_external_data(model: onnx.ModelProto, folder: Path, path: Path) -> int:
    """Refuse external data outside the model's folder; return the number of external tensors."""
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    root = folder.resolve()
    count = 0
    for tensor in _all_tensors(model.graph):
        if not uses_external_data(tensor):
            continue
        count += 1
        info = ExternalDataInfo(tensor)
        loc = info.location or ""
        target = (folder / loc).resolve()
        if not loc or Path(loc).is_absolute() or (target != root and root not in target.parents):
            raise ConfigError(f"{path}: tensor '{tensor.name}' points its external data at {loc!r}, outside the "
                              "model's folder; hwnas refuses it (path traversal, CVE-2022-25882/CVE-2024-27318).",
                              "keep external data files next to the model and name them relatively")
        if not target.is_file():
            raise ConfigError(f"{path}: external data file {loc!r} of tensor '{tensor.name}' is missing.",
                              "copy the model together with its data files")
        size = target.stat().st_size
        offset, length = int(info.offset or 0), int(info.length or 0)
        if offset < 0 or length < 0 or offset + length > size:
            raise ConfigError(f"{path}: tensor '{tensor.name}' reads bytes {offset}..{offset + length} of {loc!r}, "
                              f"which has {size}.", "the data file is truncated or does not belong to this model")
    return count


def load_onnx(path: Path, *, check: bool = True) -> onnx.ModelProto:
    """Parse, bound, check and shape-infer an untrusted ONNX file (external data only from its own folder)."""
    import onnx
    from google.protobuf.message import DecodeError

    path = _existing_file(path, "model")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeWarning, ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not a valid ONNX file ({type(exc).__name__}: {exc}); it may be truncated.",
                          "re-export the model, or check that the file copied completely") from None
    if not model.graph.node:
        raise ConfigError(f"{path} holds no ONNX graph (no nodes); it is not a model or it is corrupt.",
                          "pass an ONNX model file")
    if _check_external_data(model, path.parent, path):
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(model, str(path.parent))
    if check:
        try:
            onnx.checker.check_model(model)
            model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"{path} fails ONNX validation: {first}",
                              "re-export the model with a supported opset") from None
    return model


def onnx_weights(model: onnx.ModelProto) -> tuple[int, int]:
    """(parameter count, bytes) of the model's initializers."""
    from onnx import helper

    count = size = 0
    for t in model.graph.initializer:
        n = 1
        for d in t.dims:
            n *= int(d)
        count += n
        size += n * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    return count, size


@dataclass(frozen=True)
class ImageInput:
    name: str
    shape: tuple[int, int, int, int]  # NCHW, batch resolved to 1 when symbolic


def image_input(model: onnx.ModelProto, source: Path | str = "model") -> ImageInput:
    """The model's one image input: rank 4, float32, bounded; a symbolic batch becomes 1."""
    from onnx import TensorProto

    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ConfigError(f"{source} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); hwnas handles "
                          "image classifiers with one input.", "export the model with a single NCHW image input")
    inp = inputs[0]
    ttype = inp.type.tensor_type
    if ttype.elem_type != TensorProto.FLOAT:
        raise ConfigError(f"{source}: input '{inp.name}' is {TensorProto.DataType.Name(ttype.elem_type)}, not float32.",
                          "export the float model (quantize on the device's converter, not before)")
    dims = list(ttype.shape.dim)
    if len(dims) != 4:
        raise ConfigError(f"{source}: input '{inp.name}' has rank {len(dims)}; hwnas expects NCHW (rank 4).",
                          "export the model with a (batch, channels, height, width) input")
    shape = []
    for i, d in enumerate(dims):
        value = d.dim_value if d.HasField("dim_value") else 0
        if value <= 0:
            if i == 0:
                value = 1
            else:
                raise ConfigError(f"{source}: input '{inp.name}' has a symbolic dimension {i} ({d.dim_param!r}).",
                                  "export with a fixed channel count and image size")
        if value > MAX_DIM:
            raise ConfigError(f"{source}: input '{inp.name}' dimension {i} is {value}, over the limit {MAX_DIM}.",
                              "export the model at its deployment resolution")
        shape.append(value)
    return ImageInput(inp.name, tuple(shape))


def check_tflite(path: Path) -> Path:
    """Bounded, and a FlatBuffer with the TFLite identifier; the interpreter parses the rest."""
    path = _existing_file(path, "model")
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8 or head[4:8] != TFLITE_MAGIC:
        raise ConfigError(f"{path} is not a TFLite model (no 'TFL3' identifier); it may be truncated.",
                          "pass a .tflite file written by a LiteRT converter")
    return path


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from ``.safetensors`` or a torch file read with ``weights_only`` (no code runs)."""
    import pickle

    import torch

    path = _existing_file(path, "weights file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path} is not a loadable weights file: {first}",
                          "pass a state_dict saved with torch.save, or a .safetensors file") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ConfigError(f"{path} does not hold a state_dict (name → tensor).",
                          "save the model's state_dict(), not the model object")
    return state
