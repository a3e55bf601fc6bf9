"""NVIDIA GPUs through PyTorch CUDA (eager, optionally CUDA graphs), timed with CUDA events.

Each timed run is bracketed by a pair of CUDA events on the current stream, and the host synchronizes
after every run, before the next starts (ProxylessNAS's GPU timing omitted that and measured launch time):
every sample is one run from an idle GPU, one regime for the whole statistic. fp16 runs the
module and input in half precision. Peak memory: ``torch.cuda.max_memory_allocated`` over one run,
above what was allocated before it. Options: ``cuda_graphs`` (capture the forward pass once, replay).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel

from hwnas.core.schema import STRICT
from hwnas.devices.backends.base import Artifact, Backend, MeasureSettings, RoundResult, Session

if TYPE_CHECKING:
    import torch

    from hwnas.devices.device import Device


class _CudaSession(Session):
    def __init__(self, module: torch.nn.Module, input_shape: tuple[int, ...], device: Device) -> None:
        import torch

        self.torch = torch
        self.dev = torch.device("cuda", device.connection.index)
        self.dtype = torch.float16 if device.precision == "fp16" else torch.float32
        self.module = module.to(self.dev, self.dtype).eval()
        self.x = torch.randn(input_shape, device=self.dev, dtype=self.dtype)
        self.graph = None
        if device.option("cuda_graphs", False):
            self._capture()

    def _capture(self) -> None:
        torch = self.torch
        stream = torch.cuda.Stream(self.dev)
        stream.wait_stream(torch.cuda.current_stream(self.dev))
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(3):
                self.module(self.x)
        torch.cuda.current_stream(self.dev).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.inference_mode():
            self.out = self.module(self.x)

    def invoke(self) -> None:
        with self.torch.inference_mode():
            if self.graph is not None:
                self.graph.replay()
            else:
                self.module(self.x)

    def time(self, settings: MeasureSettings) -> RoundResult:
        """One regime for every sample: each run starts on an idle GPU and is waited for before the next.

        A run is bracketed by CUDA events and the host synchronizes after it, from the first timed run on,
        so a sample is one request's latency (kernel-launch gaps included), as a host runtime's call is.
        Letting runs queue up behind each other would time the GPU's throughput instead, a different and
        smaller figure; mixing the two in one statistic (as an earlier loop did) gives neither.
        """
        torch = self.torch
        for _ in range(settings.warmup_runs):
            self.invoke()
        torch.cuda.synchronize(self.dev)
        samples: list[float] = []
        start = time.perf_counter()
        while True:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            self.invoke()
            end.record()
            torch.cuda.synchronize(self.dev)  # the run is over: the next starts on an idle GPU
            samples.append(begin.elapsed_time(end))
            elapsed = time.perf_counter() - start
            if (len(samples) >= settings.min_runs and elapsed >= settings.min_seconds) or \
                    len(samples) >= settings.max_runs or elapsed >= settings.max_seconds:
                break
        base = RoundResult.from_samples(np.array(samples))
        return RoundResult(base.stats, base.samples, "", {"memory": self.peak_memory()})

    def peak_memory(self) -> dict[str, int]:
        torch = self.torch
        torch.cuda.synchronize(self.dev)
        before = torch.cuda.memory_allocated(self.dev)
        torch.cuda.reset_peak_memory_stats(self.dev)
        self.invoke()
        torch.cuda.synchronize(self.dev)
        return {"cuda_peak_activation_bytes": int(torch.cuda.max_memory_allocated(self.dev) - before),
                "cuda_allocated_bytes": int(before)}

    def run(self, x: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            y = self.module(torch.from_numpy(np.asarray(x, dtype=np.float32)).to(self.dev, self.dtype))
        return y.float().cpu().numpy()


class TorchCudaOptions(BaseModel):
    model_config = STRICT
    cuda_graphs: bool = False  # capture the forward pass once, replay it


class TorchCudaBackend(Backend):
    name = "torch_cuda"
    runtime = "torch"
    precisions = ("fp32", "fp16")
    verified = False  # written here without a GPU; see README for what has run on one
    options_schema = TorchCudaOptions

    def __init__(self, device: Device) -> None:
        super().__init__(device)
        self._modules: dict[Path, torch.nn.Module] = {}

    @classmethod
    def _availability(cls, device: Device) -> tuple[bool, str]:
        import torch

        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
            return False, (f"no CUDA GPU visible to torch {torch.__version__} ({build}): run on a machine with an "
                           "NVIDIA GPU")
        if device.connection.index >= torch.cuda.device_count():
            return False, f"GPU index {device.connection.index} does not exist ({torch.cuda.device_count()} visible)"
        return True, "ready"

    def runtime_version(self) -> str:
        import torch

        return f"{torch.__version__} (CUDA {torch.version.cuda})"

    def fingerprint(self) -> dict:
        import torch

        fp = super().fingerprint()
        idx = self.device.connection.index
        fp["host_cpu"] = torch.cuda.get_device_name(idx) if torch.cuda.is_available() else "no GPU"
        fp["cuda_graphs"] = bool(self.device.option("cuda_graphs", False))
        return fp

    def prepare(self, module: torch.nn.Module, input_shape: tuple[int, ...], tag: str,
                calibration: np.ndarray | None = None) -> Artifact:
        """No file to convert: the module itself is the artifact (kept in memory, a marker on disk)."""
        import torch

        with torch.no_grad():
            out = tuple(module.eval()(torch.zeros(input_shape)).shape)
        path = Path(f"torch-cuda://{tag}")
        self._modules[path] = module
        return Artifact(path=path, input_shape=tuple(input_shape), output_shape=out)

    def _load(self, artifact: Artifact) -> Session:
        return _CudaSession(self._modules[artifact.path], artifact.input_shape, self.device)

    def memory_report(self, artifact: Artifact) -> dict:
        return self.load(artifact).peak_memory()
