"""Faults kept as tests: the real command killed (SIGKILL) or interrupted (SIGINT, Ctrl-C) mid-run, then ``--resume``.

For each resumable command (``profile``, ``table validate``, ``search``, ``pipeline``) and each signal:
- SIGINT ends the command with exit 130 and the hint to rerun it with ``--resume``; SIGKILL ends it at once;
- the resumed command finishes (exit 0), redoes nothing that had finished (every checkpoint entry, record
  or step written before the signal is still there, byte for byte, and is reported reused), and loses
  nothing (the final output has every entry).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
SIGNALS = [pytest.param(signal.SIGINT, id="sigint"), pytest.param(signal.SIGKILL, id="sigkill")]


def _snapshot(folder: Path, pattern: str) -> dict[str, bytes]:
    """The finished entries of a checkpoint folder (``*.json``, written last), by name."""
    return {p.name: p.read_bytes() for p in folder.glob(pattern) if p.name != "state.json" and p.is_file()}


@pytest.fixture(autouse=True)
def _env(tmp_path_factory, monkeypatch):
    """One artifact cache for these tests' subprocesses (conversions are not what they test), wide output."""
    monkeypatch.setenv("HWNAS_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "fault-cache"))
    monkeypatch.setenv("COLUMNS", "200")


def interrupt(args: list[str], ready, sig: int, tmp_path: Path, timeout: float = 240,
              finished=lambda: False) -> subprocess.CompletedProcess | None:
    """Run ``hwnas args`` until ``ready()`` is true, then send ``sig``; the finished process. None when
    ``finished()`` was already true as the signal went out: the command had done all its work (a test
    process starved on a loaded host saw ``ready`` too late), so the signal interrupted nothing."""
    env = dict(os.environ)
    # as a command typed at a terminal gets it: a test run started in the background of a non-interactive shell
    # inherits SIGINT ignored, and Python keeps an inherited SIG_IGN (so Ctrl-C would do nothing)
    proc = subprocess.Popen([sys.executable, "-m", "hwnas", *args], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.05)
    assert proc.poll() is None, f"the command ended before it could be interrupted: {proc.communicate()}"
    proc.send_signal(sig)
    too_late = finished()
    out, err = proc.communicate(timeout=120)
    if too_late and proc.returncode == 0:
        return None
    if sig == signal.SIGINT:
        assert proc.returncode == 130, err
        assert "--resume" in err and "Traceback" not in err, err
    else:
        assert proc.returncode == -signal.SIGKILL
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def resume(args: list[str], tmp_path: Path, codes: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
    """Rerun with ``--resume``: it must finish (``codes``: a pipeline may also end judged, exit 1)."""
    done = subprocess.run([sys.executable, "-m", "hwnas", *args, "--resume"], cwd=tmp_path, text=True,
                          capture_output=True, timeout=600)
    assert done.returncode in codes, done.stderr
    assert "Traceback" not in done.stderr
    return done


FAST = ["--rounds", "2", "--min-runs", "5", "--min-seconds", "0.1", "--warmup", "1", "--spread-limit", "100", "-q"]


@pytest.mark.parametrize("sig", SIGNALS)
def test_profile(sig, tmp_path):
    from hwnas.spaces import get_space
    from hwnas.tables.table import Table

    out = tmp_path / "t.json"
    args = ["profile", "--device", "cpu", "--space", "proxyless", "--resolution", "32", "--out", str(out), *FAST]
    partial = tmp_path / "t.json.partial"
    interrupt(args, lambda: len(_snapshot(partial, "*.json")) >= 12, sig, tmp_path)
    before = _snapshot(partial, "*.json")
    assert before and not out.exists()
    again = resume(args, tmp_path)
    assert f"{len(before)} reused" in " ".join(again.stdout.split())
    keys = {str(k) for k in get_space("proxyless", 32).unique_keys()}
    assert set(Table.load(out).entries) == keys


@pytest.mark.parametrize("sig", SIGNALS)
def test_table_validate(sig, tmp_path, host_tables):
    report = tmp_path / "v.json"
    args = ["table", "validate", "--device", "cpu", "--table", str(host_tables / "cpu-proxyless-32.json"),
            "--samples", "5", "--rounds", "2", "--min-seconds", "0.05", "--fit-fraction", "0.5", "--no-memory",
            "--out", str(report), "-q"]
    partial = tmp_path / "v.json.partial"
    interrupt(args, lambda: len(_snapshot(partial, "*.json")) >= 3, sig, tmp_path)
    before = _snapshot(partial, "*.json")
    assert before and not report.exists()
    resume(args, tmp_path)
    after = _snapshot(partial, "*.json") if partial.exists() else {}
    assert all(after.get(k, v) == v for k, v in before.items())  # finished rounds were not measured again
    assert len(json.loads(report.read_text())["nets"]) == 6  # the reference and the 5 samples, none lost


@pytest.mark.parametrize("sig", SIGNALS)
def test_search(sig, tmp_path, host_tables):
    run = tmp_path / "run"
    args = ["search", "--table", str(host_tables / "cpu-proxyless-32.json"), "--strategy", "evolution",
            "--latency-ms", "3", "-n", "5", "--epochs", "1", "--limit", "200", "--out", str(run), "-q"]
    records = run / "candidates.jsonl"

    def lines() -> list[str]:
        return records.read_text().splitlines(keepends=True) if records.exists() else []

    interrupt(args, lambda: len([ln for ln in lines() if ln.endswith("\n")]) >= 2, sig, tmp_path)
    before = [ln for ln in lines() if ln.endswith("\n")]
    again = resume(args, tmp_path)
    after = lines()
    assert after[:len(before)] == before  # every finished record kept, in order
    reused = re.search(r"(\d+) reused", again.stdout)
    assert reused and int(reused.group(1)) >= len(before), again.stdout  # none evaluated again
    assert (run / "best.json").exists() and (run / "weights.pt").exists()


@pytest.mark.parametrize("sig", SIGNALS)
def test_pipeline(sig, tmp_path, host_tables):
    config = tmp_path / "p.toml"
    config.write_text(f'latency_ms = 10\nevaluations = 3\nepochs = 1\ncalibration_samples = 0\nlimit = 300\n'
                      f'reference = false\ntables = "{host_tables}"\n')
    out = tmp_path / "p"
    args = ["pipeline", "--config", str(config), "--out", str(out), "-q"]

    def done() -> list[str]:
        try:
            return list(json.loads((out / "pipeline.json").read_text())["done"])
        except (OSError, ValueError, KeyError):
            return []

    # no calibration (what is tested is the resume, not the fit): the table and that step finish at once
    for _ in range(3):
        shutil.rmtree(out, ignore_errors=True)
        if interrupt(args, lambda: len(done()) >= 2, sig, tmp_path, timeout=400,
                     finished=lambda: "report" in done()):
            break
    else:
        pytest.fail("the signal came after the pipeline had finished, three times: the host is too loaded")
    before = done()
    assert before[:2] == ["table", "calibrate"]
    again = resume(args, tmp_path, codes=(0, 1))  # 1: finished, the answer judged (not what is tested here)
    said = " ".join(again.stderr.split())
    assert all(f"{step}: done earlier" in said for step in before)
    assert done() == ["table", "calibrate", "search", "export", "verify", "reference", "report"]  # reference skipped
