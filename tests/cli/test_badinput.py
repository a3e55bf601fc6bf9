"""The bad-input corpus: every hostile input a new user (or a killed run) can hand hwnas, and what it must say.

The cases are data, in ``tests/data/badinput/cases.toml``: each names a command line, the file it needs
(made from a known-good one by one change, or written as given), the exit code it must end with and a phrase
the message must hold. Every case also asserts what holds for all of them: no traceback, and for exit 2 a
message that says how to fix it (hwnas's ``fix:`` line, or click's usage line with ``--help``).

File recipes (a case's ``file``, and ``file2`` for a second one):
- ``from = "table" | "good" | "tflite" | "run" | "budgets" | "device:<name>"``: a copy of a known-good one
  (the shipped cpu 32 px table; an exported ONNX / TFLite model; a finished search run directory; the shipped
  budgets example; a shipped device descriptor). ``at`` names the file inside a run directory to change.
- ``set = {"a.b.@0.c" = 'JSON'}`` sets keys (``@0`` is a mapping's first key, a number indexes a list);
  ``drop = ["a.b"]`` deletes them; ``text`` replaces the whole file, ``bytes_hex`` likewise in binary;
  ``truncate = 0.5`` keeps that share of the bytes; ``random = N`` is N random bytes; ``nest = N`` is JSON
  nested N deep; ``make = "<builder>"`` calls one of :data:`BUILDERS` below (models no tool writes).
- ``from = "hosttable"``: the shipped table as if measured on this host (``conftest.stamp_for_this_host``), for
  cases about another host's table that must not depend on which host runs them.
- ``nest_toml = N``: a TOML array nested N deep; ``pickle = true``: a pickle whose unpickling would run code;
  ``corrupt_line = i``: line i of a JSON-lines file made unparseable, the lines after it kept;
  ``sidecar = false`` / ``sidecar_set`` / ``sidecar_text``: a TFLite file's metadata sidecar left out or changed.
- ``name`` is the file's name (default: the source's name). ``env`` sets environment variables for the case.

Placeholders in args: ``{tmp}`` (the case's folder), ``{table}`` (the shipped table), ``{hosttables}`` (the
stamped folder), ``{small}`` (an architecture), ``{good}``/``{tflite}``/``{run}`` (the known-good inputs),
``{file}``/``{file2}``. ``says`` must appear in the output (whitespace ignored: rich wraps), ``never_says``
must not.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import HAS_TFLITE, ROOT, TFLITE_MISSING, invoke

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CASES_FILE = ROOT / "tests" / "data" / "badinput" / "cases.toml"
SMALL = "proxyless@32:066646660666066626662"
TABLE = ROOT / "latency_tables" / "cpu-proxyless-32.json"


# -- known-good inputs, made once ----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def good(tmp_path_factory) -> Path:
    from hwnas.deploy.export import export, resolve_source

    return export(resolve_source(SMALL), "onnx", tmp_path_factory.mktemp("good") / "good.onnx").path


@pytest.fixture(scope="session")
def good_tflite(tmp_path_factory) -> Path:
    if not HAS_TFLITE:
        pytest.skip(TFLITE_MISSING)
    from hwnas.deploy.export import export, resolve_source

    return export(resolve_source(SMALL), "tflite", tmp_path_factory.mktemp("good") / "good.tflite").path


@pytest.fixture(scope="session")
def good_run(tmp_path_factory) -> Path:
    """A finished (tiny) search run directory."""
    from hwnas.search.run import SearchConfig, run_search

    out = tmp_path_factory.mktemp("good") / "run"
    cfg = SearchConfig(table=str(TABLE), strategy="random", latency_ms=3.0, evaluations=2, final_epochs=1,
                       limit=120)
    run_search(cfg, out, progress=False)
    return out


# -- models no tool writes --------------------------------------------------------------------------------------
def _model(folder: Path, name: str, inputs, nodes, outputs, inits=()) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    path = folder / name
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    return path


def _conv(folder: Path, name: str, shape, dtype=TensorProto.FLOAT) -> Path:
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 1, 1], np.zeros(12, np.float32))
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"])]
    if dtype != TensorProto.FLOAT:
        nodes = [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
                 helper.make_node("Conv", ["xf", "w"], ["y"])]
    return _model(folder, name, [helper.make_tensor_value_info("x", dtype, shape)], nodes,
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [shape[0], 4, *shape[2:]])], [w])


def _external(folder: Path, location: str, offset: str = "0", length: str = "48") -> Path:
    """A one-Conv model whose weight lives in external data at ``location``."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 1, 1], vals=np.zeros(12, np.float32).tobytes(), raw=True)
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", offset), ("length", length)):
        w.external_data.add(key=k, value=v)
    w.ClearField("raw_data")
    return _model(folder, "ext.onnx", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                  [helper.make_node("Conv", ["x", "w"], ["y"])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w])


