"""ProxylessNAS against random architectures, same budget, same training, one run.

1. A ``proxyless`` search on the table with a latency budget at ``--fraction`` (70%) of the reference net's
   predicted latency, on the built-in digits dataset; its wall time is reported.
2. Its answer is retrained from scratch (``--epochs``), and so are ``--random`` uniformly sampled feasible
   architectures, each with the same seed, data split and schedule.
3. Reported: the searched net's validation accuracy, the random nets' accuracies (median, range) and where
   the searched net ranks among them.

    python tools/bench/proxyless_vs_random.py --table latency_tables/cpu-proxyless-32.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from hwnas.cost.model import CostModel
from hwnas.learn.data import load
from hwnas.learn.loop import build_for, train
from hwnas.search import Budget, Feasibility
from hwnas.search.run import SearchConfig, run_search
from hwnas.spaces.arch import Arch
from hwnas.tables.table import Table

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default=str(ROOT / "latency_tables" / "cpu-proxyless-32.json"))
    ap.add_argument("--fraction", type=float, default=0.7)
    ap.add_argument("--epochs", type=int, default=4, help="retraining epochs, searched and random nets alike")
    ap.add_argument("--optimizer", default="adam")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--search-epochs", type=int, default=6)
    ap.add_argument("--random", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args()

    model = CostModel(Table.load(Path(args.table)))
    space = model.space
    ref = model.predict(Arch.of(space, space.reference_choices()), planned=False).latency_ms
    budget_ms = args.fraction * ref
    cfg = SearchConfig(table=args.table, strategy="proxyless", latency_ms=budget_ms, estimator="naswot",
                       final_epochs=args.epochs, seed=args.seed, optimizer=args.optimizer, lr=args.lr,
                       options={"epochs": args.search_epochs, "warmup_epochs": min(2, args.search_epochs)})
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = run_search(cfg, Path(tmp) / "run", progress=False)
        wall = time.perf_counter() - t0
    searched = result.valid_accuracy
    print(f"budget {budget_ms:.3f} ms (={args.fraction:.0%} of the reference {ref:.3f} ms); proxyless search + "
          f"retrain: {wall:.0f} s; {result.arch} predicted {result.candidate.latency_ms:.3f} ms, "
          f"accuracy {searched:.4f}")

    data = load("digits", space.resolution, seed=args.seed)
    tc = cfg.train_config(args.epochs)  # exactly the searched net's retraining
    rows = Feasibility(model, Budget(latency_ms=budget_ms)).sample(args.random, np.random.default_rng(args.seed + 1))
    accs = []
    for row in rows:
        arch = Arch.of(space, row)
        acc = train(build_for(arch, data.classes, args.seed), data, tc).valid_accuracy
        accs.append(acc)
        print(f"  random {arch}: {model.predict(arch, planned=False).latency_ms:.3f} ms, accuracy {acc:.4f}",
              flush=True)
    rank = 1 + sum(a > searched for a in accs)
    med = statistics.median(accs)
    print(f"searched {searched:.4f} vs random median {med:.4f} (min {min(accs):.4f}, max {max(accs):.4f}); "
          f"rank {rank} of {len(accs) + 1}; {'at or above' if searched >= med else 'BELOW'} the median")
    if args.out:
        Path(args.out).write_text(json.dumps({"budget_ms": budget_ms, "reference_ms": ref, "search_wall_s": wall,
                                              "arch": str(result.arch), "searched_accuracy": searched,
                                              "random_accuracies": accs, "rank": rank}, indent=1))


if __name__ == "__main__":
    main()
