from pathlib import Path

import pytest

from conftest import HAS_TFLITE
from hwnas.devices import get_device, list_devices, load_device_file
from hwnas.errors import ConfigError, UnknownNameError

BUILTIN = {"cpu", "cpu-tflite", "pixel", "gpu", "cuda"}


def test_builtin_devices_are_registered():
    assert BUILTIN <= set(list_devices())


@pytest.mark.parametrize("name", list_devices())
def test_every_registered_device_loads_and_reports_availability(name):
    dev = get_device(name)
    assert dev.name == name
    ok, why = dev.availability()
    assert isinstance(ok, bool) and why
    assert (why == "ready") == ok


def test_host_devices_are_ready_here():
    assert get_device("cpu").availability() == (True, "ready")
    assert get_device("cpu-tflite").availability()[0] is HAS_TFLITE


def test_hardware_devices_say_why_not_ready():
    # This host has no phone and no NVIDIA GPU; each must say what to install or attach.
    ok, why = get_device("pixel").availability()
    assert not ok and ("adb" in why or "phone" in why)
    ok, why = get_device("cuda").availability()
    assert not ok and ("CUDA" in why or "GPU" in why)
    ok, why = get_device("gpu").availability()
    assert not ok and ("TensorRT" in why or "NVIDIA" in why)


def test_device_is_frozen():
    dev = get_device("cpu")
    with pytest.raises(AttributeError):
        dev.threads = 4
    with pytest.raises(TypeError):
        dev.options["x"] = 1


def test_unknown_device_suggests_closest():
    with pytest.raises(UnknownNameError) as info:
        get_device("cpu-tflit")
    assert "cpu-tflite" in info.value.hint


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mine.toml"
    path.write_text(text)
    return path


def test_user_descriptor_file(tmp_path):
    path = _write(tmp_path, 'name = "mine"\nbackend = "onnxruntime"\nthreads = 2\n'
                            '[options]\ngraph_optimization_level = "basic"\n')
    dev = get_device(str(path))
    assert (dev.name, dev.threads, dev.option("graph_optimization_level")) == ("mine", 2, "basic")


def test_devices_path_env_adds_a_folder(tmp_path, monkeypatch):
    _write(tmp_path, 'name = "mine"\nbackend = "onnxruntime"\n')
    monkeypatch.setenv("HWNAS_DEVICES_PATH", str(tmp_path))
    assert "mine" in list_devices()
    assert get_device("mine").backend == "onnxruntime"


@pytest.mark.parametrize(("text", "key"), [
    ('name = "x"\nbackend = "onnxruntime"\nthreads = "two"\n', "threads"),
    ('name = "x"\nbackend = "nope"\n', "backend"),
    ('name = "x"\n', "backend"),
    ('name = "x"\nbackend = "onnxruntime"\nprecision = "fp64"\n', "precision"),
    ('name = "x"\nbackend = "onnxruntime"\nthreads = 0\n', "threads"),
    ('name = "x"\nbackend = "onnxruntime"\ncolour = 1\n', "colour"),
    ('name = "x"\nbackend = "onnxruntime"\n[connection]\nkind = "wifi"\n', "connection.kind"),
])
def test_invalid_descriptor_names_file_and_key(tmp_path, text, key):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_device_file(path)
    assert str(path) in info.value.message and f"'{key}'" in info.value.message
    assert info.value.hint


def test_malformed_toml_names_the_file(tmp_path):
    path = _write(tmp_path, 'name = "x\nbackend = \n')
    with pytest.raises(ConfigError) as info:
        load_device_file(path)
    assert str(path) in info.value.message and "TOML" in info.value.message
