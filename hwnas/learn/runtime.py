"""Where training runs: the torch device, mixed precision, memory format, data workers and compilation.

The hardware the network is *measured* on is the search's device (a table); the hardware it *trains* on is
this, whatever the user has: ``--train-device auto`` takes CUDA when there is one (the local rank's GPU under
torchrun), else the CPU. Mixed precision (``--amp``) is bf16 on CUDA by default and off on the CPU; fp16
uses a gradient scaler. Activations are channels_last. On the CPU, training is deterministic for a seed.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from typing import Literal

import torch

from hwnas.core.errors import ConfigError
from hwnas.learn.distributed import World, world

AMP = ("auto", "bf16", "fp16", "off")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device(name: str) -> str:
    """``name`` if it is a training device hwnas knows (auto, cpu, cuda, cuda:N), else the error with the fix."""
    if not isinstance(name, str) or not _DEVICE.match(name):
        raise ConfigError(f"--train-device {name!r} is not a training device.", "use auto, cpu, cuda or cuda:N")
    return name


@dataclass(frozen=True)
class Runtime:
    """Resolved training settings: build one with :meth:`create`."""

    device: torch.device
    amp: Literal["bf16", "fp16", "off"]
    workers: int
    compile: bool
    world: World

    @classmethod
    def create(cls, device: str = "auto", amp: str = "auto", workers: int | None = None,
               compile: bool = False) -> Runtime:
        check_device(device)
        if amp not in AMP:
            raise ConfigError(f"--amp {amp!r} is not a precision.", f"use one of {', '.join(AMP)}")
        w = world()
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dev = torch.device(device)
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise ConfigError(f"--train-device {device}: this torch ({torch.__version__}) sees no CUDA GPU.",
                                  "train on the CPU (--train-device cpu), or install a CUDA build of torch on a "
                                  "machine with an NVIDIA GPU")
            if dev.index is None:
                dev = torch.device("cuda", w.local_rank % torch.cuda.device_count())
            elif dev.index >= torch.cuda.device_count():
                raise ConfigError(f"--train-device {device}: there are {torch.cuda.device_count()} GPUs.",
                                  f"use cuda:0 to cuda:{torch.cuda.device_count() - 1}")
            torch.cuda.set_device(dev)
        if amp == "auto":
            amp = "bf16" if dev.type == "cuda" and torch.cuda.is_bf16_supported() else "off"
        if amp == "fp16" and dev.type != "cuda":
            raise ConfigError("--amp fp16 trains only on CUDA.", "use --amp bf16 or off on the CPU")
        if workers is None:
            workers = 0 if dev.type == "cpu" else min(8, max(1, (os.cpu_count() or 2) // max(1, w.size) - 1))
        return cls(dev, amp, int(workers), bool(compile), w)

    @property
    def dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.amp)

    def autocast(self):
        """The forward pass's mixed-precision context (nothing with amp off)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.device.type, enabled=self.amp == "fp16")

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)

    def place(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device, memory_format=torch.channels_last)

    def describe(self) -> dict:
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        return {"device": str(self.device), "name": name, "amp": self.amp, "workers": self.workers,
                "compile": self.compile, "processes": self.world.size,
                "threads": torch.get_num_threads() if self.device.type == "cpu" else None}


def cpu_contiguous(model: torch.nn.Module) -> torch.nn.Module:
    """The model back on the CPU in the default memory format (what export and saving expect)."""
    return model.to("cpu", memory_format=torch.contiguous_format)
