import json

import pytest

from hwnas.core.atomic import atomic_write_text
from hwnas.core.errors import OutputError, TableError
from hwnas.core.stats import summarize
from hwnas.tables.table import SCHEMA_VERSION, Entry, Table

FP = {"device": "cpu", "backend": "onnxruntime", "runtime": "onnxruntime", "runtime_version": "1.0",
      "precision": "fp32", "threads": 1, "host_cpu": "X"}


def make_table() -> Table:
    stats = summarize([1.0, 1.1, 0.9, 1.05])
    return Table(fingerprint=dict(FP), space={"name": "proxyless", "id": "proxyless", "resolution": 32, "width": 1.0},
                 settings={"rounds": 3}, overhead=summarize([0.01, 0.011]),
                 entries={"mbconv-i1x1x1-o1x1x1-e3-k3-s1-skip0": Entry(stats, {"weight_bytes": 10}),
                          "zero-i1x1x1-o1x1x1": Entry(None, {"weight_bytes": 0}, ("free",))})


def test_save_load_round_trip(tmp_path):
    t = make_table()
    t.save(tmp_path / "t.json")
    back = Table.load(tmp_path / "t.json")
    assert back.to_dict() == t.to_dict()
    assert back.latency_ms("zero-i1x1x1-o1x1x1") == 0.0
    assert json.loads((tmp_path / "t.json").read_text())["units"] == {"latency": "ms", "memory": "bytes"}


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write_text(tmp_path / "a.json", "{}")
    atomic_write_text(tmp_path / "a.json", "[]")
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    assert (tmp_path / "a.json").read_text() == "[]"


def test_unwritable_output_path_is_an_output_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError) as info:
        make_table().save(blocker / "t.json")
    assert "--out" in info.value.hint


@pytest.mark.parametrize("content", ["{not json", '{"schema_version": 1}', "[1, 2]", ""])
def test_corrupt_tables_are_refused(tmp_path, content):
    (tmp_path / "t.json").write_text(content)
    with pytest.raises(TableError) as info:
        Table.load(tmp_path / "t.json")
    assert "hwnas profile" in info.value.hint


def test_truncated_table_is_refused(tmp_path):
    make_table().save(tmp_path / "t.json")
    text = (tmp_path / "t.json").read_text()
    (tmp_path / "t.json").write_text(text[: len(text) // 2])
    with pytest.raises(TableError, match="not valid JSON"):
        Table.load(tmp_path / "t.json")


def test_newer_schema_is_refused_with_upgrade_hint(tmp_path):
    data = make_table().to_dict()
    data["schema_version"] = SCHEMA_VERSION + 1
    (tmp_path / "t.json").write_text(json.dumps(data))
    with pytest.raises(TableError) as info:
        Table.load(tmp_path / "t.json")
    assert "upgrade" in info.value.hint


@pytest.mark.parametrize(("field", "value"), [("device", "cpu-tflite"), ("runtime_version", "2.0"), ("threads", 4),
                                              ("host_cpu", "Y"), ("precision", "fp16"),
                                              ("quantization", {"weights": "per-tensor"})])
def test_fingerprint_mismatch_is_refused(field, value):
    t = make_table()
    t.check_fingerprint(dict(FP))  # same device: accepted
    with pytest.raises(TableError) as info:
        t.check_fingerprint({**FP, field: value})
    assert field in info.value.message and "hwnas profile" in info.value.hint


def test_missing_entry_names_the_key():
    with pytest.raises(TableError, match="no entry"):
        make_table().latency_ms("conv-i1-o1")


def test_a_table_reads_its_latencies_as_its_statistic(tmp_path):
    t = make_table()
    key = "mbconv-i1x1x1-o1x1x1-e3-k3-s1-skip0"
    assert t.statistic == "median" and t.latency_ms(key) == pytest.approx(1.025)  # tables before it: the median
    t.extra["calibration"] = {"kind": "scale", "terms": ["predicted_ms"], "coef": [1.1], "intercept_ms": 0.0}
    m = t.read_as("min")
    assert m.statistic == "min" and m.latency_ms(key) == pytest.approx(0.9) and m.overhead_ms == pytest.approx(0.01)
    assert "calibration" not in m.extra and "calibration" in t.extra  # a fit under the median does not carry over
    assert t.latency_ms(key) == pytest.approx(1.025)  # the original is untouched
    m.save(tmp_path / "m.json")
    assert Table.load(tmp_path / "m.json").latency_ms(key) == pytest.approx(0.9)
    assert t.read_as("median") is t
    with pytest.raises(TableError, match="median, min"):
        t.read_as("p50")


def test_a_table_with_an_unknown_statistic_is_refused(tmp_path):
    data = make_table().to_dict()
    data["settings"]["statistic"] = "mean"
    (tmp_path / "t.json").write_text(json.dumps(data))
    with pytest.raises(TableError, match="'mean'") as exc:
        Table.load(tmp_path / "t.json")
    assert "--statistic" in exc.value.hint


def test_tables_of_different_statistics_are_not_diffed():
    from hwnas.tables.view import diff

    t = make_table()
    assert diff(t, t.read_as("median")).ratios
    with pytest.raises(TableError, match="different statistics"):
        diff(t, t.read_as("min"))
