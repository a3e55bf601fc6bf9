"""Does a search on an INT8 table pick other blocks than the same search on the fp32 table? (issue 15)

The same search (strategy, estimator, seed, data) on two tables of one device family, fp32 and INT8, each at the
same fraction of its own reference net's predicted latency. Reports both answers, the layers where they choose
differently (by the space's choice names), and each answer priced on both tables: the
fp32 answer on the INT8 table shows how an fp32 table misleads a search for an INT8 deployment.

    python tools/bench/int8_search.py --fp32 T_FP32.json --int8 T_INT8.json [--fraction 0.5] \\
        [--strategy evolution --estimator naswot --evaluations 40] [--out runs/bench/int8-search]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hwnas.core.atomic import atomic_write_text
from hwnas.cost.model import CostModel
from hwnas.search.run import SearchConfig, run_search
from hwnas.spaces.arch import Arch
from hwnas.tables.table import Table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fp32", required=True, help="the fp32 table (e.g. cpu-proxyless-32.json)")
    ap.add_argument("--int8", required=True, help="the INT8 table of the same space (e.g. cpu-int8-proxyless-32.json)")
    ap.add_argument("--fraction", type=float, default=0.5, help="of each table's reference net latency")
    ap.add_argument("--strategy", default="evolution")
    ap.add_argument("--estimator", default="naswot")
    ap.add_argument("--evaluations", type=int, default=40)
    ap.add_argument("--data", default="digits")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/bench/int8-search")
    args = ap.parse_args()

    models = {name: CostModel(Table.load(Path(path))) for name, path in (("fp32", args.fp32), ("int8", args.int8))}
    result: dict = {"fraction": args.fraction, "strategy": args.strategy, "estimator": args.estimator}
    for name, model in models.items():
        space = model.space
        full = model.predict(Arch.of(space, space.reference_choices()), planned=False).latency_ms
        cfg = SearchConfig(table=args.fp32 if name == "fp32" else args.int8, strategy=args.strategy,
                           estimator=args.estimator, evaluations=args.evaluations, latency_ms=args.fraction * full,
                           data=args.data, seed=args.seed, final_epochs=0)
        res = run_search(cfg, Path(args.out) / name, resume=(Path(args.out) / name).exists(), progress=False)
        result[name] = {"reference_ms": full, "budget_ms": args.fraction * full, "arch": str(res.arch),
                        "valid_accuracy": res.valid_accuracy}
    for name in models:
        arch = Arch.parse(result[name]["arch"])
        result[name]["priced"] = {table: models[table].predict(arch, planned=False).latency_ms for table in models}
        result[name]["budget_used"] = {table: result[name]["priced"][table] / result[table]["budget_ms"]
                                       for table in models}
    a, b = Arch.parse(result["fp32"]["arch"]), Arch.parse(result["int8"]["arch"])
    layers = [layer for layer in models["fp32"].space.layers if layer.searchable]
    result["differ"] = [{"layer": layer.name, "fp32": layer.choice_names[x], "int8": layer.choice_names[y]}
                        for layer, x, y in zip(layers, a.choices, b.choices) if x != y]
    atomic_write_text(Path(args.out) / "result.json", json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
