"""Untrusted model and weight files: bounded, checked, never unpickled.

Every model a user hands to ``verify``, ``check`` or ``profile --model`` is treated as hostile:

- sizes are bounded before anything is parsed (``HWNAS_MAX_MODEL_MB``, 2048 by default);
- ONNX external data must live in the model's own folder: an absolute ``location``, a ``..`` that climbs
  out, or a symlink that points out is refused (CVE-2022-25882, CVE-2024-27318), and so is a range past
  the end of the data file;
- the graph must pass ``onnx.checker`` and strict shape inference;
- the image input must be one rank-4 float tensor with bounded dimensions;
- a TFLite file must carry the FlatBuffer identifier and load in the LiteRT interpreter, with the input the
  architecture in its metadata takes;
- the ``hwnas.*`` metadata (ONNX ``metadata_props`` or a sidecar) is checked against one schema
  (:class:`Metadata`): a class count that is not a bounded positive integer would size the reference's
  classifier from a stranger's number;
- weights are read through safetensors (its header bounded first) or ``torch.load(weights_only=True)``,
  which cannot run code.

Every refusal is a :class:`hwnas.core.errors.ConfigError` (exit 2) that says what is wrong and how to fix it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from hwnas.core.errors import ConfigError
from hwnas.core.schema import Positive, validate

if TYPE_CHECKING:
    import onnx
    import torch

MAX_DIM = 8192  # largest image side or channel count accepted
MAX_CLASSES = 100_000  # a classifier wider than this is no image classifier hwnas exports
MAX_SAFETENSORS_HEADER = 100 * 2**20  # safetensors' own reader refuses headers over 100 MB too
TFLITE_MAGIC = b"TFL3"
_BYTE_COUNT = re.compile(r"[0-9]{1,19}")  # an external-data offset or length as ONNX stores it: decimal digits


def max_model_bytes() -> int:
    """``HWNAS_MAX_MODEL_MB`` in bytes: a finite size > 0 (an infinite or NaN bound would bound nothing)."""
    raw = os.environ.get("HWNAS_MAX_MODEL_MB", "2048")
    try:
        mb = TypeAdapter(Positive).validate_python(raw)
    except ValidationError:
        raise ConfigError(f"HWNAS_MAX_MODEL_MB={raw!r} is not a size in MiB (a finite number > 0).",
                          "set it to a size in MiB, e.g. HWNAS_MAX_MODEL_MB=2048, or unset it") from None
    return int(mb * 2**20)


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
        _check_byte_counts(tensor, path)
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


def _check_byte_counts(tensor: onnx.TensorProto, path: Path) -> None:
    """``offset`` and ``length`` must be byte counts; onnx's own parser raises a bare ValueError otherwise."""
    for entry in tensor.external_data:
        if entry.key in ("offset", "length") and not _BYTE_COUNT.fullmatch(entry.value):
            raise ConfigError(f"{path}: tensor '{tensor.name}' gives its external data {entry.key} as "
                              f"{entry.value[:40]!r}, not a byte count (an integer ≥ 0).",
                              "the model file is corrupt or was edited by hand; re-export it with its data file")


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
    """(parameter count, bytes) of the model's initializers.

    Parameters are the elements of the floating-point initializers (integer ones are shapes and indices,
    not weights) — the same definition as :meth:`hwnas.foreign.onnxblocks.OnnxModel.weights` and, for a model priced
    from its architecture, :func:`hwnas.measure.footprint.folded_weight_count`; bytes count every initializer, since
    the runtime holds them all.
    """
    from onnx import helper

    count = size = 0
    for t in model.graph.initializer:
        n = 1
        for d in t.dims:
            n *= int(d)
        dtype = helper.tensor_dtype_to_np_dtype(t.data_type)
        count += n if dtype.kind == "f" else 0
        size += n * dtype.itemsize
    return count, size


