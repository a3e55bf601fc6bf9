"""NVIDIA GPUs through PyTorch CUDA (prerequisite checks only, for now)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hwnas.backends._planned import PlannedBackend

if TYPE_CHECKING:
    from hwnas.devices import Device


class TorchCudaBackend(PlannedBackend):
    name = "torch_cuda"
    runtime = "torch"
    suffix = ".pt"
    precisions = ("fp32", "fp16")

    @classmethod
    def _missing(cls, device: Device) -> str:
        import torch

        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
            return f"no CUDA GPU visible to torch {torch.__version__} ({build}): run on a machine with an NVIDIA GPU"
        if device.connection.index >= torch.cuda.device_count():
            return f"GPU index {device.connection.index} does not exist ({torch.cuda.device_count()} visible)"
        return ""
