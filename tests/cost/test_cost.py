import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT
from hwnas.cost.memplan import planned_peak
from hwnas.cost.model import CostModel
from hwnas.cost.netgraph import dataflow_graph, graph_cost
from hwnas.spaces import OpKey, get_space
from hwnas.spaces.arch import Arch, num_choices, sample_choices
from hwnas.tables.table import Table

MODEL = CostModel(Table.load(ROOT / "latency_tables" / "cpu-proxyless-224.json"))
SPACE = MODEL.space


@given(st.lists(st.integers(0, 6), min_size=21, max_size=21))
@settings(max_examples=40, deadline=None)
def test_predict_many_equals_predict_elementwise(raw):
    choices = np.minimum(np.array(raw), num_choices(SPACE) - 1)
    one = MODEL.predict(Arch.of(SPACE, choices))
    many = MODEL.predict_many(choices[None, :])
    assert many["latency_ms"][0] == pytest.approx(one.latency_ms, rel=1e-12)
    assert many["weight_bytes"][0] == one.weight_bytes
    assert many["peak_activation_bytes"][0] == one.peak_activation_bytes


def test_predict_is_overhead_plus_entries_net_of_their_overhead():
    arch = Arch.of(SPACE, SPACE.reference_choices())
    keys = [str(k) for k in SPACE.keys_for(arch.choices)]
    t = MODEL.table
    expected = t.overhead.median + sum(t.latency_ms(k) - t.overhead.median for k in keys if t.entries[k].latency)
    assert MODEL.predict(arch, calibrated=False).latency_ms == pytest.approx(expected)


def test_a_table_read_as_min_prices_every_net_by_its_entries_fastest_runs():
    t = MODEL.table.read_as("min")
    model = CostModel(t)
    rows = sample_choices(SPACE, 5, np.random.default_rng(1))
    for row in rows:
        keys = [str(k) for k in SPACE.keys_for(row)]
        expected = t.overhead.min + sum(t.entries[k].latency.min - t.overhead.min for k in keys if t.entries[k].latency)
        assert model.predict(Arch.of(SPACE, row), calibrated=False).latency_ms == pytest.approx(expected)
    assert np.allclose(model.predict_many(rows)["latency_ms"],
                       [model.predict(Arch.of(SPACE, r), calibrated=False).latency_ms for r in rows])
    assert (model.predict_many(rows)["latency_ms"] < MODEL.predict_many(rows, calibrated=False)["latency_ms"]).all()


def test_expected_latency_equals_predict_on_one_hot():
    choices = sample_choices(SPACE, 1, np.random.default_rng(3))[0]
    probs = torch.zeros(MODEL.padding.shape, dtype=torch.float64)
    probs[torch.arange(len(choices)), torch.as_tensor(choices)] = 1.0
    assert MODEL.expected_latency(probs).item() == pytest.approx(MODEL.predict(Arch.of(SPACE, choices)).latency_ms)


def test_expected_latency_gradient_matches_finite_differences():
    n = torch.as_tensor(num_choices(SPACE))
    width = MODEL.padding.shape[1]
    mask = torch.arange(width)[None, :] < n[:, None]
    alpha = torch.randn(len(n), width, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def f(a):
        return MODEL.expected_latency(torch.softmax(a.masked_fill(~mask, -torch.inf), dim=1))

    a = alpha.clone().requires_grad_(True)
    f(a).backward()
    eps = 1e-6
    for i, j in [(0, 0), (3, 5), (10, 6), (20, 2)]:
        up, down = alpha.clone(), alpha.clone()
        up[i, j] += eps
        down[i, j] -= eps
        numeric = (f(up) - f(down)).item() / (2 * eps)
        assert a.grad[i, j].item() == pytest.approx(numeric, rel=1e-5, abs=1e-9)


def test_predict_many_is_vectorized_over_a_population():
    c = sample_choices(SPACE, 50000, np.random.default_rng(0))
    out = MODEL.predict_many(c)
    assert out["latency_ms"].shape == (50000,) and np.isfinite(out["latency_ms"]).all()
    ref = MODEL.predict(Arch.of(SPACE, SPACE.reference_choices())).latency_ms
    assert out["latency_ms"].min() < ref  # zero ops and e3 candidates make many nets faster than e6-k3 everywhere


def test_peak_activation_of_a_residual_block_by_hand():
    key = OpKey.parse("mbconv-i56x56x24-o56x56x24-e6-k3-s1-skip1")
    c = graph_cost(SPACE.build_op(key), (1, 24, 56, 56))
    # at the depthwise conv: the block input (kept for the residual), the expanded map and the dw output
    assert c.peak_activation_bytes == 4 * (56 * 56 * 24 + 2 * 56 * 56 * 144)
    no_skip = graph_cost(SPACE.build_op(OpKey.parse("mbconv-i56x56x24-o28x28x32-e6-k3-s2-skip0")), (1, 24, 56, 56))
    # without a residual the input dies after the expansion; the stride-2 depthwise step then holds
    # the expanded map and its 28x28 output, more than input + expanded at the expansion step
    at_expand, at_dw = 56 * 56 * 24 + 56 * 56 * 144, 56 * 56 * 144 + 28 * 28 * 144
    assert at_dw > at_expand and no_skip.peak_activation_bytes == 4 * at_dw


def test_fused_ops_allocate_nothing():
    g = dataflow_graph(SPACE.build_op(OpKey.parse("conv-i8x8x3-o8x8x16-k3-s1")), (1, 3, 8, 8))
    allocating = [n for n, d in g.nodes(data=True) if d["bytes"] > 0]
    assert len(allocating) == 2  # the input and the conv output; BN and ReLU6 alias it
    assert planned_peak(g) == 4 * (8 * 8 * 3 + 8 * 8 * 16)


def test_whole_network_cost_equals_the_sum_over_its_blocks():
    arch = Arch.of(SPACE, sample_choices(SPACE, 1, np.random.default_rng(5))[0])
    whole = graph_cost(arch.build(), SPACE.input_shape)
    p = MODEL.predict(arch)
    # ONNX Runtime reads the caller's input in place: the table's prediction leaves the input out
    assert (whole.macs, whole.params, whole.peak_without_input_bytes) == (p.macs, p.params, p.peak_activation_bytes)


def test_runtime_holding_graph_io_adds_it_to_the_peak():
    tflite = CostModel(Table.load(ROOT / "latency_tables" / "cpu-tflite-proxyless-224.json"))
    arch = Arch.of(SPACE, SPACE.reference_choices())
    io = 4 * (224 * 224 * 3 + 1000)
    assert tflite.predict(arch).peak_activation_bytes == MODEL.predict(arch).peak_activation_bytes + io


def test_table_of_another_space_is_refused():
    from hwnas.core.errors import ConfigError

    with pytest.raises(ConfigError, match="table is for"):
        CostModel(MODEL.table, get_space("proxyless", 32))
