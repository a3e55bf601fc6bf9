"""Untrusted input: every malformed or hostile file gets exit 2 and a reason, never a traceback."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from hwnas.cli import main
from hwnas.export import export, resolve_source

SMALL = "proxyless@32:066646660666066626662"


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return export(resolve_source(SMALL), "onnx", tmp_path_factory.mktemp("good") / "good.onnx").path


def external_model(folder: Path, location: str) -> Path:
    """A one-Conv model whose weight lives in external data at ``location``."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 1, 1], vals=np.zeros(12, np.float32).tobytes(), raw=True)
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "48")):
        w.external_data.add(key=k, value=v)
    w.ClearField("raw_data")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w])
    path = folder / "ext.onnx"
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    return path


def rank2_model(folder: Path) -> Path:
    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 4], np.zeros(32, np.float32))
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w])
    path = folder / "rank2.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def case(tmp: Path, good: Path, name: str) -> tuple[list[str], str]:
    """(command line, what the message must say) for one corpus entry."""
    check = ["check", "--device", "cpu", "--max-latency-ms", "10"]
    if name == "truncated":
        data = good.read_bytes()
        (tmp / "t.onnx").write_bytes(data[: len(data) // 2])
        return [*check, str(tmp / "t.onnx")], "t.onnx"
    if name == "garbage":
        (tmp / "g.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
        return [*check, str(tmp / "g.onnx")], "g.onnx"
    if name == "empty":
        (tmp / "e.onnx").write_bytes(b"")
        return [*check, str(tmp / "e.onnx")], "empty"
    if name == "missing":
        return [*check, str(tmp / "nope.onnx")], "does not exist"
    if name == "traversal":
        (tmp / "secret.bin").write_bytes(bytes(48))
        (tmp / "m").mkdir()
        return [*check, str(external_model(tmp / "m", "../secret.bin"))], "outside the model's folder"
    if name == "absolute":
        return [*check, str(external_model(tmp, "/etc/hostname"))], "outside the model's folder"
    if name == "symlink":
        (tmp / "secret.bin").write_bytes(bytes(48))
        (tmp / "m").mkdir()
        (tmp / "m" / "w.bin").symlink_to(tmp / "secret.bin")
        return [*check, str(external_model(tmp / "m", "w.bin"))], "outside the model's folder"
    if name == "external-missing":
        return [*check, str(external_model(tmp, "w.bin"))], "missing"
    if name == "external-short":
        (tmp / "w.bin").write_bytes(bytes(10))
        return [*check, str(external_model(tmp, "w.bin"))], "truncated"
    if name == "rank2":
        return [*check, str(rank2_model(tmp))], "rank 2"
    if name == "too-large":
        os.environ["HWNAS_MAX_MODEL_MB"] = "0.001"
        return [*check, str(good)], "over the"
    if name == "budget-garbage":
        (tmp / "b.toml").write_text("[[budget]\n")
        return ["check", "--device", "cpu", "--budget", str(tmp / "b.toml"), str(good)], "not valid TOML"
    if name == "budget-no-unit":
        (tmp / "b.toml").write_text("[[budget]]\nmemory = 12\n")
        return ["check", "--device", "cpu", "--budget", str(tmp / "b.toml"), str(good)], "no unit"
    if name == "pickle-weights":
        (tmp / "w.pt").write_bytes(pickle.dumps({"a": _RunsCode()}))
        return ["export", SMALL, "--weights", str(tmp / "w.pt"), "--out", str(tmp / "x.onnx")], "not a loadable"
    if name == "tflite-garbage":
        (tmp / "m.tflite").write_bytes(b"\x00" * 64)
        return ["verify", str(tmp / "m.tflite"), "--device", "cpu-tflite"], "not a TFLite model"
    if name == "wrong-format":
        return ["verify", str(good), "--device", "cpu-tflite"], "runs .tflite models"
    raise AssertionError(name)


CORPUS = ["truncated", "garbage", "empty", "missing", "traversal", "absolute", "symlink", "external-missing",
          "external-short", "rank2", "too-large", "budget-garbage", "budget-no-unit", "pickle-weights",
          "tflite-garbage", "wrong-format"]


@pytest.mark.parametrize("name", CORPUS)
def test_bad_input_exits_2_with_a_reason(name, good, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HWNAS_MAX_MODEL_MB", "2048")
    argv, reason = case(tmp_path, good, name)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert reason in " ".join(err.split()), err
    assert "fix:" in err and "Traceback" not in err
