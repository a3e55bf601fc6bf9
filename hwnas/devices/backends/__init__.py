"""Runtime backends, one module per runtime behind :class:`hwnas.devices.backends.base.Backend`."""

from __future__ import annotations

from hwnas.core.registry import Registry
from hwnas.devices.backends.android import AndroidBackend
from hwnas.devices.backends.base import Artifact, Backend, MeasureSettings, Session
from hwnas.devices.backends.litert import LiteRTBackend
from hwnas.devices.backends.onnxruntime import OnnxRuntimeBackend
from hwnas.devices.backends.tensorrt import TensorRTBackend
from hwnas.devices.backends.torch_cuda import TorchCudaBackend

BACKENDS: Registry[type[Backend]] = Registry("backend")
for _cls in (OnnxRuntimeBackend, LiteRTBackend, AndroidBackend, TensorRTBackend, TorchCudaBackend):
    BACKENDS.register(_cls.name)(_cls)


def get_backend_class(name: str) -> type[Backend]:
    return BACKENDS.get(name)


__all__ = ["BACKENDS", "Artifact", "Backend", "MeasureSettings", "Session", "get_backend_class"]
