import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hwnas.core.errors import ConfigError
from hwnas.spaces import SPACES, get_space
from hwnas.spaces.arch import Arch, num_choices, random_arch, sample_choices

SETTINGS = [(name, res) for name in SPACES for res in SPACES.get(name).resolutions]


@st.composite
def archs(draw):
    name, res = draw(st.sampled_from(SETTINGS))
    width = draw(st.sampled_from([1.0, 0.5, 1.4])) if name == "proxyless" else 1.0
    space = get_space(name, res, width)
    choices = [draw(st.integers(0, n - 1)) for n in num_choices(space)]
    return Arch.of(space, choices)


@given(archs())
@settings(max_examples=60, deadline=None)
def test_arch_string_round_trips(arch):
    assert Arch.parse(str(arch)) == arch
    assert Arch.parse(str(arch)).id == arch.id and len(arch.id) == 12


def test_reference_arch_string():
    space = get_space("proxyless", 224)
    arch = Arch.of(space, space.reference_choices())
    assert str(arch) == "proxyless@224:" + "1" * 21


@pytest.mark.parametrize("text", ["proxyless@224:111", "proxyless@224:" + "9" * 21, "nope@224:1", "proxyless:11"])
def test_bad_arch_strings_are_config_errors(text):
    with pytest.raises(ConfigError):
        Arch.parse(text)


def test_sampling_is_uniform_within_each_layer_and_in_range():
    space = get_space("proxyless", 32)
    c = sample_choices(space, 20000, np.random.default_rng(0))
    n = num_choices(space)
    assert c.shape == (20000, 21) and (c >= 0).all() and (c < n).all()
    for i in range(c.shape[1]):
        freq = np.bincount(c[:, i], minlength=n[i]) / len(c)
        assert np.allclose(freq, 1 / n[i], atol=0.02)


def test_arch_builds_the_exact_network():
    space = get_space("fbnet", 32)
    arch = random_arch(space, np.random.default_rng(1))
    net = arch.build()
    keys = space.keys_for(arch.choices)
    assert len(net) == len(keys)
    for module, key in zip(net, keys):
        assert repr(module) == repr(space.build_op(key))
    with torch.no_grad():
        assert net(torch.zeros(space.input_shape)).shape == (1, 100)
