"""Searched networks against the hand-made one, at the same latency, measured on the device (issue 14).

At each budget, a fraction (``--fractions``, 40/60/80%) of the full reference network's predicted latency on the
device's raw table, every width's table is first copied and calibrated on this host on nets near the budget
(``--calibration-samples``), as the pipeline does; everything below prices on those calibrated copies:

1. ``reference``: the MobileNetV2-like reference scaled down to the budget by hand (width multiplier, each width
   on its own table; uniform depth and expansion; :mod:`hwnas.search.strategies.reference`). Its predicted
   latency L, less ``--margin`` (5%, the pipeline's), is the latency the searches get (``--match reference``, the
   default), so that every net competes at or under the latency the hand-made one spends; ``--match budget``
   gives them the budget itself.
2. ``proxyless``: a ProxylessNAS search under that latency.
3. ``evolution``: aging evolution with the ``train`` estimator under it.
4. ``random``: ``--random`` feasible nets drawn in its band (90–100%).

The searches train on ``--search-limit`` images. Every net is then retrained from scratch with one schedule
(``--epochs``, ``--limit`` images for train + valid, the dataset's augmentation, one seed), its test accuracy
taken on the dataset's own test split (which nothing above saw), exported to ONNX and timed on the device; the
nets of one budget are timed side by side in interleaved rounds. The retrains are independent, so ``--jobs``
of them run at once as Ray tasks of one thread each (two one-thread trainings get through more images on 2 cores
than one two-thread training, BENCHMARKS.md; evolution's candidates run the same way). Search and retrain wall times
are recorded.

The record, ``--results`` (``tools/bench/results/search_vs_hand.json``, kept in the repository), is written as
each net finishes, so a rerun picks up where a killed one stopped, in a later session too: a budget is searched
on the tables of the host it started on (the row says which), and timed side by side on the host that finishes
it. A net retrained in an earlier session is timed from its architecture's export with initial weights, since
fp32 latency does not depend on the weights' values. ``--retime --reprice`` on a later host also prices every
net on that host's own calibrated tables, so that prediction and measurement meet on one host. A Markdown table is
printed.

    python tools/bench/search_vs_hand.py --table runs/bench/tables/cpu-proxyless-32.json --fractions 0.6
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import ray

from hwnas.core.atomic import atomic_write_text
from hwnas.core.hostinfo import cpu_model
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
    ap.add_argument("--calibration-samples", type=int, default=20,
                    help="nets near the budget that calibrate each width's table on this host, per budget")
    ap.add_argument("--margin", type=float, default=0.05,
                    help="the searches aim this far under the reference's latency, for the measurement noise")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                    help="nets retrained at once (Ray tasks of one thread each; evolution's candidates likewise)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--retime", action="store_true", help="time the budgets' nets again, side by side on this host "
                                                           "(all budgets of a table should be timed on one host)")
    ap.add_argument("--reprice", action="store_true",
                    help="with --retime on another host than the searches': calibrate this host's tables (profiled "
                         "beside --table) on nets near each budget and price every net on them, so that predicted "
                         "and measured latency meet on one host")
    ap.add_argument("--results", default=str(ROOT / "tools" / "bench" / "results" / "search_vs_hand.json"),
                    help="the record, kept in the repository: a rerun resumes it, across sessions and hosts")
    ap.add_argument("--out", default="runs/bench/search_vs_hand", help="searches and exported models")
    args = ap.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_file = Path(args.results)
    results: dict = json.loads(results_file.read_text()) if results_file.exists() else {}

    def save() -> None:
        results_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(results_file, json.dumps(results, indent=1) + "\n")

    model = CostModel(Table.load(Path(args.table)))
    space = model.space
    full = model.predict(Arch.of(space, space.reference_choices()), planned=False).latency_ms
    data = load(args.data, space.resolution, seed=args.seed, limit=args.limit)
    schedule = TrainConfig(epochs=args.epochs, seed=args.seed)
    setup = {"device": args.device, "data": data.describe(), "schedule": schedule.to_dict(), "match": args.match,
             "search_limit": args.search_limit, "search_epochs": args.search_epochs,
             "evaluations": args.evaluations, "estimator_epochs": args.estimator_epochs,
             "calibration_samples": args.calibration_samples, "margin": args.margin}
    if results.get("setup", setup) != setup:
        sys.exit(f"{results_file} was made with other settings ({json.dumps(results['setup'])}); give another "
                 "--results, or the settings it records")
    results["setup"] = setup
    save()
    device = get_device(args.device)
    ray.init(num_cpus=args.jobs, include_dashboard=False, log_to_driver=False)
    remote_retrain = ray.remote(num_cpus=1)(retrain)

    for fraction in args.fractions:
        key = f"{fraction:g}"
        row = results.setdefault(key, {"budget_ms": fraction * full, "full_reference_ms": full,
                                       "table": {"host_cpu": model.table.fingerprint.get("host_cpu"),
                                                 "created": model.table.created}, "nets": {}})
        nets = row["nets"]

        folder = out / key
        chosen = ["reference", "proxyless", "evolution"] + [f"random{i}" for i in range(args.random)]
        if not all(name in nets for name in chosen):  # the calibrated tables are needed only to choose the nets
            choose(nets, folder, row, device, args, save)

        if args.retime:
            for net in nets.values():
                net.pop("measured_ms", None)
        pending = {remote_retrain.remote(net["arch"], args.data, args.seed, args.limit, schedule,
                                         str(folder / f"{name}.onnx")): name
                   for name, net in nets.items() if "test_accuracy" not in net}  # one schedule for every net
        while pending:
            done, _ = ray.wait(list(pending))
            name = pending.pop(done[0])
            nets[name].update(ray.get(done[0]))
            save()
            print(f"[{key}] {name}: test {nets[name]['test_accuracy']:.4f} ({nets[name]['retrain_s']} s)", flush=True)

        if not all("measured_ms" in net for net in nets.values()):  # side by side, interleaved rounds, quiet
            for name, net in nets.items():
                path = folder / f"{name}.onnx"
                if not path.exists():  # retrained in an earlier session: fp32 latency does not depend on weights
                    arch = Arch.parse(net["arch"])
                    export(Source(arch, data.classes, build_for(arch, data.classes, args.seed).state_dict()),
                           "onnx", path)
                    net["timed_weights"] = "initial"
            runs = {name: DeviceRun(folder / f"{name}.onnx", device).start() for name in nets}
            medians: dict[str, list[float]] = {name: [] for name in nets}
            for _ in range(args.rounds):
                for name, run in runs.items():
                    stats, _ = run.time(1)
                    medians[name].append(stats["median"])
            for name, values in medians.items():
                nets[name]["measured_ms"] = statistics.median(values)
            row["timed"] = host_stamp()
            save()
        if args.reprice and row.get("repriced", {}).get("host_cpu") != cpu_model():
            reprice(row, device, folder, args)
            save()
    ray.shutdown()
    print(table(results, args.fractions))


def choose(nets: dict, folder: Path, row: dict, device, args, save) -> None:
    """The budget's nets, chosen on its calibrated tables: the scaled reference, the two searches' answers and
    the random nets, each recorded (``save``) as it is chosen."""
    table_path = calibrated_tables(device, Path(args.table), folder / "tables", row, args)
    save()
    common = dict(table=str(table_path), data=args.data, seed=args.seed, limit=args.search_limit,
                  final_epochs=0, device=args.device)
    calibrated = CostModel(Table.load(table_path))
    searched(nets, folder, "reference", SearchConfig(strategy="reference", latency_ms=row["budget_ms"], **common))
    save()
    target = (1 - args.margin) * (nets["reference"]["predicted_ms"] if args.match == "reference"
                                  else row["budget_ms"])
    row["search_budget_ms"] = target
    searched(nets, folder, "proxyless", SearchConfig(strategy="proxyless", latency_ms=target, **common,
                                                     options={"epochs": args.search_epochs,
                                                              "warmup_epochs": min(2, args.search_epochs)}))
    save()
    searched(nets, folder, "evolution", SearchConfig(strategy="evolution", latency_ms=target, estimator="train",
                                                     evaluations=args.evaluations, executor="ray",
                                                     estimator_epochs=args.estimator_epochs, **common))
    save()
    rows = Feasibility(calibrated, Budget(latency_ms=target)).sample(args.random,
                                                                     np.random.default_rng(args.seed), band=True)
    for i, choices in enumerate(rows):
        priced = float(calibrated.predict_many(choices[None])["latency_ms"][0])
        nets.setdefault(f"random{i}", {"arch": str(Arch.of(calibrated.space, choices)), "predicted_ms": priced,
                                      "search_s": 0.0})
    save()


def retrain(arch_text: str, data_spec: str, seed: int, limit: int, schedule: TrainConfig, onnx: str) -> dict:
    """One net trained from scratch on one thread (a Ray task), its test accuracy, its trained ONNX export."""
    import torch

    torch.set_num_threads(1)
    arch = Arch.parse(arch_text)
    data = load(data_spec, arch.space.resolution, seed=seed, limit=limit)
    module = build_for(arch, data.classes, seed)
    t0, c0 = time.perf_counter(), time.process_time()
    res = train(module, data, schedule)
    rt = schedule.runtime()
    test_accuracy = evaluate(rt.place(module), data.test, rt)
    seconds, cpu_seconds = round(time.perf_counter() - t0, 1), round(time.process_time() - c0, 1)
    cpu_contiguous(module)
    export(Source(arch, data.classes, module.state_dict()), "onnx", Path(onnx))
    return {"test_accuracy": test_accuracy, "valid_accuracy": res.valid_accuracy, "retrain_s": seconds,
            "retrain_cpu_s": cpu_seconds, "retrain_threads": 1}


def calibrated_tables(device, table: Path, folder: Path, row: dict, args) -> Path:
    """Every width's table copied into ``folder`` and calibrated there on this host, on nets near the budget, as
    the pipeline calibrates its own: raw, the tables of different widths misprice their nets by different
    amounts (BENCHMARKS.md), so the searches and the reference would meet at different measured latencies.
    Returns the width-1 copy's path; each calibration is recorded in the row."""
    from hwnas.deploy.pipeline import calibrate_table
    from hwnas.search.strategies.reference import ReferenceScaling
    from hwnas.spaces import get_space
    from hwnas.tables.table import table_stem

    folder.mkdir(parents=True, exist_ok=True)
    main_space = CostModel(Table.load(table)).space
    calibrations = row.setdefault("calibration", {})
    for width in ReferenceScaling().widths:
        space = get_space(main_space.name, main_space.resolution, width)
        name = f"{table_stem(args.device, space.id, space.resolution)}.json"
        target = folder / name
        if f"{width:g}" in calibrations:
            continue
        shutil.copyfile(table.parent / name, target)
        fit = calibrate_table(device, target, row["budget_ms"], None, args.calibration_samples, args.seed,
                              progress=False, name=f"calibration-w{width:g}")
        calibrations[f"{width:g}"] = {**fit, **(CostModel(Table.load(target)).calibration or {})}
    return folder / f"{table_stem(args.device, main_space.id, main_space.resolution)}.json"


