"""Foreign ONNX models on the device: profiling their blocks into a model table, pricing from it
(hwnas.foreign.modelcost)."""

import numpy as np
import onnx
import pytest
from torch import nn

from conftest import ROOT, crash_timing_after, record_timing
from hwnas.cli import main
from hwnas.core.errors import ConfigError, TableError
from hwnas.core.stats import summarize
from hwnas.devices.backends.base import Backend, MeasureSettings
from hwnas.devices.registry import get_device
from hwnas.foreign.modelcost import cancelled_reorders_ms, predict_model, profile_model
from hwnas.foreign.onnxblocks import read_model
from hwnas.measure.checkpoint import Checkpoint
from hwnas.measure.profiler import ProfileOptions
from hwnas.tables.table import Entry, Table
from hwnas.tables.view import space_of
from onnx_models import cbr, export, small_mobilenet_v2

TINY = ProfileOptions(settings=MeasureSettings(warmup_runs=1, min_runs=3, min_seconds=0.0), rounds=2,
                      spread_limit=100.0)


@pytest.fixture(scope="module")
def mnv2(tmp_path_factory):
    return export(small_mobilenet_v2(), tmp_path_factory.mktemp("mnv2") / "mnv2.onnx")


def model_table(blocks, edges=None):
    """A model table as ``hwnas profile --model`` writes it (1 ms per block, 0.01 ms overhead), without timing."""
    one = summarize(np.array([1.0, 1.0, 1.0]))
    return Table(fingerprint={"device": "cpu", "backend": "onnxruntime", "runtime": "onnxruntime",
                              "runtime_version": "1", "precision": "fp32", "threads": 1, "host_cpu": "X"},
                 space={"name": "onnx-blocks", "id": "onnx-blocks", "resolution": 16, "model": "c.onnx",
                        "blocks": len(blocks), "unique_blocks": len({b.key for b in blocks})},
                 settings={}, overhead=summarize(np.array([0.01] * 3)), entries={b.key: Entry(one, {}) for b in blocks},
                 extra={"blocks": edges or {}})


@pytest.fixture()
def chain_table(tmp_path):
    blocks = read_model(export(nn.Sequential(cbr(3, 8), cbr(8, 16)), tmp_path / "c.onnx", (1, 3, 16, 16))).blocks
    model_table(blocks).save(tmp_path / "cpu-model-c.json")
    return tmp_path / "cpu-model-c.json"


# -- pricing ---------------------------------------------------------------------------------------
def test_predict_names_every_block_a_search_space_table_cannot_price(mnv2):
    table = Table.load(ROOT / "latency_tables" / "cpu-proxyless-32.json")
    p = predict_model(table, mnv2)
    assert len(p.unpriced) == p.blocks == len(read_model(mnv2).blocks) and not p.complete
    first = p.unpriced[0].describe()
    assert "Conv" in first and "Clip" in first and read_model(mnv2).blocks[0].names[0] in first
    assert p.latency_ms == pytest.approx(table.overhead.median)  # nothing priced, nothing guessed
    assert p.weight_bytes > 0 and p.params > 0 and p.planned_activation_bytes > 0


def test_profile_then_predict_prices_every_block(mnv2, tmp_path):
    res = profile_model(get_device("cpu"), mnv2, tmp_path / "t.json", options=TINY, progress=False)
    table = Table.load(tmp_path / "t.json")
    m = read_model(mnv2)
    assert table.space["id"] == "onnx-blocks" and table.space["resolution"] == 64
    assert set(table.entries) == {b.key for b in m.blocks} and res.measured == (len(table.entries) + 1) * 2
    for key, e in table.entries.items():
        assert e.latency.median > 0 and e.memory["input_bytes"] > 0 and e.memory["artifact_bytes"] > 0
        assert table.extra["blocks"][key]["ops"]
    p = predict_model(table, mnv2)
    assert p.complete and p.unpriced == [] and p.blocks == len(m.blocks)
    over = table.overhead.median
    expected = over + sum(table.entries[b.key].latency.median - over for b in m.blocks)
    assert p.latency_ms == pytest.approx(expected - cancelled_reorders_ms(table, m.blocks))
    edges = table.extra["blocks"][m.blocks[0].key]
    assert edges["edge_reorder_in_ms"] >= 0 and edges["edge_reorder_out_ms"] >= 0
    model = onnx.load(str(mnv2))
    assert p.weight_bytes == sum(onnx.numpy_helper.to_array(t).nbytes for t in model.graph.initializer)
    assert p.memory_bytes == p.weight_bytes + p.planned_activation_bytes
    # the second stage's expansion (48 ch at 32x32) and its strided depthwise output (48 ch at 16x16) coexist
    assert p.planned_activation_bytes >= 4 * 48 * (32 * 32 + 16 * 16)