def _secret(tmp: Path) -> Path:
    (tmp / "secret.bin").write_bytes(bytes(48))
    (tmp / "m").mkdir(exist_ok=True)
    return tmp / "m"


def _two_inputs(tmp: Path) -> Path:
    x = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 8, 8]) for n in ("a", "b")]
    return _model(tmp, "two.onnx", x, [helper.make_node("Add", ["a", "b"], ["y"])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])


def _rank2(tmp: Path) -> Path:
    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 4], np.zeros(32, np.float32))
    return _model(tmp, "rank2.onnx", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                  [helper.make_node("MatMul", ["x", "w"], ["y"])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w])


def _with_metadata(good: Path, tmp: Path, key: str, value: str) -> Path:
    model = onnx.load(str(good))
    for p in model.metadata_props:
        if p.key == key:
            p.value = value
    path = tmp / "meta.onnx"
    onnx.save(model, str(path))
    return path


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch hwnas-pwned",))


def _pickle(tmp: Path) -> Path:
    (tmp / "w.pt").write_bytes(pickle.dumps({"a": _RunsCode()}))
    return tmp / "w.pt"


def _safetensors_header(tmp: Path, header: bytes, declared: int | None = None) -> Path:
    size = len(header) if declared is None else declared
    (tmp / "w.safetensors").write_bytes(size.to_bytes(8, "little") + header)
    return tmp / "w.safetensors"


BUILDERS = {
    "external-traversal": lambda tmp, ctx: _external(_secret(tmp), "../secret.bin"),
    "external-absolute": lambda tmp, ctx: _external(tmp, "/etc/hostname"),
    "external-symlink": lambda tmp, ctx: (_secret(tmp) / "w.bin").symlink_to(tmp / "secret.bin")
    or _external(tmp / "m", "w.bin"),
    "external-missing": lambda tmp, ctx: _external(tmp, "w.bin"),
    "external-short": lambda tmp, ctx: (tmp / "w.bin").write_bytes(bytes(10)) and _external(tmp, "w.bin"),
    "external-offset-text": lambda tmp, ctx: (tmp / "w.bin").write_bytes(bytes(48)) and _external(tmp, "w.bin",
                                                                                                 offset="abc"),
    "external-offset-negative": lambda tmp, ctx: (tmp / "w.bin").write_bytes(bytes(48)) and _external(
        tmp, "w.bin", offset="-8"),
    "external-length-huge": lambda tmp, ctx: (tmp / "w.bin").write_bytes(bytes(48)) and _external(
        tmp, "w.bin", length=str(2**62)),
    "two-inputs": lambda tmp, ctx: _two_inputs(tmp),
    "rank2": lambda tmp, ctx: _rank2(tmp),
    "int-input": lambda tmp, ctx: _conv(tmp, "int.onnx", [1, 3, 8, 8], TensorProto.INT64),
    "dynamic-dims": lambda tmp, ctx: _conv(tmp, "dyn.onnx", ["N", 3, "H", "W"]),
    "huge-dims": lambda tmp, ctx: _conv(tmp, "huge.onnx", [1, 3, 1_000_000, 1_000_000]),
    "zero-dims": lambda tmp, ctx: _conv(tmp, "zero.onnx", [1, 3, 0, 8]),
    "classes-huge": lambda tmp, ctx: _with_metadata(ctx["good"](), tmp, "hwnas.classes", "99999999999"),
    "classes-negative": lambda tmp, ctx: _with_metadata(ctx["good"](), tmp, "hwnas.classes", "-3"),
    "classes-text": lambda tmp, ctx: _with_metadata(ctx["good"](), tmp, "hwnas.classes", "ten"),
    "arch-garbage": lambda tmp, ctx: _with_metadata(ctx["good"](), tmp, "hwnas.arch", "proxyless@32:zzz"),
    "pickle-weights": lambda tmp, ctx: _pickle(tmp),
    "safetensors-garbage": lambda tmp, ctx: _safetensors_header(tmp, b"{not json at all"),
    "safetensors-oversized": lambda tmp, ctx: _safetensors_header(tmp, b"{}", declared=2**40),
    "safetensors-empty": lambda tmp, ctx: _safetensors_header(tmp, b"{}"),
}


