"""Runtime backends, one module per runtime behind :class:`hwnas.backends.base.Backend`."""

from __future__ import annotations

from hwnas.backends.android import AndroidBackend
from hwnas.backends.base import Artifact, Backend, MeasureSettings, Session
from hwnas.backends.litert import LiteRTBackend
from hwnas.backends.onnxruntime import OnnxRuntimeBackend
from hwnas.backends.tensorrt import TensorRTBackend
from hwnas.backends.torch_cuda import TorchCudaBackend
from hwnas.registry import Registry

BACKENDS: Registry[type[Backend]] = Registry("backend")
for _cls in (OnnxRuntimeBackend, LiteRTBackend, AndroidBackend, TensorRTBackend, TorchCudaBackend):
    BACKENDS.register(_cls.name)(_cls)


def get_backend_class(name: str) -> type[Backend]:
    return BACKENDS.get(name)


__all__ = ["BACKENDS", "Artifact", "Backend", "MeasureSettings", "Session", "get_backend_class"]
