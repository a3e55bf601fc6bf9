"""The runtimes' buffer planning, emulated on small graphs worked out by hand."""

import numpy as np
import pytest
from torch import nn

from hwnas.cost.memplan import planned_peak
from hwnas.cost.netgraph import dataflow_graph
from hwnas.spaces import get_space
from hwnas.spaces.arch import Arch, sample_choices

UNIT = 8 * 8 * 4  # bytes per channel of an 8x8 fp32 map


def _chain(*channels):
    layers = [nn.Conv2d(a, b, 1, bias=False) for a, b in zip(channels, channels[1:])]
    return dataflow_graph(nn.Sequential(*layers), (1, channels[0], 8, 8))


def test_onnxruntime_reuse_holds_a_same_size_buffer_across_the_gap():
    # X(8) -> Y(16) -> Z(4) -> W(8): W takes X's dead buffer, so X's buffer stays allocated while Z runs
    g = _chain(3, 8, 16, 4, 8)
    assert planned_peak(g, "liveness", count_input=False) == 24 * UNIT  # X + Y
    assert planned_peak(g, "onnxruntime", count_input=False) == 28 * UNIT  # held X + Y + Z


def test_onnxruntime_residual_add_writes_in_place():
    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(8, 8, 1, bias=False)

        def forward(self, x):
            return x + self.a(x)

    g = dataflow_graph(nn.Sequential(nn.Conv2d(3, 8, 1, bias=False), Res()), (1, 3, 8, 8))
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
