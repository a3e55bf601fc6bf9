"""The Android backend against a test double of adb (tests/fakes/fake_adb.py): no phone exists here."""

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from conftest import ROOT, needs_tflite, run_cli
from conftest import cli as _cli
from hwnas.core.errors import ConfigError
from hwnas.devices.backends.base import MeasureSettings
from hwnas.devices.registry import get_device
from hwnas.measure.profiler import ProfileOptions, profile
from hwnas.spaces import get_space
from hwnas.tables.table import Table

FAKE = ROOT / "tests" / "fakes" / "fake_adb.py"
PIXEL_PROPS = {"ro.product.manufacturer": "Google", "ro.product.model": "Pixel 7", "ro.soc.model": "GS201",
               "ro.build.version.release": "14", "ro.build.fingerprint": "google/panther/panther:14/X/1:user",
               "ro.product.cpu.abi": "arm64-v8a"}


@pytest.fixture
def phones(tmp_path, monkeypatch):
    """Returns add(serial, **props) and the path of a descriptor that uses the fake adb."""
    root = tmp_path / "phones"
    root.mkdir()
    monkeypatch.setenv("FAKE_ADB_ROOT", str(root))
    adb = tmp_path / "adb"
    adb.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE} \"$@\"\n")
    adb.chmod(adb.stat().st_mode | stat.S_IEXEC)
    tool = tmp_path / "benchmark_model"
    tool.write_bytes(b"\x7fELF fake benchmark_model for tests")
    desc = tmp_path / "pixel.toml"
    desc.write_text(f'name = "pixel"\nbackend = "android"\nthreads = 1\n[connection]\nkind = "adb"\n'
                    f'[options]\nadb = "{adb}"\nbenchmark_model = "{tool}"\ntaskset = "f0"\n')

    def add(serial: str, die_after: int | None = None, **props: str) -> None:
        (root / serial).mkdir()
        (root / serial / "props.json").write_text(json.dumps({**PIXEL_PROPS, **props}))
        if die_after is not None:
            (root / serial / "die_after").write_text(str(die_after))

    return add, desc


def test_not_ready_without_a_phone(phones):
    _, desc = phones
    ok, why = get_device(str(desc)).availability()
    assert not ok and "no phone attached" in why


def test_not_ready_without_benchmark_model(phones, tmp_path):
    add, desc = phones
    add("A1")
    dev = get_device(str(desc)).with_options(benchmark_model=str(tmp_path / "missing"))
    ok, why = dev.availability()
    assert not ok and "benchmark_model" in why and "android_aarch64" in why


def test_ready_and_fingerprint_describes_the_phone(phones):
    add, desc = phones
    add("A1")
    dev = get_device(str(desc))
    assert dev.availability() == (True, "ready")
    [(serial, unit)] = dev.backend_instance().units()
    fp = unit.fingerprint()
    assert serial == "A1"
    assert fp["host_cpu"] == "GS201" and fp["phone"]["model"] == "Pixel 7" and fp["governor"] == "schedutil"
    assert fp["runtime_version"].startswith("sha256:") and fp["delegate"] == "xnnpack"
    assert "A1" not in json.dumps(fp)  # units of one model share a fingerprint


def test_command_carries_the_descriptor_settings(phones):
    add, desc = phones
    add("A1")
    [(_, unit)] = get_device(str(desc)).backend_instance().units()
    cmd = unit.command("/data/local/tmp/hwnas/m.tflite", MeasureSettings(warmup_runs=5, min_runs=50, min_seconds=1))
    assert cmd.startswith("taskset f0 /data/local/tmp/hwnas/benchmark_model-")
    for flag in ("--num_threads=1", "--warmup_runs=5", "--num_runs=50", "--min_secs=1", "--use_xnnpack=true",
                 "--enable_op_profiling=true", "--report_peak_memory_footprint=true"):
        assert flag in cmd


def test_thermal_zones_are_read_in_degrees(phones):
    add, desc = phones
    add("A1", thermal_millic=[35500, 48250])
    [(_, unit)] = get_device(str(desc)).backend_instance().units()
    assert unit.adb.max_temp_c() == pytest.approx(48.25)


TINY = ProfileOptions(settings=MeasureSettings(warmup_runs=1, min_runs=3, min_seconds=0.0), rounds=1,
                      spread_limit=100.0)


@needs_tflite
@pytest.mark.slow
def test_profile_on_the_phone_double_end_to_end(phones, tmp_path):
    add, desc = phones
    add("A1")
    proc = run_cli("profile", "--device", str(desc), "--space", "proxyless", "--resolution", "32", "--out",
                   str(tmp_path / "t.json"), "--rounds", "1", "--min-runs", "3", "--min-seconds", "0",
                   "--spread-limit", "100", "-q", "--jobs", "2",  # conversions in two processes, as on a user's host
                   env={"FAKE_ADB_ROOT": os.environ["FAKE_ADB_ROOT"]})
    assert proc.returncode == 0, proc.stderr
    table = Table.load(tmp_path / "t.json")
    assert table.fingerprint["runtime"] == "benchmark_model" and table.fingerprint["host_cpu"] == "GS201"
    space = get_space("proxyless", 32)
    assert set(table.entries) == {str(k) for k in space.unique_keys()}
    entry = table.entries[str(space.measurable_keys()[3])]
    assert entry.latency.source == "benchmark_model" and entry.latency.n >= 3 and entry.unit == "A1"
    # the footprint benchmark_model printed (fake: 3.5 MB peak, 2.25 MB overall) reached the table
    assert entry.memory["runtime_peak_footprint_bytes"] == int(3.5 * 2**20)
    assert entry.memory["runtime_footprint_bytes"] == int(2.25 * 2**20)
    runs = int((Path(os.environ["FAKE_ADB_ROOT"]) / "A1" / "runs").read_text())
    assert runs == len(space.measurable_keys()) + 1  # one benchmark_model run per entry and the overhead model


