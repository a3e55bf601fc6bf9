"""Searched networks against the hand-made one, at the same latency, measured on the device (issue 14).

At each budget, a fraction (``--fractions``, 40/60/80%) of the full reference network's predicted latency on the
device's table:

1. ``reference``: the MobileNetV2-like reference scaled down to the budget by hand (width multiplier, each width
   on its own table; uniform depth and expansion; :mod:`hwnas.search.strategies.reference`). Its predicted
   latency L is the latency the searches get (``--match reference``, the default), so that every net competes at
   the latency the hand-made one spends; ``--match budget`` gives them the budget itself.
2. ``proxyless``: a ProxylessNAS search under L.
3. ``evolution``: aging evolution with the ``train`` estimator under L.
4. ``random``: ``--random`` feasible nets drawn in the budget's band (90–100% of L).

The searches train on ``--search-limit`` images. Every net is then retrained from scratch with one schedule
(``--epochs``, ``--limit`` images for train + valid, the dataset's augmentation, one seed), its test accuracy
taken on the dataset's own test split (which nothing above saw), exported to ONNX and timed on the device; the
nets of one budget are timed side by side in interleaved rounds. Search and retrain wall times are recorded.
Results go to ``--out``/results.json as each net finishes (a rerun picks up where a killed one stopped) and a
Markdown table is printed.

    python tools/bench/search_vs_hand.py --table runs/bench/tables/cpu-proxyless-32.json --fractions 0.6
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from hwnas.core.atomic import atomic_write_text
from hwnas.cost.model import CostModel
from hwnas.deploy.export import Source, export
from hwnas.deploy.modelrun import DeviceRun
from hwnas.devices.registry import get_device
from hwnas.learn.data import load
from hwnas.learn.loop import TrainConfig, build_for, evaluate, train
from hwnas.learn.runtime import cpu_contiguous
from hwnas.search import Budget, Feasibility
from hwnas.search.run import SearchConfig, run_search
from hwnas.spaces.arch import Arch
from hwnas.tables.table import Table

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--table", default=str(ROOT / "latency_tables" / "cpu-proxyless-32.json"),
                    help="the width-1 table; the other widths' tables beside it")
    ap.add_argument("--data", default="mnist:/usr/share/datasets/fashion-mnist")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.4, 0.6, 0.8])
    ap.add_argument("--match", choices=["reference", "budget"], default="reference")
    ap.add_argument("--limit", type=int, default=10000, help="train + valid images of the retraining (test stays "
                                                             "whole); 2000 (75 SGD steps) ranks by convergence speed")
    ap.add_argument("--search-limit", type=int, default=2000, help="train + valid images the searches train on")
    ap.add_argument("--epochs", type=int, default=3, help="the retraining schedule of every net")
    ap.add_argument("--search-epochs", type=int, default=4, help="ProxylessNAS supernet epochs")
    ap.add_argument("--evaluations", type=int, default=8, help="evolution's candidates")
    ap.add_argument("--estimator-epochs", type=int, default=1, help="evolution's training per candidate")
    ap.add_argument("--random", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/bench/search_vs_hand")
    args = ap.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "results.json"
    results: dict = json.loads(results_file.read_text()) if results_file.exists() else {}

    def save() -> None:
        atomic_write_text(results_file, json.dumps(results, indent=1))

    model = CostModel(Table.load(Path(args.table)))
    space = model.space
    full = model.predict(Arch.of(space, space.reference_choices()), planned=False).latency_ms
    data = load(args.data, space.resolution, seed=args.seed, limit=args.limit)
    schedule = TrainConfig(epochs=args.epochs, seed=args.seed)
    common = dict(table=args.table, data=args.data, seed=args.seed, limit=args.search_limit, final_epochs=0,
                  device=args.device)
    device = get_device(args.device)
    results["setup"] = {"device": args.device, "host_cpu": model.table.fingerprint.get("host_cpu"),
                        "full_reference_ms": full, "data": data.describe(), "schedule": schedule.to_dict(),
                        "match": args.match, "search_limit": args.search_limit, "search_epochs": args.search_epochs,
                        "evaluations": args.evaluations, "estimator_epochs": args.estimator_epochs}
    save()

    for fraction in args.fractions:
        key = f"{fraction:g}"
        row = results.setdefault(key, {"budget_ms": fraction * full, "nets": {}})
        nets = row["nets"]

        folder = out / key
        searched(nets, folder, "reference", SearchConfig(strategy="reference", latency_ms=row["budget_ms"], **common))
        save()
        target = nets["reference"]["predicted_ms"] if args.match == "reference" else row["budget_ms"]
        row["search_budget_ms"] = target
        searched(nets, folder, "proxyless", SearchConfig(strategy="proxyless", latency_ms=target, **common,
                                                         options={"epochs": args.search_epochs,
                                                                  "warmup_epochs": min(2, args.search_epochs)}))
        save()
        searched(nets, folder, "evolution", SearchConfig(strategy="evolution", latency_ms=target, estimator="train",
                                                         evaluations=args.evaluations,
                                                         estimator_epochs=args.estimator_epochs, **common))
        save()
        rows = Feasibility(model, Budget(latency_ms=target)).sample(args.random, np.random.default_rng(args.seed),
                                                                    band=True)
        for i, choices in enumerate(rows):
            nets.setdefault(f"random{i}", {"arch": str(Arch.of(space, choices)),
                                          "predicted_ms": float(model.predict_many(choices[None])["latency_ms"][0]),
                                          "search_s": 0.0})
        save()

        for name, net in nets.items():  # one schedule for every net
            if "test_accuracy" in net:
                continue
            arch = Arch.parse(net["arch"])
            module = build_for(arch, data.classes, args.seed)
            t0 = time.perf_counter()
            res = train(module, data, schedule)
            rt = schedule.runtime()
            net["test_accuracy"] = evaluate(rt.place(module), data.test, rt)
            net["valid_accuracy"] = res.valid_accuracy
            net["retrain_s"] = round(time.perf_counter() - t0, 1)
            cpu_contiguous(module)
            export(Source(arch, data.classes, module.state_dict()), "onnx", out / key / f"{name}.onnx")
            save()
            print(f"[{key}] {name}: test {net['test_accuracy']:.4f} ({net['retrain_s']} s)", flush=True)

        if not all("measured_ms" in net for net in nets.values()):  # side by side, interleaved rounds
            runs = {name: DeviceRun(out / key / f"{name}.onnx", device).start() for name in nets}
            medians: dict[str, list[float]] = {name: [] for name in nets}
            for _ in range(args.rounds):
                for name, run in runs.items():
                    stats, _ = run.time(1)
                    medians[name].append(stats["median"])
            for name, values in medians.items():
                nets[name]["measured_ms"] = statistics.median(values)
            save()
    print(table(results, args.fractions))


def searched(nets: dict, folder: Path, name: str, cfg: SearchConfig) -> None:
    """One search (its answer not retrained: ``final_epochs`` 0), timed, into ``nets[name]``."""
    if name in nets:
        return
    t0 = time.perf_counter()
    res = run_search(cfg, folder / name, resume=(folder / name).exists(), progress=False)
    nets[name] = {"arch": str(res.arch), "predicted_ms": res.candidate.latency_ms, "budget_used": res.candidate.usage,
                  "search_s": round(time.perf_counter() - t0, 1), "notes": res.notes}
    print(f"[{folder.name}] {name}: {res.arch} at {res.candidate.latency_ms:.3f} ms ({nets[name]['search_s']} s)",
          flush=True)


def table(results: dict, fractions: list[float]) -> str:
    lines = ["| budget | net | arch | predicted ms | measured ms | test acc | valid acc | search s | retrain s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for fraction in fractions:
        row = results[f"{fraction:g}"]
        nets = row["nets"]
        randoms = [n for k, n in nets.items() if k.startswith("random")]
        for name in ("reference", "proxyless", "evolution"):
            n = nets[name]
            lines.append(f"| {fraction:.0%} ({row['budget_ms']:.3f} ms) | {name} | `{n['arch']}` | "
                         f"{n['predicted_ms']:.3f} | {n['measured_ms']:.3f} | {n['test_accuracy']:.4f} | "
                         f"{n['valid_accuracy']:.4f} | {n['search_s']:.0f} | {n['retrain_s']:.0f} |")
        accs = sorted(n["test_accuracy"] for n in randoms)
        lines.append(f"| {fraction:.0%} | random ×{len(randoms)} | median (min–max) | "
                     f"{statistics.median(n['predicted_ms'] for n in randoms):.3f} | "
                     f"{statistics.median(n['measured_ms'] for n in randoms):.3f} | "
                     f"{statistics.median(accs):.4f} ({accs[0]:.4f}–{accs[-1]:.4f}) | "
                     f"{statistics.median(n['valid_accuracy'] for n in randoms):.4f} | 0 | "
                     f"{statistics.median(n['retrain_s'] for n in randoms):.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