def test_edge_reorders_cancel_only_between_blocks_that_both_pay_them(tmp_path):
    chain = nn.Sequential(cbr(3, 8), cbr(8, 16), cbr(16, 24))
    blocks = read_model(export(chain, tmp_path / "c.onnx", (1, 3, 16, 16))).blocks
    edges = {blocks[0].key: {"edge_reorder_in_ms": 0.0, "edge_reorder_out_ms": 0.1},
             blocks[1].key: {"edge_reorder_in_ms": 0.2, "edge_reorder_out_ms": 0.3},  # the next reads plain NCHW
             blocks[2].key: {"edge_reorder_in_ms": 0.0, "edge_reorder_out_ms": 0.4}}
    table = model_table(blocks, edges)
    assert cancelled_reorders_ms(table, blocks) == pytest.approx(0.1 + 0.2)
    assert predict_model(table, tmp_path / "c.onnx").latency_ms == pytest.approx(0.01 + 3 * 0.99 - 0.3)


def test_resume_after_an_interrupted_profile(mnv2, tmp_path, monkeypatch):
    out = tmp_path / "t.json"
    crash_timing_after(monkeypatch, 15)
    with pytest.raises(KeyboardInterrupt):
        profile_model(get_device("cpu"), mnv2, out, options=TINY, progress=False)
    assert len(Checkpoint(tmp_path / "t.json.partial").done()) == 15 and not out.exists()
    timed = record_timing(monkeypatch)
    res = profile_model(get_device("cpu"), mnv2, out, options=TINY, resume=True, progress=False)
    assert res.reused == 15 and res.measured == len(timed) == (len(res.table.entries) + 1) * 2 - 15
    assert predict_model(Table.load(out), mnv2).complete


def test_only_onnxruntime_devices_profile_models(mnv2, tmp_path):
    with pytest.raises(ConfigError, match="onnxruntime"):
        profile_model(get_device("cpu-tflite"), mnv2, tmp_path / "t.json", options=TINY, progress=False)
    assert not (tmp_path / "t.json.partial").exists()


def test_latency_equals_whole_model_order_of_magnitude(mnv2, tmp_path):
    """Sanity, not accuracy (that is tools/bench/foreign_onnx.py): the sum is within 3x of the whole model."""
    table = profile_model(get_device("cpu"), mnv2, tmp_path / "t.json", options=TINY, progress=False).table
    backend = get_device("cpu").backend_instance()
    from hwnas.devices.backends.base import Artifact

    session = backend.load(Artifact(mnv2, (1, 3, 64, 64), (1, 10)))
    whole = summarize(Backend.time_session(session, MeasureSettings(warmup_runs=3, min_runs=20, min_seconds=0.0)))
    assert 1 / 3 < predict_model(table, mnv2).latency_ms / whole.median < 3


