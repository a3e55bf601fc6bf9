import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, crash_timing_after, needs_tflite, record_timing
from hwnas.core.errors import OutputError, TableError
from hwnas.devices.backends.base import Backend, MeasureSettings
from hwnas.devices.registry import get_device
from hwnas.measure.checkpoint import Checkpoint
from hwnas.measure.profiler import OVERHEAD, ProfileOptions, profile
from hwnas.spaces import get_space
from hwnas.tables.table import Table

# A high spread limit: with 3 runs a round, the re-measure step would fire at random and change the counts.
TINY = ProfileOptions(settings=MeasureSettings(warmup_runs=1, min_runs=3, min_seconds=0.0), rounds=2,
                      spread_limit=100.0)


def test_profile_writes_a_complete_table(tmp_path):
    space = get_space("proxyless", 32)
    res = profile(get_device("cpu"), space, tmp_path / "t.json", options=TINY, progress=False)
    table = Table.load(tmp_path / "t.json")
    assert set(table.entries) == {str(k) for k in space.unique_keys()}
    assert res.measured == (len(space.measurable_keys()) + 1) * TINY.rounds and res.reused == 0
    for key in space.measurable_keys():
        e = table.entries[str(key)]
        assert e.latency.n >= TINY.settings.min_runs and e.latency.median > 0
        assert e.memory["weight_bytes"] >= 0 and e.memory["input_bytes"] > 0 and e.memory["artifact_bytes"] > 0
        assert "runtime_parameter_bytes" in e.memory
    assert table.overhead.median > 0
    fp = table.fingerprint
    assert fp["runtime"] == "onnxruntime" and fp["runtime_version"] and fp["host_cpu"] and fp["threads"] == 1
    assert table.settings["rounds"] == 2 and table.settings["min_runs"] == 3
    assert not (tmp_path / "t.json.partial").exists()


def test_existing_output_needs_force(tmp_path):
    space = get_space("proxyless", 32)
    (tmp_path / "t.json").write_text("{}")
    with pytest.raises(OutputError, match="exists"):
        profile(get_device("cpu"), space, tmp_path / "t.json", options=TINY, progress=False)


def test_resume_measures_only_what_is_missing(tmp_path, monkeypatch):
    """Crash after some measurements, then resume: the done ones are never timed again."""
    space = get_space("proxyless", 32)
    out = tmp_path / "t.json"
    crash_timing_after(monkeypatch, 40)
    with pytest.raises(KeyboardInterrupt):
        profile(get_device("cpu"), space, out, options=TINY, progress=False)
    done_before = set(Checkpoint(tmp_path / "t.json.partial").done())
    assert len(done_before) == 40 and not out.exists()

    with pytest.raises(OutputError, match="--resume"):
        profile(get_device("cpu"), space, out, options=TINY, progress=False)

    timed = record_timing(monkeypatch)
    res = profile(get_device("cpu"), space, out, options=TINY, resume=True, progress=False)
    total = (len(space.measurable_keys()) + 1) * TINY.rounds
    assert res.reused == 40 and res.measured == total - 40 == len(timed)
    assert set(Table.load(out).entries) == {str(k) for k in space.unique_keys()}


def test_resume_refuses_other_settings(tmp_path, monkeypatch):
    space = get_space("proxyless", 32)
    out = tmp_path / "t.json"
    monkeypatch.setattr(Backend, "time_session", staticmethod(lambda s, st: (_ for _ in ()).throw(KeyboardInterrupt)))
    with pytest.raises(KeyboardInterrupt):
        profile(get_device("cpu"), space, out, options=TINY, progress=False)
    other = ProfileOptions(settings=TINY.settings, rounds=3, spread_limit=100.0)
    with pytest.raises(TableError, match="settings"):
        profile(get_device("cpu"), space, out, options=other, resume=True, progress=False)


def test_wide_entries_are_remeasured_and_flagged(tmp_path, monkeypatch):
    space = get_space("proxyless", 32)
    rng = np.random.default_rng(0)
    # every timing is heavy-tailed: p90/median far above the limit, both times
    monkeypatch.setattr(Backend, "time_session", staticmethod(lambda s, st: rng.pareto(1.0, 20) + 0.1))
    options = ProfileOptions(settings=TINY.settings, rounds=2, spread_limit=1.3)
    table = profile(get_device("cpu"), space, tmp_path / "t.json", options=options, progress=False).table
    flagged = [e for e in table.entries.values() if "unstable" in e.flags]
    assert flagged and all("remeasured" in e.flags for e in flagged)


