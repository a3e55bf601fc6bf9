import json
from pathlib import Path

import pytest

from conftest import HAS_TFLITE
from conftest import cli as _cli
from hwnas.core.errors import ConfigError, UnknownNameError
from hwnas.devices.registry import get_device, list_devices, load_device_file

BUILTIN = {"cpu", "cpu-int8", "cpu-tflite", "cpu-tflite-int8", "pixel", "pixel-int8", "gpu", "cuda"}


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
    assert get_device("cpu-int8").availability() == (True, "ready")
    assert get_device("cpu-tflite").availability()[0] is HAS_TFLITE
    assert get_device("cpu-tflite-int8").availability()[0] is HAS_TFLITE


def test_hardware_devices_say_why_not_ready():
    # This host has no phone and no NVIDIA GPU; each must say what to install or attach.
    for name in ("pixel", "pixel-int8"):
        ok, why = get_device(name).availability()
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
    ('name = "x"\nbackend = "torch_cuda"\n[connection]\nkind = "cuda"\nindex = "abc"\n', "connection.index"),
    ('name = "x"\nbackend = "torch_cuda"\n[connection]\nkind = "cuda"\nindex = [0]\n', "connection.index"),
    ('name = "x"\nbackend = "torch_cuda"\n[connection]\nindex = -1\n', "connection.index"),
    ('name = "x"\nbackend = "onnxruntime"\n[connection]\nport = 5\n', "connection.port"),
    ('name = "x"\nbackend = "onnxruntime"\nthreads = 100000\n', "threads"),
    ('name = "x"\nbackend = "onnxruntime"\nthreads = true\n', "threads"),
    ('backend = "onnxruntime"\n', "name"),
    ('name = "../x"\nbackend = "onnxruntime"\n', "name"),
    ('name = "x"\nbackend = 3\n', "backend"),
    ('name = "x"\nbackend = "onnxruntime"\nschema_version = 2\n', "schema_version"),  # a newer hwnas's key
    ('name = "x"\nbackend = "onnxruntime"\nconnection = "local"\n', "connection"),
    ('name = "x"\nbackend = "onnxruntime"\noptions = [1]\n', "options"),
    ('name = "x"\nbackend = "litert"\n[options]\nuse_xnnpack = "yes"\n', "options.use_xnnpack"),
    ('name = "x"\nbackend = "onnxruntime"\n[options]\ngraph_optimization_level = "max"\n',
     "options.graph_optimization_level"),
    ('name = "x"\nbackend = "onnxruntime"\n[options]\ngraph_optimisation_level = "all"\n',
     "options.graph_optimisation_level"),
    ('name = "x"\nbackend = "onnxruntime"\nprecision = "int8"\n[options]\nquant_weights = "per-row"\n',
     "options.quant_weights"),
    ('name = "x"\nbackend = "litert"\nprecision = "int8"\n[options]\nquant_activations = "uint8"\n',
     "options.quant_activations"),  # LiteRT's integer kernels take int8 activations only
    ('name = "x"\nbackend = "litert"\nprecision = "int8"\n[options]\nquant_calibration = "entropy"\n',
     "options.quant_calibration"),
    ('name = "x"\nbackend = "tensorrt"\n[options]\nworkspace_mb = -5\n', "options.workspace_mb"),
    ('name = "x"\nbackend = "android"\n[options]\ntaskset = "f0; reboot"\n', "options.taskset"),
    ('name = "x"\nbackend = "android"\n[options]\nextra_flags = ["--x=1;reboot"]\n', "options.extra_flags.0"),
    ('name = "x"\nbackend = "android"\n[options]\nmax_temp_c = "hot"\n', "options.max_temp_c"),
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


@pytest.mark.parametrize(("content", "problem"), [
    (b"", "is empty"), (b"\x00\xff\xfe\x80", "not text"), (b'name = "x"\nbackend = "onnx', "not valid TOML"),
    (b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply"),
])
def test_unreadable_descriptor_is_one_error_naming_the_file(tmp_path, content, problem):
    path = tmp_path / "mine.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_device_file(path)
    assert str(path) in info.value.message and problem in info.value.message and info.value.hint


def test_options_keep_what_was_written_and_with_options_is_checked(tmp_path):
    dev = get_device(str(_write(tmp_path, 'name = "x"\nbackend = "android"\n[options]\nmax_temp_c = 60\n')))
    assert dict(dev.options) == {"max_temp_c": 60.0}  # defaults stay in code, not in the fingerprint
    assert dev.with_options(serials=["A1"]).option("serials") == ["A1"]
    with pytest.raises(ConfigError, match="options.serials"):
        dev.with_options(serials="A1")



def test_bad_descriptor_in_a_devices_folder(tmp_path, monkeypatch, capsys):
    (tmp_path / "good.toml").write_text('name = "good"\nbackend = "onnxruntime"\n')
    (tmp_path / "bad.toml").write_text('name = "bad"\nbackend = "onnxruntime"\nthreads = 100000\n')
    monkeypatch.setenv("HWNAS_DEVICES_PATH", str(tmp_path))
    code, text = _cli(capsys, "devices", "--json")
    rows = {r["name"]: r for r in json.loads(text)}  # JSON survives the whitespace being joined
    assert code == 0 and rows["good"]["ready"] and not rows["good"]["broken"]
    assert rows["bad"]["broken"] and "threads" in rows["bad"]["status"] and rows["bad"]["file"].endswith("bad.toml")
    assert rows["cpu"]["ready"]  # the others are still listed
    code, text = _cli(capsys, "profile", "--device", "bad", "-q")
    assert code == 2 and "bad.toml" in text and "'threads'" in text and "fix:" in text
    code, text = _cli(capsys, "profile", "--device", str(tmp_path / "bad.toml"), "-q")
    assert code == 2 and "less than or equal to 1024" in text


def test_devices_path_that_is_not_a_folder_is_an_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HWNAS_DEVICES_PATH", str(tmp_path / "nope"))
    code, text = _cli(capsys, "devices")
    assert code == 2 and "HWNAS_DEVICES_PATH" in text and "nope" in text


@pytest.mark.parametrize("backend, option", [("onnxruntime", 'quant_calibration = "entropy"'),
                                             ("litert", 'quant_weights = "per-tensor"')])
def test_quantization_settings_apply_at_int8_only(tmp_path, backend, option):
    dev = get_device(str(_write(tmp_path, f'name = "x"\nbackend = "{backend}"\n[options]\n{option}\n')))
    ok, why = dev.availability()
    assert not ok and option.split()[0] in why and 'precision = "int8"' in why