# -- command line ----------------------------------------------------------------------------------
def run_main(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    captured = capsys.readouterr()
    return exc.value.code, " ".join((captured.out + captured.err).split())


def test_cli_profiles_a_model(mnv2, tmp_path, capsys):
    main(["profile", "--device", "cpu", "--model", str(mnv2), "--out", f"{tmp_path}/", "--rounds", "1",
          "--min-runs", "2", "--min-seconds", "0", "--warmup", "1", "--spread-limit", "100", "-q"])
    table = Table.load(tmp_path / "cpu-model-mnv2.json")
    assert predict_model(table, mnv2).complete
    assert "cpu-model-mnv2.json" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("args, needle", [
    (["--model", "missing.onnx"], "does not exist"),
    (["--model", "m.onnx", "--space", "proxyless"], "not both"),
    (["--model", "m.onnx", "--resolution", "32"], "not both"),
])
def test_cli_bad_input_exits_2(args, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.onnx").write_bytes(b"not a model")
    code, out = run_main(capsys, "profile", "--device", "cpu", *args, "-q")
    assert code == 2 and needle in out and "fix:" in out and "Traceback" not in out


def test_cli_refuses_a_corrupt_model(tmp_path, capsys):
    (tmp_path / "m.onnx").write_bytes(b"not a model")
    code, out = run_main(capsys, "profile", "--device", "cpu", "--model", str(tmp_path / "m.onnx"), "-q")
    assert code == 2 and "not a valid ONNX file" in out


# -- a model table where a search space's is expected ----------------------------------------------
def test_a_model_table_has_no_search_space(chain_table):
    with pytest.raises(TableError, match="model table .*blocks of c.onnx") as exc:
        space_of(Table.load(chain_table))
    assert "hwnas check c.onnx --device cpu --predict --table" in exc.value.hint


def test_cli_predict_refuses_a_model_table(chain_table, capsys):
    code, out = run_main(capsys, "predict", "reference", "--table", str(chain_table))
    assert code == 2 and "model table" in out and "hwnas check c.onnx" in out and "Traceback" not in out


def test_cli_table_show_summarizes_a_model_table(chain_table, capsys):
    main(["table", "show", str(chain_table), "--entries"])
    out = " ".join(capsys.readouterr().out.split())
    assert "onnx-blocks" in out and "c.onnx" in out and "overhead_ms" in out and "unique_blocks 2" in out
    code, out = run_main(capsys, "table", "show", str(chain_table), "--plot", str(chain_table.with_suffix(".png")))
    assert code == 2 and "no layer x candidate grid" in out and not chain_table.with_suffix(".png").exists()


# -- a QDQ model (static INT8 by onnxruntime.quantization), priced from cpu-int8 ----------------------------------
@pytest.fixture(scope="module")
def qdq(mnv2, tmp_path_factory):
    from hwnas.devices.backends.quantize import quantize_onnx, random_calibration

    out = tmp_path_factory.mktemp("qdq") / "mnv2-int8.onnx"
    quantize_onnx(mnv2, out, random_calibration((1, 3, 64, 64), 4))
    return out


def test_a_qdq_model_is_cut_where_the_net_holds_quantized_tensors(qdq):
    m = read_model(qdq)
    first, *rest = m.blocks
    assert first.ops == ("QuantizeLinear",) and m.info[first.inputs[0]].elem_type == onnx.TensorProto.FLOAT
    inner = [b for b in rest if "Conv" in b.ops]
    assert inner and all(b.ops[0] == "DequantizeLinear" and b.ops[-1] == "QuantizeLinear" for b in inner)
    assert all(m.info[b.inputs[0]].elem_type == onnx.TensorProto.UINT8 for b in inner)  # one integer kernel each


def test_a_qdq_model_profiles_on_cpu_int8_and_is_priced_in_its_element_size(mnv2, qdq, tmp_path):
    res = profile_model(get_device("cpu-int8"), qdq, tmp_path / "t.json", options=TINY, progress=False)
    p = predict_model(res.table, qdq)
    assert not p.unpriced and p.latency_ms > 0
    edges = res.table.extra["blocks"]
    assert any(e["edge_reorder_in_ms"] > 0 and e["edge_reorder_out_ms"] > 0 for e in edges.values())  # NHWC
    assert p.latency_ms < sum(res.table.entries[b.key].latency.median for b in read_model(qdq).blocks)
    # uint8 tensors, and beside them the integer kernels' temporaries (depthwise pointer buffers, int32
    # accumulators) and the float head: what ORT allocates, within 10%; the tensors alone fall far short
    from hwnas.cost.memplan import planned_peak
    from hwnas.measure.memprobe import measure_activation_memory

    measured = measure_activation_memory("onnxruntime", qdq, (1, 3, 64, 64))["activation_bytes"]
    assert p.planned_activation_bytes == pytest.approx(measured, rel=0.10)
    assert planned_peak(read_model(qdq).tensor_graph(), "onnxruntime", count_input=False) < 0.7 * measured
