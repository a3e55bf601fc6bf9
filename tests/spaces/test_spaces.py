import json

import pytest
import torch

from conftest import SHARED
from hwnas.core.errors import ConfigError
from hwnas.spaces import FREE_OPS, SPACES, get_space
from hwnas.spaces.fbnet import hwnasbench_key
from hwnas.spaces.keys import input_shape

SETTINGS = [(name, res) for name in SPACES for res in SPACES.get(name).resolutions]


@pytest.mark.parametrize(("name", "res"), SETTINGS)
def test_every_key_builds_a_module_with_the_keyed_output_shape(name, res):
    space = get_space(name, res)
    for key in space.unique_keys():
        module = space.build_op(key)
        with torch.no_grad():
            y = module(torch.zeros(input_shape(key)))
        expected = (1, key.out[2], key.out[0], key.out[1]) if len(key.out) == 3 else (1, *key.out)
        assert tuple(y.shape) == expected, key


@pytest.mark.parametrize(("name", "res"), SETTINGS)
def test_reference_net_builds_and_chains(name, res):
    space = get_space(name, res)
    net = space.build(space.reference_choices())
    with torch.no_grad():
        y = net(torch.zeros(space.input_shape))
    assert y.shape == (1, space.layers[-1].candidates[0].out[0])


@pytest.mark.parametrize(("name", "res"), SETTINGS)
def test_keys_chain_shape_to_shape(name, res):
    space = get_space(name, res)
    for prev, nxt in zip(space.layers, space.layers[1:]):
        assert {k.out for k in prev.candidates} == {k.inp for k in nxt.candidates}, (prev.name, nxt.name)


def test_proxyless_shape_of_the_space():
    space = get_space("proxyless", 224)
    assert len(space.searchable) == 21
    sizes = [len(layer.candidates) for layer in space.searchable]
    assert set(sizes) == {6, 7}  # 6 MBConvs, plus zero where the residual shape allows
    assert sizes.count(6) == 6  # the first layer of each of the six stages has no zero op
    assert [layer.name for layer in space.layers if not layer.searchable] == \
        ["stem", "first", "feature_mix", "pool", "classifier"]
    assert space.layers[-1].candidates[0].out == (1000,)


def test_proxyless_cifar_setting_keeps_more_resolution():
    assert get_space("proxyless", 32).layers[-3].candidates[0].inp[:2] == (4, 4)
    assert get_space("proxyless", 224).layers[-3].candidates[0].inp[:2] == (7, 7)


def test_width_multiplier_scales_channels():
    slim, full = get_space("proxyless", 224, 0.5), get_space("proxyless", 224)
    assert slim.id == "proxyless-w0.5"
    assert slim.layers[2].candidates[0].out[-1] < full.layers[2].candidates[0].out[-1]
    assert slim.layers[2].candidates[0].out[-1] % 8 == 0


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="resolution"):
        get_space("proxyless", 100)
    with pytest.raises(ConfigError, match="choices"):
        get_space("proxyless", 32).keys_for([0, 1])


def test_fbnet_shape_of_the_space():
    space = get_space("fbnet", 32)
    assert len(space.searchable) == 22
    assert all(len(layer.candidates) == 9 for layer in space.searchable)
    assert len(space.unique_keys()) == 112


@pytest.mark.skipif(not (SHARED / "data/hwnasbench/fbnet_space.json").exists(),
                    reason="reference data ../shared/data/hwnasbench is not beside this checkout")
@pytest.mark.parametrize(("res", "dataset"), [(32, "cifar100"), (224, "ImageNet")])
def test_fbnet_keys_correspond_one_to_one_with_hwnasbench(res, dataset):
    ref = json.loads((SHARED / "data/hwnasbench/fbnet_space.json").read_text())["datasets"][dataset]
    space = get_space("fbnet", res)
    # per layer and candidate, in order
    for layer, ref_layer in zip(space.searchable, ref["layers"], strict=True):
        assert [hwnasbench_key(k) for k in layer.candidates] == [c["lut_key"] for c in ref_layer["candidates"]]
    ours = [hwnasbench_key(k) for k in space.unique_keys()]
    theirs = {o["lut_key"] for o in ref["fixed_ops"]}
    theirs |= {c["lut_key"] for lay in ref["layers"] for c in lay["candidates"]}
    assert len(ours) == len(set(ours)) == ref["num_unique_lut_keys"]
    assert set(ours) == theirs


def test_free_ops_are_not_measured():
    space = get_space("proxyless", 32)
    assert all(k.op not in FREE_OPS for k in space.measurable_keys())
    assert len(space.unique_keys()) - len(space.measurable_keys()) == 5  # one zero op per stage with a residual
