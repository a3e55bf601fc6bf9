"""hwnas: hardware-aware neural architecture search, from measured per-device tables to verified deployment.

Importing this package is cheap: runtimes (onnxruntime, LiteRT, TensorRT) load only when used.
"""

__version__ = "0.1.0"