# -- recipes ----------------------------------------------------------------------------------------------------
def _step(node, part: str):
    if isinstance(node, dict) and part == "@0":
        return next(iter(node))
    return int(part) if isinstance(node, list) else part


def _edit(data, path: str, value=None, delete: bool = False) -> None:
    parts = path.split(".")
    node = data
    for part in parts[:-1]:
        node = node[_step(node, part)]
    last = _step(node, parts[-1])
    if delete:
        del node[last]
    else:
        node[last] = value


def _mutated_bytes(src: Path, spec: dict) -> bytes:
    if "text" in spec:
        return spec["text"].encode()
    if "bytes_hex" in spec:
        return bytes.fromhex(spec["bytes_hex"])
    if "random" in spec:
        return np.random.default_rng(0).bytes(int(spec["random"]))
    if "nest" in spec:
        return ("[" * spec["nest"] + "]" * spec["nest"]).encode()
    if "nest_toml" in spec:
        return ("a = " + "[" * spec["nest_toml"] + "]" * spec["nest_toml"] + "\n").encode()
    if spec.get("pickle"):
        return pickle.dumps({"w": _RunsCode()})
    raw = src.read_bytes()
    if "corrupt_line" in spec:  # one line of a JSON-lines file made unparseable, the lines after it kept
        lines = raw.decode().splitlines(keepends=True)
        lines[spec["corrupt_line"]] = '{"arch": "torn\n'
        return "".join(lines).encode()
    if "truncate" in spec:
        return raw[: int(len(raw) * spec["truncate"])]
    if "set" in spec or "drop" in spec:
        data = copy.deepcopy(json.loads(raw) if src.suffix == ".json" else tomllib.loads(raw.decode()))
        for path, value in spec.get("set", {}).items():
            _edit(data, path, json.loads(value))
        for path in spec.get("drop", []):
            _edit(data, path, delete=True)
        if src.suffix != ".json":
            raise AssertionError("set/drop edit JSON files only; write TOML cases with text")
        return json.dumps(data).encode()
    return raw


