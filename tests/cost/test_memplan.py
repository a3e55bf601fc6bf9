"""The runtimes' buffer planning, emulated on small graphs worked out by hand."""

import numpy as np
import pytest
from torch import nn

from hwnas.cost.memplan import planned_peak
from hwnas.cost.netgraph import dataflow_graph
from hwnas.spaces import get_space
from hwnas.spaces.arch import Arch, sample_choices

UNIT = 8 * 8 * 4  # bytes per channel of an 8x8 fp32 map


class _Residual(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.a = nn.Conv2d(channels, channels, 1, bias=False)

    def forward(self, x):
        return x + self.a(x)


def _chain(*channels):
    layers = [nn.Conv2d(a, b, 1, bias=False) for a, b in zip(channels, channels[1:])]
    return dataflow_graph(nn.Sequential(*layers), (1, channels[0], 8, 8))


def test_onnxruntime_reuse_holds_a_same_size_buffer_across_the_gap():
    # X(8) -> Y(16) -> Z(4) -> W(8): W takes X's dead buffer, so X's buffer stays allocated while Z runs
    g = _chain(3, 8, 16, 4, 8)
    assert planned_peak(g, "liveness", count_input=False) == 24 * UNIT  # X + Y
    assert planned_peak(g, "onnxruntime", count_input=False) == 28 * UNIT  # held X + Y + Z


def test_onnxruntime_residual_add_writes_in_place():
    g = dataflow_graph(nn.Sequential(nn.Conv2d(3, 8, 1, bias=False), _Residual(8)), (1, 3, 8, 8))
    assert planned_peak(g, "liveness", count_input=False) == 24 * UNIT  # x, a(x) and the sum
    assert planned_peak(g, "onnxruntime", count_input=False) == 16 * UNIT  # the sum reuses a(x)'s buffer


def test_greedy_by_size_can_fragment_above_liveness_and_never_goes_below():
    space = get_space("proxyless", 32)
    for row in sample_choices(space, 5, np.random.default_rng(0)):
        g = dataflow_graph(Arch.of(space, row).build(), space.input_shape)
        live = planned_peak(g, "liveness")
        assert planned_peak(g, "greedy_by_size") >= live
    g = _chain(3, 8, 16, 4, 8)
    assert planned_peak(g, "greedy_by_size", count_input=False) == 24 * UNIT


def test_unknown_planner():
    with pytest.raises(ValueError):
        planned_peak(_chain(3, 8), "tvm")


def test_onnxruntime_reuses_a_dead_buffer_only_for_the_same_shape():
    # X (8x8x8) dies; W has X's byte count in another shape (32 channels at 4x4), so it gets a buffer of its own
    same = dataflow_graph(nn.Sequential(nn.Conv2d(3, 8, 1, bias=False), nn.Conv2d(8, 16, 1, bias=False),
                                        nn.Conv2d(16, 8, 1, bias=False)), (1, 3, 8, 8))
    other = dataflow_graph(nn.Sequential(nn.Conv2d(3, 8, 1, bias=False), nn.Conv2d(8, 16, 1, bias=False),
                                         nn.Conv2d(16, 32, 1, stride=2, bias=False)), (1, 3, 8, 8))
    assert planned_peak(same, "onnxruntime", count_input=False) == 24 * UNIT  # W reuses X's buffer
    assert planned_peak(other, "onnxruntime", count_input=False) == 24 * UNIT  # peak at Y + W, nothing held
    g = _chain(3, 8, 16, 4, 8)  # W takes X's buffer (same shape) and holds it across Z
    assert planned_peak(g, "onnxruntime", count_input=False) == 28 * UNIT


def _one(module, shape=(1, 16, 8, 8)):
    return dataflow_graph(module, shape, bytes_per_elem=1)


def test_ort_integer_kernels_temporaries_by_hand():
    px = 8 * 8
    # depthwise 3x3, 16 channels: a pointer per tap and output pixel beside input and output
    dw = _one(nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False))
    assert planned_peak(dw, "onnxruntime", count_input=False, kernels="ort-qlinear") == 16 * px * 2 + 8 * 9 * px
    assert planned_peak(dw, "onnxruntime", count_input=False) == 16 * px  # the float kernels: the output only
    # 24 channels (not a multiple of 16): int32 accumulators as well
    dw24 = _one(nn.Conv2d(24, 24, 3, padding=1, groups=24, bias=False), (1, 24, 8, 8))
    assert planned_peak(dw24, "liveness", kernels="ort-qlinear") == 24 * px * 2 + 8 * 9 * px + 4 * 24 * px
    # the stem (3 input channels): packed GEMM with int32 accumulators and an im2col copy
    stem = _one(nn.Conv2d(3, 16, 3, padding=1, bias=False), (1, 3, 8, 8))
    assert planned_peak(stem, "liveness", kernels="ort-qlinear") == 3 * px + 16 * px + 4 * 16 * px + 27 * px
    # a plain 1x1 that the symmetric kernel runs: nothing more
    pw = _one(nn.Conv2d(16, 32, 1, bias=False))
    assert planned_peak(pw, "liveness", kernels="ort-qlinear") == 16 * px + 32 * px


def test_ort_integer_head_dequantizes_the_last_map_and_adds_write_a_fresh_buffer():
    from hwnas.spaces.blocks import GlobalAvgPool

    px = 8 * 8
    head = _one(nn.Sequential(nn.Conv2d(16, 32, 1, bias=False), GlobalAvgPool()))
    # at the pooling: the transposed uint8 copy and its float dequantization (5 bytes an element), the input
    # copy gone; the output is 32 bytes
    assert planned_peak(head, "liveness", kernels="ort-qlinear") == 5 * 32 * px + 32

    res = _one(nn.Sequential(nn.Conv2d(16, 16, 1, bias=False), _Residual(16)))
    assert planned_peak(res, "onnxruntime", count_input=False) == 2 * 16 * px  # fp32 kernels: in place
    # the integer add writes a fresh buffer: the conv's output, a(x) and the sum at once (the input copy gone)
    assert planned_peak(res, "onnxruntime", count_input=False, kernels="ort-qlinear") == 3 * 16 * px


def test_unknown_kernels():
    with pytest.raises(ValueError, match="kernels"):
        planned_peak(_chain(3, 8), "liveness", kernels="tvm")