@needs_tflite
@pytest.mark.slow
def test_profile_litert_small_space(tmp_path):
    space = get_space("proxyless", 32)
    res = profile(get_device("cpu-tflite"), space, tmp_path / "t.json", options=TINY, progress=False)
    assert res.table.fingerprint["runtime"] == "ai-edge-litert"
    assert res.table.fingerprint["delegate"] == "xnnpack"
    assert all(e.latency.median > 0 for k, e in res.table.entries.items() if e.latency)


@pytest.mark.slow
@pytest.mark.parametrize("device, fmt", [("cpu-int8", "qdq"), pytest.param("cpu-tflite-int8", "tflite",
                                                                          marks=needs_tflite)])
def test_int8_devices_profile_into_tables_of_quantized_blocks(tmp_path, device, fmt):
    from hwnas.spaces import OpKey
    from hwnas.spaces.keys import input_shape

    space = get_space("proxyless", 32, width=0.35)
    res = profile(get_device(device), space, tmp_path / "t.json", options=TINY, progress=False)
    table = Table.load(tmp_path / "t.json")
    assert table.fingerprint["precision"] == "int8" and table.fingerprint["quantization"]["format"] == fmt
    assert set(table.entries) == {str(k) for k in space.unique_keys()} and res.reused == 0
    for key in space.measurable_keys():
        e = table.entries[str(key)]
        assert e.latency.median > 0
        assert e.memory["input_bytes"] == int(np.prod(input_shape(OpKey.parse(str(key)))))  # one byte a value


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_loses_nothing(tmp_path):
    """The real command, killed with SIGKILL mid-measurement, resumes without re-measuring finished work."""
    out = tmp_path / "t.json"
    args = [sys.executable, "-m", "hwnas", "profile", "--device", "cpu", "--space", "proxyless", "--resolution", "32",
            "--out", str(out), "--rounds", "2", "--min-runs", "5", "--min-seconds", "0.2", "--warmup", "2",
            "--spread-limit", "100", "-q"]
    env = {**os.environ, "HWNAS_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    partial = tmp_path / "t.json.partial"
    deadline = time.time() + 120
    while time.time() < deadline and len([p for p in partial.glob("*.json") if p.name != "state.json"]) < 20:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # a measurement is done when its .json exists (written after its .npy): a kill between the two leaves
    # an .npy that the resumed run measures again
    done = {p.name for p in partial.glob("*.json") if p.name != "state.json"}
    assert 20 <= len(done) < 2 * 72 and not out.exists()

    rerun = subprocess.run([*args, "--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{2 * 72 - len(done)} measurements taken, {len(done)} reused" in " ".join(rerun.stdout.split())
    table = Table.load(out)
    space = get_space("proxyless", 32)
    assert set(table.entries) == {str(k) for k in space.unique_keys()}
    assert OVERHEAD not in table.entries and table.overhead.n >= 5


def test_rising_latency_is_detected_as_throttling():
    from hwnas.devices.backends.base import RoundResult
    from hwnas.measure.profiler import rising

    def rounds(*medians):
        return [RoundResult.from_samples(np.full(5, m)) for m in medians]

    assert rising(rounds(1.0, 1.06, 1.15))
    assert not rising(rounds(1.0, 1.15, 1.10))  # not monotone: noise
    assert not rising(rounds(1.0, 1.02, 1.05))  # too small
    assert not rising(rounds(1.0, 1.5))  # two rounds cannot show a trend


# -- a checkpoint damaged between the kill and the resume ------------------------------------------------------
def _damage(folder, names):
    """Four ways an entry can be unreadable: cut short, garbage samples, a folder, a wrong type."""
    (folder / f"{names[0]}.json").write_text('{"stats": {"median": 0.1')
    npy = next(n for n in names[1:] if (folder / f"{n}.npy").exists())
    (folder / f"{npy}.npy").write_bytes(b"\x93NUMPY garbage")
    rest = [n for n in names[1:] if n != npy]
    (folder / f"{rest[0]}.json").unlink()
    (folder / f"{rest[0]}.json").mkdir()
    meta = json.loads((folder / f"{rest[1]}.json").read_text())
    meta["stats"]["median"] = "fast"
    (folder / f"{rest[1]}.json").write_text(json.dumps(meta))
    return {names[0], npy, rest[0], rest[1]}


def test_resume_measures_again_only_the_unreadable_entries(tmp_path, monkeypatch):
    space = get_space("proxyless", 32)
    out = tmp_path / "t.json"
    crash_timing_after(monkeypatch, 40)
    with pytest.raises(KeyboardInterrupt):
        profile(get_device("cpu"), space, out, options=TINY, progress=False)
    folder = tmp_path / "t.json.partial"
    damaged = _damage(folder, Checkpoint(folder).done())

    timed = record_timing(monkeypatch)
    logs: list[str] = []
    res = profile(get_device("cpu"), space, out, options=TINY, resume=True, progress=False, log=logs.append)
    total = (len(space.measurable_keys()) + 1) * TINY.rounds
    assert res.reused == 40 - len(damaged) and res.measured == total - 40 + len(damaged) == len(timed)
    assert any(f"{len(damaged)} unreadable checkpoint entries" in m for m in logs)
    assert set(Table.load(out).entries) == {str(k) for k in space.unique_keys()}


def test_checkpoint_state_or_folder_that_is_unreadable_is_a_clear_error(tmp_path):
    state = {"device": {"device": "cpu"}, "settings": {"rounds": 1}}
    out = tmp_path / "t.json"
    Checkpoint.open(out, state, resume=False, force=False)
    (tmp_path / "t.json.partial" / "state.json").write_text("[1, 2")
    with pytest.raises(TableError, match="not valid JSON") as info:
        Checkpoint.open(out, state, resume=True, force=False)
    assert "--force" in info.value.hint
    (tmp_path / "t.json.partial" / "state.json").unlink()
    (tmp_path / "t.json.partial" / "x-r0.json").write_text("{}")
    with pytest.raises(TableError, match="no state.json"):
        Checkpoint.open(out, state, resume=True, force=False)
    Checkpoint.open(out, state, resume=False, force=True).remove()
    (tmp_path / "t.json.partial").write_text("a file where the folder should be")
    with pytest.raises(OutputError, match="is a file"):
        Checkpoint.open(out, state, resume=True, force=False)
    assert Checkpoint.open(out, state, resume=False, force=True).folder.is_dir()


# -- settings and flags out of range: refused before anything runs ------------------------------------------------
@pytest.mark.parametrize(("kwargs", "key"), [({"rounds": 0}, "'rounds'"), ({"spread_limit": 1.0}, "'spread_limit'"),
                                             ({"spread_limit": float("nan")}, "'spread_limit'"),
                                             ({"seed": -1}, "'seed'"), ({"rounds": "3"}, "'rounds'")])
def test_profile_options_are_validated(kwargs, key):
    from hwnas.core.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        ProfileOptions(**kwargs)
    assert key in info.value.message and info.value.hint


@pytest.mark.parametrize(("flag", "value"), [("--rounds", "0"), ("--min-runs", "0"), ("--warmup", "-1"),
                                             ("--min-seconds", "nan"), ("--min-seconds", "inf"),
                                             ("--spread-limit", "nan"), ("--spread-limit", "1"), ("--seed", "-1"),
                                             ("--resolution", "0"), ("--width", "-1"), ("--rounds", "x")])
def test_profile_flags_out_of_range_are_exit_2(flag, value, tmp_path, capsys):
    from hwnas.cli import main

    with pytest.raises(SystemExit) as code:
        main(["profile", "--device", "cpu", "--out", str(tmp_path / "t.json"), "-q", flag, value])
    err = " ".join(capsys.readouterr().err.split())
    assert code.value.code == 2 and "Traceback" not in err
    assert flag in err or flag.lstrip("-").replace("-", "_") in err  # the flag, or its settings key
    assert not (tmp_path / "t.json.partial").exists()  # refused before any work