def make_file(spec: dict, tmp: Path, ctx: dict) -> Path:
    if "make" in spec:
        return BUILDERS[spec["make"]](tmp, ctx)
    source = spec.get("from")
    if source == "run":
        run = tmp / spec.get("name", "run")
        shutil.copytree(ctx["run"](), run)
        if "at" in spec:
            target = run / spec["at"]
            data = _mutated_bytes(target, spec) if target.exists() or "text" in spec else b""
            if spec.get("remove"):
                target.unlink()
            else:
                target.write_bytes(data)
        return run
    src = {"table": lambda: TABLE, "hosttable": lambda: ctx["hosttables"]() / TABLE.name,
           "good": ctx["good"], "tflite": ctx["tflite"],
           "budgets": lambda: ROOT / "tools" / "ci" / "budgets.toml",
           None: lambda: tmp / "none.json"}.get(source)
    if src is None and source.startswith("device:"):
        src = lambda: ROOT / "devices" / f"{source.split(':', 1)[1]}.toml"  # noqa: E731
    src_path = src()
    path = tmp / spec.get("name", src_path.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_mutated_bytes(src_path, spec))
    if source == "tflite" and spec.get("sidecar", True) and Path(f"{src_path}.hwnas.json").exists():
        side = Path(f"{src_path}.hwnas.json")
        sidecar = {k[len("sidecar_"):]: v for k, v in spec.items() if k.startswith("sidecar_")}
        Path(f"{path}.hwnas.json").write_bytes(_mutated_bytes(side, sidecar) if sidecar else side.read_bytes())
    return path


def _load_cases() -> list:
    data = tomllib.loads(CASES_FILE.read_text(encoding="utf-8"))
    out = []
    for case in data["case"]:
        variants = case["args"] if case["args"] and isinstance(case["args"][0], list) else [case["args"]]
        needs_tflite = "{tflite}" in json.dumps(case) or '"tflite"' in json.dumps(case)
        for i, args in enumerate(variants):
            cid = case["id"] if len(variants) == 1 else f"{case['id']}-{i}"
            marks = [pytest.mark.tflite] if needs_tflite else []
            out.append(pytest.param({**case, "args": args}, id=cid, marks=marks))
    return out


CASES = _load_cases()
_TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\s*File \".*\", line \d+", re.M)


def test_the_corpus_is_large_and_every_id_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 200, f"the corpus has {len(ids)} cases"


@pytest.mark.parametrize("case", CASES)
def test_bad_input(case, tmp_path, capsys, monkeypatch, request):
    monkeypatch.chdir(tmp_path)  # relative default outputs land here, never in the checkout
    for key, value in case.get("env", {}).items():
        monkeypatch.setenv(key, value.replace("{tmp}", str(tmp_path)))
    ctx = {"good": lambda: request.getfixturevalue("good"), "tflite": lambda: request.getfixturevalue("good_tflite"),
           "run": lambda: request.getfixturevalue("good_run"),
           "hosttables": lambda: request.getfixturevalue("host_tables")}
    files = {k: str(make_file(case[k], tmp_path, ctx)) for k in ("file", "file2") if k in case}
    fill = {"{tmp}": str(tmp_path), "{table}": str(TABLE), "{small}": SMALL}
    args = []
    for a in case["args"]:
        for key, value in fill.items():
            a = a.replace(key, value)
        for key in ("good", "tflite", "run", "hosttables"):
            if "{" + key + "}" in a:
                a = a.replace("{" + key + "}", str(ctx[key]()))
        for key, value in files.items():
            a = a.replace("{" + key + "}", value)
        args.append(a)
    code, said = invoke(capsys, args)
    flat = " ".join(re.sub(r"[│╭╮╰╯─]", " ", said).split())
    squeezed = "".join(flat.split()).lower()  # rich wraps long paths anywhere: compare without whitespace

    def found(phrase: str) -> bool:
        return "".join(phrase.replace("{tmp}", str(tmp_path)).split()).lower() in squeezed

    assert not _TRACEBACK.search(said), said
    assert code == case["exit"], f"exit {code}, expected {case['exit']}: {said}"
    for phrase in [case["says"]] if isinstance(case.get("says"), str) else case.get("says", []):
        assert found(phrase), f"expected {phrase!r} in: {flat}"
    for phrase in case.get("never_says", []):
        assert not found(phrase), f"{phrase!r} must not reach the user: {flat}"
    if case["exit"] == 2:
        assert "fix:" in flat or "--help" in flat or "Error" in flat, flat
    assert not (tmp_path / "hwnas-pwned").exists() and not (ROOT / "hwnas-pwned").exists()