def host_stamp() -> dict:
    """This host and the time now: which machine a timing or a repricing was made on, and when."""
    return {"host_cpu": cpu_model(), "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def reprice(row: dict, device, folder: Path, args) -> None:
    """Every net of the budget priced on this host's tables, calibrated here as :func:`calibrated_tables` does
    (``repriced_ms``), beside the measurement of this host: the cost model's error with both sides on one host."""
    from hwnas.tables.table import table_stem

    here = host_stamp()
    tables = folder / "tables-repriced"
    shutil.rmtree(tables, ignore_errors=True)
    fits: dict = {}
    calibrated_tables(device, Path(args.table), tables, {"budget_ms": row["budget_ms"], "calibration": fits}, args)
    models: dict[str, CostModel] = {}
    for net in row["nets"].values():
        arch = Arch.parse(net["arch"])
        stem = table_stem(args.device, arch.space_id, arch.resolution)
        model = models.setdefault(stem, CostModel(Table.load(tables / f"{stem}.json")))
        net["repriced_ms"] = float(model.predict(arch, planned=False).latency_ms)
    row["repriced"] = {**here, "calibration": fits}


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
    lines = ["| budget | net | arch | predicted ms | repriced ms | measured ms | test acc | valid acc | search s | "
             "retrain s |", "|---|---|---|---|---|---|---|---|---|---|"]

    def repriced(nets: list[dict]) -> str:
        values = [n["repriced_ms"] for n in nets if "repriced_ms" in n]
        return f"{statistics.median(values):.3f}" if len(values) == len(nets) else "–"

    for fraction in fractions:
        row = results[f"{fraction:g}"]
        nets = row["nets"]
        randoms = [n for k, n in nets.items() if k.startswith("random")]
        for name in ("reference", "proxyless", "evolution"):
            n = nets[name]
            lines.append(f"| {fraction:.0%} ({row['budget_ms']:.3f} ms) | {name} | `{n['arch']}` | "
                         f"{n['predicted_ms']:.3f} | {repriced([n])} | {n['measured_ms']:.3f} | "
                         f"{n['test_accuracy']:.4f} | {n['valid_accuracy']:.4f} | {n['search_s']:.0f} | "
                         f"{n['retrain_s']:.0f} |")
        accs = sorted(n["test_accuracy"] for n in randoms)
        lines.append(f"| {fraction:.0%} | random ×{len(randoms)} | median (min–max) | "
                     f"{statistics.median(n['predicted_ms'] for n in randoms):.3f} | {repriced(randoms)} | "
                     f"{statistics.median(n['measured_ms'] for n in randoms):.3f} | "
                     f"{statistics.median(accs):.4f} ({accs[0]:.4f}–{accs[-1]:.4f}) | "
                     f"{statistics.median(n['valid_accuracy'] for n in randoms):.4f} | 0 | "
                     f"{statistics.median(n['retrain_s'] for n in randoms):.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
