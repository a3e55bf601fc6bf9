"""Shared shape of backends whose runtime lives on hardware this version cannot drive yet.

Their availability checks the real prerequisites (adb and an attached phone, a CUDA GPU, TensorRT)
and then says plainly that the measuring code arrives with the remote-devices work (issue #3).
Nothing here ever produces a number.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hwnas.backends.base import Artifact, Backend, Session
from hwnas.errors import DeviceUnavailable

if TYPE_CHECKING:
    import torch

    from hwnas.devices import Device

PENDING = "hwnas cannot measure on it yet: this backend arrives with the remote-devices work (issue #3)"


class PlannedBackend(Backend):
    verified = False

    @classmethod
    def _availability(cls, device: Device) -> tuple[bool, str]:
        missing = cls._missing(device)
        return False, missing if missing else PENDING

    @classmethod
    def _missing(cls, device: Device) -> str:
        """What the host lacks for this device, with the fix; empty when the prerequisites are met."""
        return ""

    def _refuse(self) -> DeviceUnavailable:
        ok, why = self.availability(self.device)
        return DeviceUnavailable(f"device '{self.device.name}' is not ready.", why)

    def _prepare(self, module: torch.nn.Module, input_shape: tuple[int, ...], path: Path) -> None:
        raise self._refuse()

    def _load(self, artifact: Artifact) -> Session:
        raise self._refuse()