# -- hwnas metadata -------------------------------------------------------------------------------
class Metadata(BaseModel):
    """The ``hwnas.*`` metadata of a model file (all strings, as ONNX ``metadata_props`` hold them)."""

    model_config = ConfigDict(strict=True, extra="allow")
    __pydantic_extra__: dict[str, str] = Field(init=False)

    arch: str | None = Field(None, min_length=1, max_length=4096)
    classes: str | None = None
    trained: Literal["true", "false"] | None = None
    precision: Literal["fp32", "fp16", "int8"] | None = None  # int8: quantized by hwnas export

    @field_validator("classes")
    @classmethod
    def _bounded_class_count(cls, value: str | None) -> str | None:
        if value is not None and not (re.fullmatch(r"[0-9]{1,7}", value) and 1 <= int(value) <= MAX_CLASSES):
            raise ValueError(f"must be a class count from 1 to {MAX_CLASSES}")
        return value


def check_metadata(raw: object, source: Path | str) -> dict[str, str]:
    """``raw`` checked against :class:`Metadata`; the keys it sets, as strings."""
    meta = validate(Metadata, raw, f"hwnas metadata of {source}",
                    "re-export the model with hwnas export (its metadata was edited or is corrupt)")
    return {k: v for k, v in meta.model_dump().items() if v is not None}


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


def check_model_file(path: Path) -> Path:
    """A model file of a format hwnas cannot parse here (a TensorRT engine): it exists, is bounded, not empty."""
    return _existing_file(path, "model")


def check_tflite(path: Path, input_nchw: tuple[int, ...] | None = None, dtype: str = "float32") -> Path:
    """Bounded, the TFLite identifier, and loadable by the LiteRT interpreter (whose FlatBuffer verifier
    refuses a truncated file); with ``input_nchw``, its one input must be that shape, channels last, of ``dtype``
    (int8 for a full-integer model)."""
    path = _existing_file(path, "model")
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8 or head[4:8] != TFLITE_MAGIC:
        raise ConfigError(f"{path} is not a TFLite model (no 'TFL3' identifier); it may be truncated.",
                          "pass a .tflite file written by a LiteRT converter")
    inputs = _tflite_inputs(path)
    if input_nchw is not None:
        n, c, h, w = input_nchw
        if inputs != [((n, h, w, c), dtype)]:
            got = ", ".join(f"{shape} {kind}" for shape, kind in inputs)
            raise ConfigError(f"{path} takes {got}, but its metadata names an architecture that takes "
                              f"{(n, h, w, c)} {dtype} (NHWC).",
                              "the sidecar <model>.hwnas.json belongs to another model: re-export the model, "
                              "or copy it together with its own sidecar")
    return path


def _tflite_inputs(path: Path) -> list[tuple[tuple[int, ...], str]]:
    from hwnas.core.lazy import require
    from hwnas.core.quiet import native_output_captured

    interp_mod = require("ai_edge_litert.interpreter", "tflite", "ai-edge-litert")
    try:
        with native_output_captured():
            interp = interp_mod.Interpreter(model_path=str(path))
    except (ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path} does not load as a TFLite model ({first}); it may be truncated or corrupt.",
                          "re-export the model, or check that the file copied completely") from None
    return [(tuple(int(d) for d in i["shape"]), i["dtype"].__name__) for i in interp.get_input_details()]


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from ``.safetensors`` or a torch file read with ``weights_only`` (no code runs)."""
    import pickle

    import torch
    from safetensors import SafetensorError

    path = _existing_file(path, "weights file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            _check_safetensors_header(path)
            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, SafetensorError, RuntimeError, ValueError, EOFError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path} is not a loadable weights file: {first}",
                          "pass a state_dict saved with torch.save, or a .safetensors file") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ConfigError(f"{path} does not hold a state_dict (name → tensor).",
                          "save the model's state_dict(), not the model object")
    return state


def _check_safetensors_header(path: Path) -> None:
    """The 8-byte header length must fit the file and a sane bound, before the reader allocates it."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
    declared = int.from_bytes(head, "little") if len(head) == 8 else -1
    if declared < 2 or declared > min(size - 8, MAX_SAFETENSORS_HEADER):
        raise ConfigError(f"{path} is not a safetensors file: its header claims {declared} bytes, the file has "
                          f"{size}; it is truncated, corrupt or another format.",
                          "pass a state_dict saved with safetensors.torch.save_file, or a torch.save .pt file")
