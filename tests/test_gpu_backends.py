"""GPU backends. Their measuring runs need an NVIDIA GPU; on this host only their checks can run."""

import shutil

import numpy as np
import pytest
import torch

from hwnas.backends.base import MeasureSettings
from hwnas.devices import get_device
from hwnas.profiling import input_shape
from hwnas.spaces import OpKey, get_space

KEY = OpKey.parse("mbconv-i16x16x40-o16x16x40-e6-k5-s1-skip1")
SPACE = get_space("proxyless", 32)


def test_cuda_device_says_why_it_is_not_ready_on_a_cpu_build():
    if torch.cuda.is_available():
        assert get_device("cuda").availability() == (True, "ready")
    else:
        ok, why = get_device("cuda").availability()
        assert not ok and "no CUDA GPU" in why


def test_gpu_backends_are_marked_unverified():
    from hwnas.backends import BACKENDS

    assert not BACKENDS.get("tensorrt").verified and not BACKENDS.get("torch_cuda").verified


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU with CUDA (none on this host)")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_times_a_block_with_events_and_reports_peak_memory(precision):
    import dataclasses

    dev = dataclasses.replace(get_device("cuda"), precision=precision)
    backend = dev.backend_instance()
    module = SPACE.build_op(KEY)
    art = backend.prepare(module, input_shape(KEY), tag="test")
    result = backend.load(art).time(MeasureSettings(warmup_runs=5, min_runs=30, min_seconds=0.1))
    assert result.stats.n >= 30 and result.stats.median > 0
    assert result.info["memory"]["cuda_peak_activation_bytes"] > 0
    x = np.random.default_rng(0).standard_normal(input_shape(KEY), dtype=np.float32)
    with torch.no_grad():
        ref = module(torch.from_numpy(x)).numpy()
    tol = 1e-2 if precision == "fp16" else 1e-4
    np.testing.assert_allclose(backend.run(art, x), ref, rtol=tol, atol=tol)


@pytest.mark.skipif(shutil.which("trtexec") is None, reason="needs TensorRT's trtexec and an NVIDIA GPU (none here)")
def test_tensorrt_builds_and_times_an_engine():
    backend = get_device("gpu").backend_instance()
    art = backend.prepare(SPACE.build_op(KEY), input_shape(KEY), tag="test")
    stats = backend.measure(art, MeasureSettings(warmup_runs=5, min_runs=50, min_seconds=0.5))
    assert stats.n >= 50 and stats.median > 0
