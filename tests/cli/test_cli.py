"""The real command line: exit codes, messages with fixes, never a traceback."""

import json

import pytest

from conftest import ROOT, run_cli
from hwnas.core.stats import summarize
from hwnas.tables.table import Entry, Table


def assert_clean_exit_2(proc, *needles):
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out
    for needle in needles:
        assert needle in out, out


def test_help_lists_commands():
    proc = run_cli("--help")
    assert proc.returncode == 0
    assert "profile" in proc.stdout and "devices" in proc.stdout and "table" in proc.stdout


def test_devices_lists_all_five_with_status():
    proc = run_cli("devices", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert {"cpu", "cpu-tflite", "pixel", "gpu", "cuda"} <= set(rows)
    assert rows["cpu"]["ready"] and rows["cpu"]["status"] == "ready"
    assert not rows["pixel"]["ready"] and rows["pixel"]["status"]
    table = run_cli("devices")
    assert table.returncode == 0 and "onnxruntime" in table.stdout and "not ready" in table.stdout


def test_unknown_device_exits_2_with_suggestion():
    assert_clean_exit_2(run_cli("profile", "--device", "cpu-tflit"), "unknown device", "cpu-tflite", "fix:")


def test_unknown_space_exits_2():
    assert_clean_exit_2(run_cli("profile", "--space", "proxyles"), "did you mean 'proxyless'")


def test_malformed_toml_exits_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\nbackend = "onnxruntime"\nthreads = [1,\n')
    assert_clean_exit_2(run_cli("profile", "--device", str(bad)), str(bad), "TOML", "fix:")


def test_wrongly_typed_key_exits_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\nbackend = "onnxruntime"\nthreads = "one"\n')
    assert_clean_exit_2(run_cli("profile", "--device", str(bad)), "'threads'", "fix:")


def test_unready_device_exits_2_with_what_to_do():
    assert_clean_exit_2(run_cli("profile", "--device", "pixel"), "not ready", "fix:")


def test_unwritable_output_exits_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_clean_exit_2(run_cli("profile", "--device", "cpu", "--space", "proxyless", "--resolution", "32",
                                "--out", str(blocker / "t.json"), "-q"), "cannot", "fix:")


def test_corrupt_table_exits_2(tmp_path):
    (tmp_path / "t.json").write_text('{"schema_version": 1, "units": ')
    assert_clean_exit_2(run_cli("table", "show", str(tmp_path / "t.json")), "corrupt", "fix:")


def _table(tmp_path, device="cpu", version=None, factor=1.0):
    from hwnas.devices.registry import get_device

    fp = get_device(device).backend_instance().fingerprint()
    if version:
        fp["runtime_version"] = version
    key = "mbconv-i16x16x40-o16x16x40-e6-k5-s1-skip1"
    t = Table(fingerprint=fp, space={"name": "proxyless", "id": "proxyless", "resolution": 32, "width": 1.0},
              settings={}, overhead=summarize([0.01]), entries={key: Entry(summarize([factor, factor]), {})})
    path = tmp_path / f"{device}-{version}-{factor}.json"
    t.save(path)
    return path


def test_mismatched_table_exits_2(tmp_path):
    path = _table(tmp_path, version="0.0.1")
    assert_clean_exit_2(run_cli("table", "show", str(path), "--device", "cpu"), "does not match", "runtime_version")
    assert run_cli("table", "show", str(_table(tmp_path)), "--device", "cpu").returncode == 0


def test_newer_schema_exits_2(tmp_path):
    path = _table(tmp_path)
    data = json.loads(path.read_text())
    data["schema_version"] = 99
    path.write_text(json.dumps(data))
    assert_clean_exit_2(run_cli("table", "show", str(path)), "schema version 99", "upgrade")


def test_table_diff_reports_ratio(tmp_path):
    a, b = _table(tmp_path, factor=1.0), _table(tmp_path, factor=1.5)
    proc = run_cli("table", "diff", str(a), str(b))
    assert proc.returncode == 0, proc.stderr
    assert "median ratio B/A = 1.500" in proc.stdout
    assert "1 of 1 entries are slower in B" in proc.stdout and "reference net is not priced" in proc.stdout


def test_table_diff_names_the_slower_blocks_and_prices_the_reference_in_both(tmp_path):
    import json

    from hwnas.cost.model import reference_ratio
    from hwnas.tables import view

    table = ROOT / "latency_tables" / "cpu-proxyless-w0.35-32.json"
    data = json.loads(table.read_text())
    keys = sorted(k for k, e in data["entries"].items() if e["latency"])
    for i, key in enumerate(keys):  # B: every other entry twice as slow, the rest twice as fast
        for field in ("median", "p10", "p90", "mean", "min", "p95"):
            if field in data["entries"][key]["latency"]:
                data["entries"][key]["latency"][field] *= 2.0 if i % 2 == 0 else 0.5
    (tmp_path / "b.json").write_text(json.dumps(data))
    a, b = Table.load(table), Table.load(tmp_path / "b.json")
    d = view.diff(a, b)
    assert set(d.slower) == set(keys[::2]) and all(d.ratios[k] == pytest.approx(2.0) for k in d.slower)
    la, lb = reference_ratio(a, b)
    assert la > 0 and lb != pytest.approx(la)
    proc = run_cli("table", "diff", str(table), str(tmp_path / "b.json"), "--top", "0")
    assert proc.returncode == 0, proc.stderr
    assert f"{len(d.slower)} of {len(keys)} entries are slower in B" in proc.stdout
    assert f"{la:.3f} ms in A, {lb:.3f} ms in B" in proc.stdout


@pytest.mark.slow
def test_profile_then_show_with_heatmap(tmp_path):
    proc = run_cli("profile", "--device", "cpu", "--space", "proxyless", "--resolution", "32", "--out",
                   f"{tmp_path}/", "--rounds", "1", "--min-runs", "3", "--min-seconds", "0", "--warmup", "1", "-q")
    assert proc.returncode == 0, proc.stderr
    table = tmp_path / "cpu-proxyless-32.json"
    assert table.exists()
    shown = run_cli("table", "show", str(table), "--plot", str(tmp_path / "h.png"), "--json")
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert info["entries"] == 76 and info["measured"] == 71
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = run_cli("profile", "--device", "cpu", "--space", "proxyless", "--resolution", "32", "--out",
                    f"{tmp_path}/", "-q")
    assert_clean_exit_2(again, "exists", "--force")


def test_no_help_text_is_eaten_as_rich_markup():
    """``--help`` renders help through rich, which takes ``[word]`` for a style tag and drops it: a default
    written as ``[default: cpu]`` would print as nothing. Every command's and option's help survives whole."""
    import typer.main
    from rich.text import Text

    from hwnas.cli import app

    def walk(cmd, path):
        yield path, cmd
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, f"{path} {name}")

    eaten = [(path, getattr(p, "name", "doc"), text)
             for path, cmd in walk(typer.main.get_command(app), "hwnas")
             for p in [cmd, *cmd.params] for text in [getattr(p, "help", None)]
             if text and Text.from_markup(text).plain != text]
    assert not eaten
    assert "(default: cpu)" in " ".join(run_cli("pipeline", "--help").stdout.split())
