from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hwnas._lazy import available
from hwnas.backends.base import Backend

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
HAS_TFLITE = available("litert_torch") and available("ai_edge_litert")
_REAL_TIME_SESSION = Backend.time_session  # the timing loop before any test patches it
needs_tflite = pytest.mark.skipif(not HAS_TFLITE, reason="optional package missing: litert-torch / ai-edge-litert")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Converted artifacts go to one cache per test session, never the user's."""
    monkeypatch.setenv("HWNAS_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "artifact-cache"))


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 300):
    """Run the real ``hwnas`` command line in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "hwnas", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd or ROOT, timeout=timeout)


def crash_timing_after(monkeypatch, runs: int) -> None:
    """Let ``runs`` timed measurements through, then raise KeyboardInterrupt (like Ctrl-C mid-run)."""
    real = _REAL_TIME_SESSION
    calls = {"n": 0}

    def crashing(session, settings):
        calls["n"] += 1
        if calls["n"] > runs:
            raise KeyboardInterrupt
        return real(session, settings)

    monkeypatch.setattr(Backend, "time_session", staticmethod(crashing))


def record_timing(monkeypatch) -> list:
    """Time for real, and list every session timed (what a resumed run measures again)."""
    real = _REAL_TIME_SESSION
    timed: list = []
    monkeypatch.setattr(Backend, "time_session", staticmethod(lambda s, st: timed.append(s) or real(s, st)))
    return timed
