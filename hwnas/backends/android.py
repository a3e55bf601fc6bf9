"""Android phones over adb, timed with LiteRT's ``benchmark_model`` (prerequisite checks only, for now)."""

from __future__ import annotations

import shutil
import subprocess
from typing import TYPE_CHECKING

from hwnas.backends._planned import PlannedBackend

if TYPE_CHECKING:
    from hwnas.devices import Device


def attached_serials(adb: str = "adb", timeout: float = 10.0) -> list[str]:
    """Serials that ``adb devices`` lists in state ``device`` (attached and authorized)."""
    out = subprocess.run([adb, "devices"], capture_output=True, text=True, timeout=timeout, check=False).stdout
    return [line.split()[0] for line in out.splitlines()[1:] if line.strip().endswith("\tdevice")]


class AndroidBackend(PlannedBackend):
    name = "android"
    runtime = "benchmark_model"
    suffix = ".tflite"
    precisions = ("fp32", "fp16")

    @classmethod
    def _missing(cls, device: Device) -> str:
        adb = device.option("adb", "adb")
        if shutil.which(adb) is None:
            return "adb not found: install it (apt-get install adb) and attach a phone with USB debugging on"
        try:
            serials = attached_serials(adb)
        except (OSError, subprocess.SubprocessError) as exc:
            return f"adb failed ({exc}): run 'adb devices' to see why"
        want = device.connection.serial
        if want and want not in serials:
            return f"phone {want} is not attached (attached: {serials or 'none'}): plug it in and authorize it"
        if not serials:
            return "no phone attached: connect one with USB debugging enabled and accept the prompt"
        return ""
