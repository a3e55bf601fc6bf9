"""Activation memory as a runtime allocates it, counted by the C allocator in an isolated process.

Neither ONNX Runtime nor LiteRT tells Python how much memory its activations take, so hwnas asks the
allocator: glibc's ``mallinfo2`` gives the bytes in use (heap and mmap) — exact allocation counts, not
resident pages, which the kernel and malloc's caches blur. Each probe runs in a fresh process, so nothing
that ran before skews the figure.

- ``onnxruntime``: the CPU arena and the memory pattern are off, so ORT mallocs each tensor when it is
  written and frees it after its last reader. A thread samples the bytes in use while the model runs (20
  times and 1 s at least); the figure is the peak above the level before. The sampler needs a core of its
  own: on a busy host it misses peaks and the figure comes out low. The input is the caller's buffer (ORT reads it in
  place) and is not in the figure. A peak lasts one op; on small inputs ops are too short for the sampler
  to see, so the model is re-batched (its batch dimension set to N, N x pixels ≥ 112², every buffer N times
  larger and every op N times longer, the plan otherwise the same) and the figure divided by N.
- ``litert`` (XNNPACK): the interpreter plans its activations ahead (TFLite's arena, XNNPACK's workspace)
  when tensors are allocated, together with packed weights. Re-planning for a batch of 2 adds one image's
  activations and nothing else, so that growth is the figure; it includes the graph input and output, which
  the TFLite arena holds for the whole run.

Run as ``python -m hwnas.measure.memprobe BACKEND MODEL SHAPE THREADS``; prints one JSON object.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from hwnas.core.errors import MeasurementError
from hwnas.core.registry import Registry
from hwnas.core.schema import STRICT, PositiveInt, parse_json, validate
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


def _rebatched(model: str, batch: int) -> bytes:
    """The ONNX model with its batch dimension (input and output) set to ``batch``."""
    import onnx

    m = onnx.load(model)
    for value in (*m.graph.input, *m.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = batch
    del m.graph.value_info[:]
    return m.SerializeToString()


def _probe_onnxruntime(model: str, shape: tuple[int, ...], threads: int) -> dict:
    import onnxruntime as ort

    used = bytes_in_use()
    pixels = int(np.prod(shape[2:])) if len(shape) == 4 else 224 * 224
    batch = max(1, -(-112 * 112 // pixels)) if shape[0] == 1 else 1
    if batch > 1:
        model = _rebatched(model, batch)
        shape = (batch, *shape[1:])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.enable_cpu_mem_arena = False
    so.enable_mem_pattern = False
    so.log_severity_level = 3
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: np.zeros(shape, np.float32)}
    sess.run(None, feed)  # first run: kernels' lazy one-time allocations happen here, outside the figure
    base = used()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], used())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start, runs = time.perf_counter(), 0
    while runs < 20 or time.perf_counter() - start < 1.0:  # many chances to catch each op's peak
        sess.run(None, feed)
        runs += 1
    done.set()
    sampler.join()
    return {"activation_bytes": (peak[0] - base) // batch, "batch": batch}


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
PROBES.register("onnxruntime")(Probe(_probe_onnxruntime, "peak malloc bytes in use while running (arena and memory "
                                                         "pattern off), caller's input excluded"))
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
    batch: PositiveInt | None = None


def main(argv: list[str]) -> None:
    backend, model, shape, threads = argv
    print(json.dumps(PROBES[backend].run(model, tuple(json.loads(shape)), int(threads))))


if __name__ == "__main__":
    main(sys.argv[1:])
