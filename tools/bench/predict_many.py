"""Throughput of CostModel.predict_many against a per-layer dict lookup (OFA/ProxylessNAS LatencyTable style).

Both price the same random architectures of one table, side by side in one run, repeated; medians.

    python tools/bench/predict_many.py --table latency_tables/cpu-proxyless-224.json --n 1000000
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from hwnas.cost.model import CostModel
from hwnas.spaces.arch import sample_choices
from hwnas.tables.table import Table


def dict_lookup(model: CostModel, choices: np.ndarray) -> np.ndarray:
    """The reference codes' way: for each architecture, for each layer, look its key up in a dict."""
    t = model.table
    lut = {str(k): (t.latency_ms(str(k)) - t.overhead.median) if t.entries[str(k)].latency else 0.0
           for layer in model.space.layers for k in layer.candidates}
    layers = [[str(k) for k in layer.candidates] for layer in model.space.searchable]
    fixed = model.fixed_latency_ms
    out = np.empty(len(choices))
    for n, row in enumerate(choices.tolist()):
        total = fixed
        for i, c in enumerate(row):
            total += lut[layers[i][c]]
        out[n] = total
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--table", default="latency_tables/cpu-proxyless-224.json")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--n-dict", type=int, default=100_000, help="population for the (slow) dict lookup")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    model = CostModel(Table.load(args.table))
    rng = np.random.default_rng(0)
    big = sample_choices(model.space, args.n, rng)
    small = big[: args.n_dict]
    model.predict_many(big[:10])  # build the arrays outside the timing
    vec, ref = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        model.predict_many(big, calibrated=False)
        vec.append(args.n / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        slow = dict_lookup(model, small)
        ref.append(args.n_dict / (time.perf_counter() - t0))
    assert np.allclose(slow, model.predict_many(small, calibrated=False)["latency_ms"])  # same numbers, different speed
    print(json.dumps({"table": args.table, "n": args.n, "predict_many_archs_per_s": float(np.median(vec)),
                      "dict_lookup_archs_per_s": float(np.median(ref)),
                      "ratio": float(np.median(vec) / np.median(ref))}, indent=1))


if __name__ == "__main__":
    main()
