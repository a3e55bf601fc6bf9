"""NVIDIA GPUs through TensorRT (prerequisite checks only, for now; unverified until run on a GPU)."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

from hwnas._lazy import available
from hwnas.backends._planned import PlannedBackend

if TYPE_CHECKING:
    from hwnas.devices import Device


class TensorRTBackend(PlannedBackend):
    name = "tensorrt"
    runtime = "tensorrt"
    extra = "tensorrt"
    suffix = ".engine"
    precisions = ("fp32", "fp16", "int8")

    @classmethod
    def _missing(cls, device: Device) -> str:
        if not available("tensorrt") and shutil.which("trtexec") is None:
            return ("TensorRT not found: install the 'tensorrt' extra on a machine with an NVIDIA GPU, "
                    "or put trtexec on PATH")
        if shutil.which("nvidia-smi") is None:
            return "no NVIDIA driver found (nvidia-smi missing): TensorRT needs an NVIDIA GPU"
        return ""
