"""Foreign ONNX models: fused-block segmentation, canonical keys, the tensor graph (hwnas.foreign.onnxblocks)."""

import re

import onnx
import pytest
import torch
from torch import nn

from hwnas.foreign.onnxblocks import OnnxModel, read_model
from onnx_models import InvertedResidual, cbr, export, small_mobilenet_v2

KEY = re.compile(r"^[A-Za-z+0-9]+-i[0-9x_]+-o[0-9x_]+-[0-9a-f]{10}$")


@pytest.fixture(scope="module")
def mnv2(tmp_path_factory):
    return export(small_mobilenet_v2(), tmp_path_factory.mktemp("mnv2") / "mnv2.onnx")


def ops_of(path):
    return [b.ops for b in read_model(path).blocks]


# -- segmentation ----------------------------------------------------------------------------------
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


# -- keys ------------------------------------------------------------------------------------------
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


# -- memory ----------------------------------------------------------------------------------------
def test_planned_memory_counts_a_residual_input_across_its_branch(tmp_path):
    net = nn.Sequential(cbr(3, 8), InvertedResidual(8, 8, 1, 4))
    g = OnnxModel(onnx.shape_inference.infer_shapes(onnx.load(str(export(net, tmp_path / "r.onnx"))))).tensor_graph()
    from hwnas.cost.memplan import planned_peak

    per_map = 4 * 64 * 64  # one 64x64 channel, fp32
    # x (8 ch) stays live while the 32-channel expansion and its depthwise output coexist
    assert planned_peak(g, "liveness", count_input=False) == per_map * (8 + 32 + 32)
