"""Android phones over adb, timed on the phone by LiteRT's ``benchmark_model``.

Models convert exactly as for the host LiteRT backend (litert-torch, channels-last I/O; the cache is
shared). hwnas pushes the user's ``benchmark_model`` binary once per phone, pushes each ``.tflite``,
runs the tool with the descriptor's settings (threads, XNNPACK or GPU delegate, warm-up and run
counts, op profiling, peak memory), optionally pinned with ``taskset``, and parses its output
(:mod:`hwnas.devices.backends.parsers.benchmark_model`). Before each run it waits while the phone's thermal zones
read hotter than ``max_temp_c``. Every attached phone (or the ``serial`` named) is one unit of a pool.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import shlex
import shutil
import time
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
from pydantic import Field

from hwnas.core.errors import ConfigError, DeviceLost, DeviceUnavailable, HwnasError, MeasurementError
from hwnas.core.schema import STRICT, NonNegative, Positive
from hwnas.devices.backends.base import (
    Artifact,
    Backend,
    FileBackend,
    MeasureSettings,
    RoundResult,
    Session,
    common_fingerprint,
    run_tool,
)
from hwnas.devices.backends.litert import LiteRTBackend, to_tflite
from hwnas.devices.backends.parsers import benchmark_model
from hwnas.devices.backends.quantize import TfliteQuantOptions, quantize_tflite

if TYPE_CHECKING:
    import torch

    from hwnas.devices.device import Device

REMOTE_DIR = "/data/local/tmp/hwnas"
_GONE = re.compile(r"device .* not found|device offline|no devices/emulators found|device unauthorized", re.I)


_ADB_FIX = "install adb (apt-get install adb), or set options.adb in the descriptor to its path"


def attached_serials(adb: str = "adb", timeout: float = 10.0) -> list[str]:
    """Serials that ``adb devices`` lists in state ``device`` (attached and authorized)."""
    out = run_tool([adb, "devices"], timeout=timeout, what="adb",
                   fix=f"run 'adb devices' by hand to see why; {_ADB_FIX}").stdout
    return [line.split()[0] for line in out.splitlines()[1:] if line.strip().endswith("\tdevice")]


class Adb:
    """The adb commands hwnas needs, for one phone. A vanished phone raises :class:`DeviceLost`."""

    def __init__(self, serial: str, adb: str = "adb", timeout: float = 600.0) -> None:
        self.serial, self.adb, self.timeout = serial, adb, timeout

    def _run(self, *args: str, timeout: float | None = None) -> str:
        cmd = [self.adb, "-s", self.serial, *args]
        limit = timeout or self.timeout
        try:
            proc = run_tool(cmd, timeout=limit, what="adb", fix=_ADB_FIX)
        except MeasurementError:  # the phone stopped answering: its work moves to the other units
            raise DeviceLost(f"adb did not answer within {limit:.0f} s ({' '.join(args)[:80]}).",
                             f"check the phone {self.serial} (adb devices) and rerun with --resume") from None
        text = proc.stdout + proc.stderr
        if proc.returncode != 0 and _GONE.search(text):
            raise DeviceLost(f"phone {self.serial} is gone: {text.strip()[:200]}",
                             "reattach it (adb devices) and rerun with --resume")
        if proc.returncode != 0:
            raise MeasurementError(f"adb {' '.join(args)[:120]} failed ({proc.returncode}): {text.strip()[-400:]}",
                                   "run the same command by hand to see why")
        return proc.stdout

    def shell(self, command: str, timeout: float | None = None) -> str:
        return self._run("shell", command, timeout=timeout)

    def push(self, local: Path, remote: str) -> None:
        self._run("push", str(local), remote)

    def alive(self) -> bool:
        try:
            return self._run("get-state", timeout=15).strip() == "device"
        except (DeviceUnavailable, MeasurementError):  # gone, hung, or adb itself went away
            return False

    def getprop(self, name: str) -> str:
        return self.shell(f"getprop {name}", timeout=30).strip()

    def remote_size(self, path: str) -> int:
        out = self.shell(f"stat -c %s {shlex.quote(path)} 2>/dev/null || echo -1", timeout=30).strip()
        return int(out) if out.lstrip("-").isdigit() else -1

    def max_temp_c(self) -> float | None:
        """Hottest readable thermal zone in °C (zones report millidegrees), or None."""
        out = self.shell("cat /sys/class/thermal/thermal_zone*/temp 2>/dev/null; true", timeout=30)
        temps = [int(v) for v in out.split() if v.lstrip("-").isdigit()]
        temps = [t / 1000 if abs(t) > 1000 else float(t) for t in temps]
        return max(temps) if temps else None


class _AndroidSession(Session):
    def __init__(self, backend: AndroidBackend, remote_model: str) -> None:
        self.backend, self.remote_model = backend, remote_model

    def time(self, settings: MeasureSettings) -> RoundResult:
        temp = self.backend.wait_until_cool()
        out = self.backend.adb.shell(self.backend.command(self.remote_model, settings),
                                     timeout=settings.max_seconds + 300)
        report = benchmark_model.parse(out)
        info = {**report.info(), "temp_c": temp}
        return RoundResult(report.stats(), None, info=info)

    def run(self, x: np.ndarray) -> np.ndarray:
        raise MeasurementError("benchmark_model times models; it does not return their outputs.",
                               "check outputs on the host LiteRT device (cpu-tflite), which runs the same .tflite")


class AndroidOptions(TfliteQuantOptions):
    """``[options]`` of an Android descriptor. ``taskset`` and ``extra_flags`` reach the phone's shell, so
    they are held to what they can legitimately be (a hex CPU mask; ``--flag=value`` words)."""

    model_config = STRICT
    adb: str = Field("adb", min_length=1)
    benchmark_model: str = ""  # host path of the binary for the phone's ABI
    serials: list[str] = []  # the phones to use (--serial); none: every phone attached
    use_xnnpack: bool = True
    use_gpu: bool = False
    taskset: str = Field("", pattern=r"^(0x)?[0-9a-fA-F]*$")
    op_profiling: bool = True
    report_peak_memory: bool = True
    max_temp_c: NonNegative = 0.0  # wait while the phone is hotter (0: never wait)
    cooldown_max_s: NonNegative = 300.0
    cooldown_poll_s: Positive = 10.0
    extra_flags: list[Annotated[str, Field(pattern=r"^--[A-Za-z0-9_]+(=[^\s;&|`$<>]*)?$")]] = []


class AndroidBackend(FileBackend):
    """Options (:class:`AndroidOptions`): ``adb``, ``benchmark_model`` (host path), ``use_xnnpack``, ``use_gpu``,
    ``taskset`` (mask), ``op_profiling``, ``report_peak_memory``, ``max_temp_c``, ``cooldown_max_s``,
    ``extra_flags``."""

    name = "android"
    runtime = "benchmark_model"
    suffix = ".tflite"
    holds_graph_io = True  # benchmark_model runs the TFLite interpreter: its arena holds graph I/O
    memory_planner = "greedy_by_size"
    precisions = ("fp32", "fp16", "int8")
    quantizer = staticmethod(quantize_tflite)  # on this host, as for cpu-tflite-int8
    quant_format = "tflite"
    verified = False  # exercised against the adb test double only; no phone here
    options_schema = AndroidOptions

    @classmethod
    def _availability(cls, device: Device) -> tuple[bool, str]:
        adb = device.option("adb", "adb")
        if shutil.which(adb) is None:
            return False, "adb not found: install it (apt-get install adb) and attach a phone with USB debugging on"
        try:
            serials = attached_serials(adb)
        except HwnasError as exc:
            return False, f"{exc.message} {exc.hint}"
        wanted = list(device.option("serials", []) or ([device.connection.serial] if device.connection.serial else []))
        missing = [s for s in wanted if s not in serials]
        if missing:
            return False, (f"phone {', '.join(missing)} is not attached (attached: {serials or 'none'}): "
                           "plug it in and authorize it")
        if not serials:
            return False, "no phone attached: connect one with USB debugging enabled and accept the prompt"
        binary = device.option("benchmark_model", "")
        if not binary or not Path(binary).is_file():
            return False, (f"benchmark_model binary not found ({binary or 'not set'}): download the LiteRT "
                           "benchmark_model for the phone's ABI (android_aarch64) and set options.benchmark_model "
                           f"in {device.source}, or pass --benchmark-model PATH")
        return True, "ready"

    # -- units ----------------------------------------------------------------------------------
    @cached_property
    def adb(self) -> Adb:
        """The phone this backend talks to: the descriptor's serial, else the one phone attached."""
        serial = self.device.connection.serial
        if not serial:
            [(serial, _)] = self._one_unit()
        return Adb(serial, self.device.option("adb", "adb"))

    def _one_unit(self) -> list[tuple[str, Backend]]:
        units = self.units()
        if len(units) > 1:
            raise ConfigError(f"device '{self.device.name}' names no serial and {len(units)} phones are attached "
                              f"({', '.join(s for s, _ in units)}): which one?",
                              f"pass --serial SERIAL, or set connection.serial in {self.device.source} "
                              "(adb devices lists them)")
        return units

    def units(self) -> list[tuple[str, Backend]]:
        serial = self.device.connection.serial
        chosen = list(self.device.option("serials", []) or ([serial] if serial else []))
        serials = chosen or attached_serials(self.device.option("adb", "adb"))
        if not serials:
            raise DeviceUnavailable("no phone attached.", "connect one with USB debugging enabled and accept the "
                                    "prompt, then check that 'adb devices' lists it")
        return [(s, AndroidBackend(dataclasses.replace(
            self.device, connection=dataclasses.replace(self.device.connection, serial=s)))) for s in serials]

    def check_alive(self) -> None:
        if not self.adb.alive():
            raise DeviceLost(f"phone {self.device.connection.serial} is gone.", "reattach it and rerun with --resume")

    # -- identity -------------------------------------------------------------------------------
    @cached_property
    def binary_digest(self) -> str:
        return hashlib.sha256(Path(self.device.option("benchmark_model")).read_bytes()).hexdigest()[:16]

    def runtime_version(self) -> str:
        return f"sha256:{self.binary_digest}"

    def delegate(self) -> str:
        if self.device.option("use_gpu", False):
            return "gpu"
        return "xnnpack" if self.device.option("use_xnnpack", True) else "none"

    def fingerprint(self) -> dict:
        """The phone model, SoC, Android build, tool, governor, threads and delegate; not the serial.

        A descriptor that names no phone speaks for every phone attached: they must share one fingerprint.
        """
        self.check_ready()  # the fingerprint is read off the phone and the tool: both must be there
        if not self.device.connection.serial:
            return common_fingerprint(self.units())
        fp = super().fingerprint()
        adb = self.adb
        soc = adb.getprop("ro.soc.model") or adb.getprop("ro.board.platform") or adb.getprop("ro.hardware")
        governor = adb.shell("cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null; true",
                             timeout=30).strip()
        fp.update(host_cpu=soc, delegate=self.delegate(), governor=governor or "unreadable",
                  phone={"manufacturer": adb.getprop("ro.product.manufacturer"),
                         "model": adb.getprop("ro.product.model"),
                         "android": adb.getprop("ro.build.version.release"),
                         "build": adb.getprop("ro.build.fingerprint"), "abi": adb.getprop("ro.product.cpu.abi")})
        fp["descriptor"]["connection"]["serial"] = ""  # units of one model share a fingerprint
        for host_side in ("serials", "benchmark_model", "adb"):  # the tool is identified by its digest
            fp["descriptor"]["options"].pop(host_side, None)
        return fp

    # -- prepare / load -------------------------------------------------------------------------
    cache_name = LiteRTBackend.name  # the same .tflite files as the host LiteRT backend

    def cache_salt(self) -> str:
        return LiteRTBackend.cache_salt(self)

    def _prepare(self, module: torch.nn.Module, input_shape: tuple[int, ...], path: Path) -> None:
        to_tflite(module, input_shape, path)

    @cached_property
    def remote_binary(self) -> str:
        """Push benchmark_model once per phone (kept under its digest, so a changed binary is pushed again)."""
        remote = f"{REMOTE_DIR}/benchmark_model-{self.binary_digest}"
        local = Path(self.device.option("benchmark_model"))
        if self.adb.remote_size(remote) != local.stat().st_size:
            self.adb.shell(f"mkdir -p {REMOTE_DIR}")
            self.adb.push(local, remote)
            self.adb.shell(f"chmod 755 {remote}")
        return remote

    def _load(self, artifact: Artifact) -> Session:
        self.remote_binary  # noqa: B018 - push the tool first
        remote = f"{REMOTE_DIR}/{artifact.path.name}"
        if self.adb.remote_size(remote) != artifact.path.stat().st_size:
            self.adb.push(artifact.path, remote)
        return _AndroidSession(self, remote)

    def load(self, artifact: Artifact) -> Session:
        return self._load(artifact)  # adb errors (DeviceLost) must reach the pool unwrapped

    # -- run ------------------------------------------------------------------------------------
    def command(self, remote_model: str, s: MeasureSettings) -> str:
        opt = self.device.option
        flags = [f"--graph={remote_model}", f"--num_threads={self.device.threads}",
                 f"--warmup_runs={s.warmup_runs}", f"--num_runs={s.min_runs}", f"--min_secs={s.min_seconds:g}",
                 f"--max_secs={s.max_seconds:g}", f"--use_xnnpack={str(self.delegate() == 'xnnpack').lower()}"]
        if self.delegate() == "gpu":
            flags += ["--use_gpu=true", f"--gpu_precision_loss_allowed={str(self.device.precision == 'fp16').lower()}"]
        if opt("op_profiling", True):
            flags.append("--enable_op_profiling=true")
        if opt("report_peak_memory", True):
            flags.append("--report_peak_memory_footprint=true")
        flags += [str(f) for f in opt("extra_flags", [])]
        pin = f"taskset {opt('taskset')} " if opt("taskset", "") else ""
        return pin + " ".join(shlex.quote(p) for p in [self.remote_binary, *flags])

    def wait_until_cool(self) -> float | None:
        """Wait while the phone is hotter than ``max_temp_c`` (throttling), up to ``cooldown_max_s``."""
        limit = float(self.device.option("max_temp_c", 0) or 0)
        temp = self.adb.max_temp_c()
        deadline = time.monotonic() + float(self.device.option("cooldown_max_s", 300))
        while limit and temp is not None and temp > limit and time.monotonic() < deadline:
            time.sleep(float(self.device.option("cooldown_poll_s", 10)))
            temp = self.adb.max_temp_c()
        return temp
