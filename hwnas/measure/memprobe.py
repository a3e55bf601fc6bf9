"""Activation memory as a runtime allocates it, counted in an isolated process.

Neither ONNX Runtime nor LiteRT tells Python how much memory its activations take, so hwnas counts what the
process allocates: exact allocation counts, not resident pages, which the kernel and malloc's caches blur.
Each probe runs in a fresh process, so nothing that ran before skews the figure.

- ``onnxruntime``: the CPU arena and the memory pattern are off, so ORT allocates each tensor when it is
  written and frees it after its last reader, and its kernels allocate their temporaries per call. memray
  tracks every allocation of the process (malloc, aligned and mmap'ed ones, on every thread) over three
  warm runs at batch 1; the figure is the high-water mark of what those runs held. The caller's input was
  allocated before and is not in it. Exact, so a busy host does not change it.
- ``litert`` (XNNPACK): the interpreter plans its activations ahead (TFLite's arena, XNNPACK's workspace)
  when tensors are allocated, together with packed weights. Re-planning for a batch of 2 adds one image's
  activations and nothing else, so that growth of the bytes in use (glibc's ``mallinfo2``) is the figure;
  it includes the graph input and output, which the TFLite arena holds for the whole run.

Run as ``python -m hwnas.measure.memprobe BACKEND MODEL SHAPE THREADS``; prints one JSON object.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from hwnas.core.errors import MeasurementError
from hwnas.core.registry import Registry
from hwnas.core.schema import STRICT, parse_json, validate
from hwnas.devices.backends.base import run_tool


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                 "fsmblks", "uordblks", "fordblks", "keepcost")]


def bytes_in_use():
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if not hasattr(libc, "mallinfo2"):
        raise MeasurementError("measuring activation memory needs glibc ≥ 2.33 (mallinfo2).",
                               "run the memory validation on a Linux host with glibc")
    libc.mallinfo2.restype = _MallInfo2

    def used() -> int:
        m = libc.mallinfo2()
        return int(m.uordblks + m.hblkhd)

    return used


def _probe_onnxruntime(model: str, shape: tuple[int, ...], threads: int) -> dict:
    import memray
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.enable_cpu_mem_arena = False
    so.enable_mem_pattern = False
    so.log_severity_level = 3
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: np.zeros(shape, np.float32)}
    sess.run(None, feed)  # first run: kernels' lazy one-time allocations happen here, outside the figure
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "runs.bin"
        with memray.Tracker(trace, native_traces=False):
            for _ in range(3):
                sess.run(None, feed)
        peak = memray.FileReader(trace).metadata.peak_memory
    return {"activation_bytes": int(peak)}


def _probe_litert(model: str, shape: tuple[int, ...], threads: int) -> dict:
    from hwnas.core.quiet import native_output_captured

    with native_output_captured():
        from ai_edge_litert.interpreter import Interpreter

        used = bytes_in_use()
        interp = Interpreter(model_path=model, num_threads=threads)
        interp.allocate_tensors()
        interp.invoke()
        index = interp.get_input_details()[0]["index"]
        nhwc = (shape[0], *shape[2:], shape[1]) if len(shape) == 4 else shape
        sizes = []
        for batch in (1, 2):
            interp.resize_tensor_input(index, [batch, *nhwc[1:]])
            interp.allocate_tensors()
            interp.invoke()
            sizes.append(used())
    return {"activation_bytes": sizes[1] - sizes[0]}


@dataclass(frozen=True)
class Probe:
    """One runtime's way to measure a model's activation memory, in a fresh process: ``run(model, input shape,
    threads)`` gives the figures, ``method`` says what they count."""

    run: Callable[[str, tuple[int, ...], int], dict]
    method: str


PROBES: Registry[Probe] = Registry("memory probe")
PROBES.register("onnxruntime")(Probe(_probe_onnxruntime, "high-water mark of the bytes allocated over three warm runs "
                                                         "at batch 1, tracked by memray (arena and memory pattern "
                                                         "off), caller's input excluded"))
PROBES.register("litert")(Probe(_probe_litert, "malloc bytes added by re-planning for batch 2 (one image's "
                                               "activations, graph I/O included)"))


def measure_activation_memory(backend: str, model: Path, input_shape: tuple[int, ...], threads: int = 1,
                              timeout: float = 600.0) -> dict:
    """One fresh process measures ``model``: ``{"activation_bytes", "method"}``."""
    if backend not in PROBES:
        raise MeasurementError(f"no activation-memory probe for the {backend} backend.",
                               f"memory is validated on {', '.join(PROBES)}")
    cmd = [sys.executable, "-m", "hwnas.measure.memprobe", backend, str(model), json.dumps(list(input_shape)),
           str(threads)]
    skip = "rerun with --no-memory to validate latency only, or report it with the model file"
    proc = run_tool(cmd, timeout=timeout, what="the memory probe", fix=skip)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise MeasurementError(f"the memory probe failed on {model}:\n{tail}", skip)
    try:
        figures = validate(_ProbeResult, parse_json(lines[-1], "its output", skip, MeasurementError),
                           f"the memory probe's output on {model}", skip, MeasurementError)
    except MeasurementError as exc:
        raise MeasurementError(f"the memory probe printed no figures on {model}: {exc.message}", skip) from None
    return {**figures.model_dump(exclude_none=True), "method": PROBES[backend].method}


class _ProbeResult(BaseModel):
    model_config = STRICT
    activation_bytes: int  # may come out below zero by a few bytes where the allocator's caches shrank


def main(argv: list[str]) -> None:
    backend, model, shape, threads = argv
    print(json.dumps(PROBES[backend].run(model, tuple(json.loads(shape)), int(threads))))


if __name__ == "__main__":
    main(sys.argv[1:])
