import pytest
from hypothesis import given
from hypothesis import strategies as st

from hwnas.core.errors import ConfigError
from hwnas.spaces import OpKey

names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
shapes = st.lists(st.integers(1, 4096), min_size=1, max_size=3).map(tuple)
params = st.lists(st.tuples(st.from_regex(r"[a-z]{1,5}", fullmatch=True), st.integers(0, 999)), max_size=5).map(tuple)


@given(names, shapes, shapes, params)
def test_key_string_round_trips(op, inp, out, prm):
    key = OpKey(op, inp, out, prm)
    assert OpKey.parse(str(key)) == key


def test_design_example_parses():
    key = OpKey.parse("mbconv-i112x112x16-o56x56x24-e3-k5-s2-skip0")
    assert key.inp == (112, 112, 16) and key.out == (56, 56, 24)
    assert (key["e"], key["k"], key["s"], key["skip"]) == (3, 5, 2, 0)


@pytest.mark.parametrize("text", ["", "mbconv", "mbconv-112x112-o1", "mbconv-i1-o1-e", "Mb-i1-o1", "x-i1-o1-3e"])
def test_malformed_keys_raise_config_error(text):
    with pytest.raises(ConfigError):
        OpKey.parse(text)