@needs_tflite
@pytest.mark.slow
def test_two_phones_share_the_work_and_survive_one_disappearing(phones, tmp_path):
    add, desc = phones
    add("A1")
    add("B2", die_after=50)
    logs: list[str] = []
    space = get_space("proxyless", 32)
    opts = ProfileOptions(settings=TINY.settings, rounds=2, spread_limit=100.0)
    res = profile(get_device(str(desc)), space, tmp_path / "t.json", options=opts, progress=False, log=logs.append)
    table = res.table
    assert set(table.entries) == {str(k) for k in space.unique_keys()}
    units = {e.unit for e in table.entries.values() if e.latency}
    assert units == {"A1", "B2"}  # both phones measured entries
    assert any("lost unit B2" in m for m in logs)
    root = Path(os.environ["FAKE_ADB_ROOT"])
    assert int((root / "B2" / "runs").read_text()) == 50 and (root / "B2" / "gone").exists()
    # every entry is one unit's: B2 kept only the entries whose two rounds it finished before it vanished,
    # and A1 measured the rest (B2's half-done keys again, from their first round)
    on_b2 = sum(e.unit == "B2" for e in table.entries.values())
    assert 0 < on_b2 < 25
    assert res.measured == 2 * (len(space.measurable_keys()) + 1)


@needs_tflite
def test_phones_of_different_models_are_not_mixed(phones, tmp_path):
    add, desc = phones
    add("A1")
    add("B2", **{"ro.product.model": "Pixel 8"})
    with pytest.raises(ConfigError, match="differ in"):
        profile(get_device(str(desc)), get_space("proxyless", 32), tmp_path / "t.json", options=TINY,
                progress=False)


def test_no_adb_is_exit_2_with_install_hint(tmp_path):
    desc = tmp_path / "p.toml"
    desc.write_text('name = "p"\nbackend = "android"\n[options]\nadb = "/nonexistent/adb"\n')
    proc = run_cli("profile", "--device", str(desc), "-q")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "apt-get install adb" in proc.stderr


# -- a descriptor that names no phone (devices/pixel.toml: serial = "") -------------------------------------------
def test_unpinned_descriptor_takes_the_one_attached_phone(phones):
    add, desc = phones
    add("A1")
    backend = get_device(str(desc)).backend_instance()
    assert backend.adb.serial == "A1"
    assert backend.fingerprint()["phone"]["model"] == "Pixel 7"


def test_unpinned_descriptor_with_two_phones(phones):
    add, desc = phones
    add("A1")
    add("B2")
    backend = get_device(str(desc)).backend_instance()
    assert backend.fingerprint()["host_cpu"] == "GS201"  # one model: the fingerprint they share
    with pytest.raises(ConfigError, match="which one") as info:
        backend.adb  # noqa: B018 - but one phone to talk to must be named
    assert "--serial" in info.value.hint and "connection.serial" in info.value.hint


def test_table_commands_on_an_unpinned_phone_say_what_is_wrong(phones, capsys):
    add, desc = phones
    table = str(ROOT / "latency_tables" / "cpu-tflite-proxyless-32.json")
    code, text = _cli(capsys, "table", "show", table, "--device", str(desc))
    assert code == 2 and "no phone attached" in text and "units()" not in text
    code, text = _cli(capsys, "table", "validate", "--device", str(desc), "--table", table, "-q")
    assert code == 2 and "no phone attached" in text and "units()" not in text
    add("A1")
    code, text = _cli(capsys, "table", "show", table, "--device", str(desc))
    assert code == 2 and "does not match this device" in text and "--allow-foreign-table" in text
    code, text = _cli(capsys, "table", "show", table, "--device", str(desc), "--allow-foreign-table", "--json")
    assert code == 0 and "FOREIGN TABLE" in text and '"warning"' in text


# -- adb that hangs, is missing, or cannot run ---------------------------------------------------------------------
def test_adb_that_hangs_is_a_lost_phone_not_a_traceback(monkeypatch):
    import subprocess

    from hwnas.core.errors import DeviceLost
    from hwnas.devices.backends.android import Adb

    def hang(cmd, **kw):
        raise subprocess.TimeoutExpired(cmd, kw["timeout"])

    monkeypatch.setattr(subprocess, "run", hang)
    with pytest.raises(DeviceLost, match="did not answer within 7 s") as info:
        Adb("A1").shell("true", timeout=7)
    assert "--resume" in info.value.hint
    assert Adb("A1").alive() is False


def test_adb_missing_or_not_executable_is_device_unavailable(tmp_path):
    from hwnas.core.errors import DeviceUnavailable
    from hwnas.devices.backends.android import Adb, attached_serials

    with pytest.raises(DeviceUnavailable, match="adb not found") as info:
        attached_serials(str(tmp_path / "no-adb"))
    assert "apt-get install adb" in info.value.hint
    plain = tmp_path / "adb"
    plain.write_text("#!/bin/sh\n")
    plain.chmod(0o644)
    with pytest.raises(DeviceUnavailable, match="cannot be run") as info:
        Adb("A1", str(plain)).shell("true")
    assert "chmod +x" in info.value.hint
