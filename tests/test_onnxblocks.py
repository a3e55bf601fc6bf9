"""Foreign ONNX models: fused-block segmentation, canonical keys, profiling and pricing from a table."""

import re

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from conftest import ROOT
from hwnas.backends.base import Backend, MeasureSettings
from hwnas.backends.onnxruntime import export_onnx
from hwnas.checkpoint import Checkpoint
from hwnas.cli import main
from hwnas.devices import get_device
from hwnas.errors import ConfigError
from hwnas.onnxblocks import OnnxModel, cancelled_reorders_ms, predict_model, profile_model, read_model
from hwnas.profiling import ProfileOptions
from hwnas.stats import summarize
from hwnas.tables import Entry, Table

TINY = ProfileOptions(settings=MeasureSettings(warmup_runs=1, min_runs=3, min_seconds=0.0), rounds=2,
                      spread_limit=100.0)
KEY = re.compile(r"^[A-Za-z+0-9]+-i[0-9x_]+-o[0-9x_]+-[0-9a-f]{10}$")


def cbr(cin, cout, k=3, stride=1, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU6())


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        self.skip = stride == 1 and cin == cout
        expansion = [cbr(cin, hidden, 1)] if expand != 1 else []
        self.conv = nn.Sequential(*expansion, cbr(hidden, hidden, 3, stride, hidden),
                                  nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return x + self.conv(x) if self.skip else self.conv(x)


def small_mobilenet_v2():
    """MobileNetV2's structure at width 0.35 (torchvision's stages, fewer repeats), for a 64x64 input."""
    layers, cin = [cbr(3, 16, stride=2)], 16
    for t, c, n, s in ((1, 8, 1, 1), (6, 8, 2, 2), (6, 16, 3, 2), (6, 24, 2, 1), (6, 56, 2, 2)):
        for i in range(n):
            layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
            cin = c
    layers.append(cbr(cin, 1280, 1))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, 10))


def export(module, path, shape=(1, 3, 64, 64)):
    torch.manual_seed(0)
    for m in module.modules():  # BN statistics that are not the identity, so folding changes the weights
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    export_onnx(module.eval(), shape, path)
    return path


@pytest.fixture(scope="module")
def mnv2(tmp_path_factory):
    return export(small_mobilenet_v2(), tmp_path_factory.mktemp("mnv2") / "mnv2.onnx")


def ops_of(path):
    return [b.ops for b in read_model(path).blocks]


# -- segmentation -----------------------------------------------------------------------------------
def test_a_conv_chain_gives_one_block_per_conv_with_its_bn_and_activation(tmp_path):
    chain = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), cbr(8, 8), nn.Conv2d(8, 4, 1))
    assert ops_of(export(chain, tmp_path / "chain.onnx")) == [("Conv", "Relu"), ("Conv", "Clip"), ("Conv",)]


def test_a_residual_block_is_one_block_from_its_fork_to_its_add(tmp_path):
    net = nn.Sequential(cbr(3, 8), InvertedResidual(8, 8, 1, 2), cbr(8, 8))
    assert ops_of(export(net, tmp_path / "res.onnx")) == [
        ("Conv", "Clip"), ("Conv", "Clip", "Conv", "Clip", "Conv", "Add"), ("Conv", "Clip")]


def test_mobilenet_v2_blocks_cover_every_op_once(mnv2):
    m = read_model(mnv2)
    blocks = m.blocks
    covered = [i for b in blocks for i in b.nodes]
    assert sorted(covered) == sorted(m.order) and len(covered) == len(set(covered))
    residual = [b for b in blocks if b.ops[-1] == "Add"]
    assert len(residual) == 1 + 2 + 1 + 1  # stages with repeats at an unchanged width
    assert all(b.ops == ("Conv", "Clip", "Conv", "Clip", "Conv", "Add") for b in residual)
    assert blocks[-1].ops == ("Gemm",) and blocks[-2].ops[0] == "GlobalAveragePool"
    assert all(KEY.match(b.key) for b in blocks), [b.key for b in blocks]
    assert all(len(b.inputs) == len(b.outputs) == 1 for b in blocks)


# -- keys -------------------------------------------------------------------------------------------
def test_identical_blocks_share_a_key(mnv2):
    blocks = read_model(mnv2).blocks
    twins = [b for b in blocks if b.ops[-1] == "Add" and "-i8x8x16-" in b.key]  # stage 3's two repeats
    assert len(twins) == 2 and twins[0].key == twins[1].key and twins[0].names != twins[1].names
    assert len({b.key for b in blocks}) < len(blocks)


