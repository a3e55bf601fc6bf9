"""The tables shipped in latency_tables/ are complete, valid and say where they were measured."""

from pathlib import Path

import pytest

from conftest import ROOT
from hwnas.tables.table import Table
from hwnas.tables.view import space_of

SHIPPED = sorted((ROOT / "latency_tables").glob("*.json"))
EXPECTED = {f"{d}-proxyless-{r}" for d in ("cpu", "cpu-tflite") for r in (224, 32)}


def test_the_promised_tables_are_shipped():
    assert EXPECTED <= {p.stem for p in SHIPPED}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: Path(p).stem)
def test_shipped_table_is_complete(path):
    table = Table.load(path)
    assert table.file_stem == path.stem
    assert set(table.entries) == {str(k) for k in space_of(table).unique_keys()}
    fp = table.fingerprint
    assert fp["runtime"] in {"onnxruntime", "ai-edge-litert"} and fp["runtime_version"] and fp["host_cpu"]
    assert table.settings["min_runs"] >= 50 and table.settings["min_seconds"] >= 1.0
    for entry in table.entries.values():
        if entry.latency:
            assert entry.latency.n >= 50 and entry.latency.p10 <= entry.latency.median <= entry.latency.p90
            assert entry.memory["weight_bytes"] >= 0 and entry.memory["artifact_bytes"] > 0
