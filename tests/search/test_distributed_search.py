"""A whole search under torchrun: two CPU processes (gloo) take the same decisions, rank 0 alone writes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "latency_tables" / "cpu-proxyless-32.json"


@pytest.mark.slow
@pytest.mark.parametrize("strategy, port, rows", [
    (["--strategy", "random", "--estimator", "train", "-n", "2", "--estimator-epochs", "1"], "29533", 2),
    # the ProxylessNAS supernet: DDP weight steps on one sampled path, α's gradient averaged over the ranks
    (["--strategy", "proxyless", "--search-epochs", "2", "--loss", "add"], "29534", 2),
])
def test_a_search_under_torchrun_with_two_processes_writes_one_run(tmp_path, strategy, port, rows):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                           port, "-m", "hwnas", "search", "--table", str(TABLE), "--latency-ms", "2.5", *strategy,
                           "--epochs", "1", "--limit", "96", "--batch-size", "32", "--train-device", "cpu",
                           "--out", str(out), "-q"], capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("best:") == 1  # rank 0 reports; rank 1 says nothing
    lines = (out / "candidates.jsonl").read_text().splitlines()
    assert len(lines) == rows  # written once, not once per rank
    final = json.loads((out / "final.json").read_text())
    assert final["runtime"]["processes"] == 2 and final["history"][0]["images_per_s"] > 0
    best = json.loads((out / "best.json").read_text())
    assert 0.0 <= best["test_accuracy"] <= 1.0 and best["splits"]["test"] == 359
