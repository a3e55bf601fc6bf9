from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hwnas.core.lazy import available
from hwnas.devices.backends.base import Backend

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
HAS_TFLITE = available("litert_torch") and available("ai_edge_litert") and available("ai_edge_quantizer")
_REAL_TIME_SESSION = Backend.time_session  # the timing loop before any test patches it
TFLITE_MISSING = "optional package missing: litert-torch / ai-edge-litert / ai-edge-quantizer (the tflite extra)"
needs_tflite = pytest.mark.skipif(not HAS_TFLITE, reason=TFLITE_MISSING)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Converted artifacts go to one cache per test session, never the user's."""
    monkeypatch.setenv("HWNAS_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "artifact-cache"))


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 300):
    """Run the real ``hwnas`` command line in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "hwnas", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd or ROOT, timeout=timeout)


def invoke(capsys, args) -> tuple[int, str]:
    """Run the real command line in this process: (exit code, everything it printed)."""
    from hwnas.cli import main

    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out + out.err


def cli(capsys, *args: str) -> tuple[int, str]:
    """:func:`invoke`, asserting no traceback; the output with whitespace runs joined (rich wraps long lines)."""
    code, said = invoke(capsys, args)
    assert "Traceback" not in said, said
    return code, " ".join(said.split())


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


def stamp_for_this_host(table: Path, out: Path) -> Path:
    """A copy of a shipped table whose fingerprint says it was measured here, on this host's runtime.

    For tests of what is done *with* a table (pricing, gating, searching), which the fingerprint rule would
    otherwise refuse on any host but the one the shipped tables were measured on. Never for figures.
    """
    import json

    from hwnas.devices.registry import get_device
    from hwnas.tables.table import MATCH_FIELDS

    data = json.loads(Path(table).read_text())
    fp = get_device(data["device"]["device"]).backend_instance().fingerprint()
    data["device"].update({k: fp[k] for k in MATCH_FIELDS if k in fp})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / Path(table).name).write_text(json.dumps(data))
    return out / Path(table).name


@pytest.fixture(scope="session")
def host_tables(tmp_path_factory) -> Path:
    """The shipped tables as if measured on this host (see :func:`stamp_for_this_host`)."""
    out = tmp_path_factory.mktemp("host-tables")
    for table in sorted((ROOT / "latency_tables").glob("*.json")):
        if table.name.endswith(".validation.json") or "-tflite-" in table.name and not HAS_TFLITE:
            continue
        stamp_for_this_host(table, out)
    return out
