"""Additivity check: does the sum of per-block latencies predict the whole network?

In one run, on one runtime, interleaved over rounds in random order: the blocks of the space's
reference net (every searchable layer MBConv e6 k3: MobileNetV2-like), the empty model (per-call
overhead) and the whole net end to end. Reports
  naive     = sum of block medians (each includes one per-call overhead)
  corrected = sum of (block - overhead) + overhead (one call for the whole net)
against the whole net's median, per round and pooled; and the shipped table's prediction
(if given) against the whole net measured now.

    python tools/bench/additivity.py --device cpu --resolution 224 [--table latency_tables/cpu-proxyless-224.json]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

import numpy as np

from hwnas.core.stats import summarize
from hwnas.devices.backends.base import Backend, MeasureSettings
from hwnas.devices.registry import get_device
from hwnas.measure.profiler import overhead_module
from hwnas.spaces import FREE_OPS, get_space
from hwnas.spaces.keys import input_shape
from hwnas.tables.table import Table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--space", default="proxyless")
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.0, help="timed seconds per item per round")
    ap.add_argument("--table", help="a table to compare too (its sum vs the whole net measured now)")
    args = ap.parse_args()

    device = get_device(args.device)
    space = get_space(args.space, args.resolution)
    backend = device.backend_instance()
    backend.check_ready()
    keys = [k for k in space.keys_for(space.reference_choices()) if k.op not in FREE_OPS]
    uses = Counter(str(k) for k in keys)
    arts = {str(k): backend.prepare(space.build_op(k), input_shape(k), tag=f"{space.name}/{k}") for k in keys}
    arts["overhead"] = backend.prepare(overhead_module(), (1, 8), tag="overhead")
    arts["whole"] = backend.prepare(space.build(space.reference_choices()), space.input_shape,
                                    tag=f"reference-net/{space.id}/{space.resolution}")
    sessions = {n: backend.load(a) for n, a in arts.items()}
    settings = MeasureSettings(warmup_runs=10, min_runs=20, min_seconds=args.seconds)
    names = list(sessions)
    per_round: list[dict[str, float]] = []
    pooled: dict[str, list[np.ndarray]] = {n: [] for n in names}
    rng = np.random.default_rng(0)
    for _ in range(args.rounds):
        med = {}
        for i in rng.permutation(len(names)):
            s = Backend.time_session(sessions[names[i]], settings)
            pooled[names[i]].append(s)
            med[names[i]] = float(np.median(s))
        per_round.append(med)

    def sums(med: dict[str, float]) -> tuple[float, float]:
        naive = sum(med[k] * n for k, n in uses.items())
        return naive, naive - (sum(uses.values()) - 1) * med["overhead"]

    rows = []
    for med in per_round:
        naive, corrected = sums(med)
        rows.append({"whole_ms": med["whole"], "naive_ms": naive, "corrected_ms": corrected,
                     "naive_ratio": naive / med["whole"], "corrected_ratio": corrected / med["whole"]})
    pooled_med = {n: summarize(np.concatenate(v)).median for n, v in pooled.items()}
    naive, corrected = sums(pooled_med)
    result = {
        "device": device.name, "runtime": backend.runtime, "runtime_version": backend.runtime_version(),
        "space": space.id, "resolution": space.resolution, "blocks": sum(uses.values()), "rounds": args.rounds,
        "whole_ms": pooled_med["whole"], "overhead_ms": pooled_med["overhead"],
        "naive_sum_ms": naive, "corrected_sum_ms": corrected,
        "naive_ratio": naive / pooled_med["whole"], "corrected_ratio": corrected / pooled_med["whole"],
        "per_round_corrected_ratio": [round(r["corrected_ratio"], 4) for r in rows],
    }
    if args.table:
        table = Table.load(args.table)
        table.check_fingerprint(backend.fingerprint())
        tsum = sum(table.latency_ms(k) * n for k, n in uses.items())
        tcorr = tsum - (sum(uses.values()) - 1) * table.overhead.median
        result["table_corrected_sum_ms"] = tcorr
        result["table_ratio_vs_whole_now"] = tcorr / pooled_med["whole"]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