def test_keys_do_not_depend_on_names_or_weight_values(mnv2, tmp_path):
    model = onnx.load(str(mnv2))
    renamed = {}
    for i, node in enumerate(model.graph.node):
        node.name = f"n{len(model.graph.node) - i}"
        for seq in (node.input, node.output):
            for j, t in enumerate(seq):
                if t:
                    seq[j] = renamed.setdefault(t, f"tensor_{len(renamed) * 7 % 1000}_{len(renamed)}")
    for seq in (model.graph.input, model.graph.output, model.graph.initializer):
        for v in seq:
            v.name = renamed.get(v.name, v.name)
    for t in model.graph.initializer:  # other weights, same shapes
        if t.raw_data:
            t.raw_data = bytes(reversed(t.raw_data))
    del model.graph.value_info[:]
    onnx.save(model, str(tmp_path / "renamed.onnx"))
    original = [b.key for b in read_model(mnv2).blocks]
    assert [b.key for b in read_model(tmp_path / "renamed.onnx").blocks] == original
    wider = export(small_mobilenet_v2(), tmp_path / "96.onnx", (1, 3, 96, 96))
    assert not set(original) & {b.key for b in read_model(wider).blocks} - {original[-1]}


def test_a_symbolic_batch_is_fixed_to_one(tmp_path):
    path = tmp_path / "dyn.onnx"
    torch.onnx.export(cbr(3, 8).eval(), (torch.zeros(1, 3, 16, 16),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    (block,) = read_model(path).blocks
    assert block.key.startswith("Conv+Clip-i16x16x3-o16x16x8-")


# -- pricing ----------------------------------------------------------------------------------------
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
    one = summarize(np.array([1.0, 1.0, 1.0]))
    edges = {blocks[0].key: {"edge_reorder_in_ms": 0.0, "edge_reorder_out_ms": 0.1},
             blocks[1].key: {"edge_reorder_in_ms": 0.2, "edge_reorder_out_ms": 0.3},  # the next reads plain NCHW
             blocks[2].key: {"edge_reorder_in_ms": 0.0, "edge_reorder_out_ms": 0.4}}
    table = Table(fingerprint={"backend": "onnxruntime"}, space={"name": "onnx-blocks", "id": "onnx-blocks",
                  "resolution": 16}, settings={}, overhead=summarize(np.array([0.01] * 3)),
                  entries={b.key: Entry(one, {}) for b in blocks}, extra={"blocks": edges})
    assert cancelled_reorders_ms(table, blocks) == pytest.approx(0.1 + 0.2)
    assert predict_model(table, tmp_path / "c.onnx").latency_ms == pytest.approx(0.01 + 3 * 0.99 - 0.3)


def test_planned_memory_counts_a_residual_input_across_its_branch(tmp_path):
    net = nn.Sequential(cbr(3, 8), InvertedResidual(8, 8, 1, 4))
    g = OnnxModel(onnx.shape_inference.infer_shapes(onnx.load(str(export(net, tmp_path / "r.onnx"))))).tensor_graph()
    from hwnas.memplan import planned_peak

    per_map = 4 * 64 * 64  # one 64x64 channel, fp32
    # x (8 ch) stays live while the 32-channel expansion and its depthwise output coexist
    assert planned_peak(g, "liveness", count_input=False) == per_map * (8 + 32 + 32)


def test_resume_after_an_interrupted_profile(mnv2, tmp_path, monkeypatch):
    out = tmp_path / "t.json"
    real = Backend.time_session
    calls = {"n": 0}

    def crashing(session, settings):
        calls["n"] += 1
        if calls["n"] > 15:
            raise KeyboardInterrupt
        return real(session, settings)

    monkeypatch.setattr(Backend, "time_session", staticmethod(crashing))
    with pytest.raises(KeyboardInterrupt):
        profile_model(get_device("cpu"), mnv2, out, options=TINY, progress=False)
    assert len(Checkpoint(tmp_path / "t.json.partial").done()) == 15 and not out.exists()
    timed = []
    monkeypatch.setattr(Backend, "time_session", staticmethod(lambda s, st: timed.append(s) or real(s, st)))
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
    from hwnas.backends.base import Artifact

    session = backend.load(Artifact(mnv2, (1, 3, 64, 64), (1, 10)))
    whole = summarize(Backend.time_session(session, MeasureSettings(warmup_runs=3, min_runs=20, min_seconds=0.0)))
    assert 1 / 3 < predict_model(table, mnv2).latency_ms / whole.median < 3


# -- command line -----------------------------------------------------------------------------------
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
