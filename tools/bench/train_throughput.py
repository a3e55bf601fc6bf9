"""Training throughput: hwnas's loop (hwnas.learn.loop.train) against a plain PyTorch loop, side by side.

The same network, batch and optimizer; the plain loop is the fastest one can write in a few lines: tensors
already in memory at the training resolution, no augmentation, SGD, channels_last (or not, whichever is faster
here: both are timed). hwnas's loop trains from its data pipeline (decoded, augmented, normalized per batch)
with its defaults for the device. Rounds alternate between the loops so the host's drift hits both alike;
the figures are medians of images/s over the rounds and their ratio.

    python tools/bench/train_throughput.py [--arch A] [--data digits] [--batch 64] [--steps 20] [--rounds 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import numpy as np
import torch
from torch import nn

from hwnas.learn.data import load
from hwnas.learn.loop import TrainConfig, build_for, train
from hwnas.spaces.arch import Arch

ANSWER = "proxyless@32:402056060066266606660"  # the pipeline's answer (BENCHMARKS.md), 1.4 ms on cpu


def plain(arch: Arch, classes: int, x: torch.Tensor, y: torch.Tensor, steps: int, channels_last: bool) -> float:
    """images/s of a bare loop over in-memory batches."""
    model = build_for(arch, classes, 0).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=4e-5)
    loss_fn = nn.CrossEntropyLoss()
    batches = [(x[i].contiguous(memory_format=fmt), y[i]) for i in range(len(x))]
    for xb, yb in batches[:2]:  # warm-up
        opt.zero_grad(set_to_none=True)
        loss_fn(model(xb), yb).backward()
        opt.step()
    start = time.perf_counter()
    for k in range(steps):
        xb, yb = batches[k % len(batches)]
        opt.zero_grad(set_to_none=True)
        loss_fn(model(xb), yb).backward()
        opt.step()
    return steps * len(y[0]) / (time.perf_counter() - start)


def hwnas_loop(arch: Arch, data, batch: int, steps: int, compile: bool) -> float:
    """images/s of hwnas.learn.loop.train over one epoch of ``steps`` batches (the epoch's own timing)."""
    cfg = TrainConfig(epochs=1, batch_size=batch, device="cpu", amp="off", compile=compile)
    sub = dataclasses.replace(data, train=data.train.subset(np.arange(batch * steps) % len(data.train)))
    res = train(build_for(arch, data.classes, 0), sub, cfg)
    return res.history[0]["images_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default=ANSWER)
    ap.add_argument("--data", default="digits")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--compile", action="store_true", help="also time hwnas's loop with --compile")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args()

    arch = Arch.parse(args.arch)
    data = load(args.data, arch.space.resolution, seed=0)
    x, y = data.train.evaluation().head(args.batch * 4)
    xs, ys = x.view(4, args.batch, *x.shape[1:]), y.view(4, args.batch)
    runs: dict[str, list[float]] = {"plain channels_last": [], "plain contiguous": [], "hwnas": []}
    if args.compile:
        runs["hwnas --compile"] = []
    for r in range(args.rounds):
        runs["plain channels_last"].append(plain(arch, data.classes, xs, ys, args.steps, True))
        runs["plain contiguous"].append(plain(arch, data.classes, xs, ys, args.steps, False))
        runs["hwnas"].append(hwnas_loop(arch, data, args.batch, args.steps, False))
        if args.compile:
            runs["hwnas --compile"].append(hwnas_loop(arch, data, args.batch, args.steps, True))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in runs.items()), flush=True)
    med = {k: statistics.median(v) for k, v in runs.items()}
    fastest_plain = max(med["plain channels_last"], med["plain contiguous"])
    print(f"{args.arch}, batch {args.batch}, {args.data} at {arch.space.resolution} px, {torch.get_num_threads()} "
          f"threads, medians of {args.rounds} rounds (images/s):")
    for k, v in med.items():
        print(f"  {k:<22} {v:8.1f}  ({v / fastest_plain:.2f}x the fastest plain loop)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"arch": args.arch, "batch": args.batch, "data": args.data, "runs": runs, "medians": med,
                       "ratio": med["hwnas"] / fastest_plain}, f, indent=1)


if __name__ == "__main__":
    main()
