"""GPU backends. Their measuring runs need an NVIDIA GPU; on this host only their checks can run."""

import shutil

import numpy as np
import pytest
import torch

from hwnas.devices.backends.base import MeasureSettings
from hwnas.devices.registry import get_device
from hwnas.spaces import OpKey, get_space
from hwnas.spaces.keys import input_shape

KEY = OpKey.parse("mbconv-i16x16x40-o16x16x40-e6-k5-s1-skip1")
SPACE = get_space("proxyless", 32)


def test_cuda_device_says_why_it_is_not_ready_on_a_cpu_build():
    if torch.cuda.is_available():
        assert get_device("cuda").availability() == (True, "ready")
    else:
        ok, why = get_device("cuda").availability()
        assert not ok and "no CUDA GPU" in why


def test_devices_listing_marks_the_unverified_backends(capsys):
    import json

    from hwnas.cli import main
    from hwnas.devices.backends import BACKENDS

    main(["devices", "--json"])
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    for name, row in rows.items():
        assert row["verified"] is BACKENDS.get(row["backend"]).verified, name
    assert rows["cpu"]["verified"] and not rows["gpu"]["verified"] and not rows["cuda"]["verified"]
    main(["devices"])
    assert capsys.readouterr().out.count("(unverified)") == sum(not r["verified"] for r in rows.values()) >= 2


class _FakeCuda:
    """What ``_CudaSession.time`` calls of ``torch.cuda``, recording the order of launches and waits."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.clock = 0.0
        fake = self

        class Event:
            def __init__(self, enable_timing: bool = False) -> None:
                self.at: float | None = None

            def record(self) -> None:
                fake.log.append("record")
                self.at = fake.clock

            def elapsed_time(self, end) -> float:
                return end.at - self.at

        self.Event = Event

    def synchronize(self, dev=None) -> None:
        self.log.append("sync")


def test_cuda_timing_waits_for_every_run_from_the_first(monkeypatch):
    """Every sample is one run from an idle GPU: never a queued run pooled with waited-for ones."""
    from types import SimpleNamespace

    from hwnas.devices.backends.torch_cuda import _CudaSession

    cuda = _FakeCuda()
    session = object.__new__(_CudaSession)
    session.torch, session.dev = SimpleNamespace(cuda=cuda), "cuda:0"

    def invoke() -> None:
        cuda.log.append("run")
        cuda.clock += 2.0

    session.invoke = invoke
    session.peak_memory = lambda: {"cuda_peak_activation_bytes": 1}
    result = session.time(MeasureSettings(warmup_runs=3, min_runs=40, min_seconds=0.0))
    timed = cuda.log[cuda.log.index("sync") + 1:]  # after the warm-up and its wait
    assert cuda.log[:4] == ["run", "run", "run", "sync"]
    assert timed == ["record", "run", "record", "sync"] * 40  # a wait after each run, the 1st to the 40th
    assert len(result.samples) == 40 and set(result.samples) == {2.0}


def test_trtexec_that_hangs_or_is_missing_is_a_clear_error(monkeypatch, tmp_path):
    import dataclasses
    import subprocess

    from hwnas.core.errors import DeviceUnavailable, MeasurementError

    dev = get_device("gpu")
    backend = dataclasses.replace(dev, options={**dev.options, "trtexec": str(tmp_path / "trtexec")}
                                  ).backend_instance()
    with pytest.raises(DeviceUnavailable, match="trtexec not found"):
        backend.trtexec_run("--help")

    def hang(cmd, **kw):
        raise subprocess.TimeoutExpired(cmd, kw["timeout"])

    monkeypatch.setattr(subprocess, "run", hang)
    with pytest.raises(MeasurementError, match="did not finish within 3600 s") as info:
        backend.trtexec_run("--loadEngine=x.engine")
    assert "nvidia-smi" in info.value.hint
    from hwnas.devices.backends.tensorrt import gpu_name

    assert gpu_name(0) == "unknown NVIDIA GPU"  # a fingerprint field, never an exception


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
