import pytest

from hwnas.core.errors import UnknownNameError
from hwnas.core.registry import Registry


def test_duplicate_name_raises():
    reg: Registry[int] = Registry("thing")
    reg.register("a")(1)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a")(2)


def test_unknown_name_lists_choices_and_suggests_closest():
    reg: Registry[int] = Registry("thing")
    for name in ("proxyless", "fbnet"):
        reg.register(name)(0)
    with pytest.raises(UnknownNameError) as info:
        reg.get("proxyles")
    assert "did you mean 'proxyless'" in info.value.hint
    assert "fbnet" in info.value.hint


def test_list_filters_by_glob():
    reg: Registry[int] = Registry("thing")
    for name in ("cpu", "cpu-tflite", "gpu"):
        reg.register(name)(0)
    assert reg.list("cpu*") == ["cpu", "cpu-tflite"]
    assert "gpu" in reg and "tpu" not in reg
