"""Two one-thread trainings at once against one two-thread training: which gets more images through the cores.

The same network, batch and optimizer step (forward, backward, SGD) on in-memory random batches, channels_last:
first one process with ``--threads`` threads, then ``--threads`` processes of one thread each, started together.
Prints the median seconds per step of each and the images/s of the whole host in each arrangement.
``search_vs_hand.py`` retrains its nets as one-thread Ray tasks because of this.

    python tools/bench/thread_scaling.py [--arch A] [--batch 64] [--steps 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import time

import torch

from hwnas.learn.loop import build_for
from hwnas.spaces.arch import Arch

REFERENCE_W075 = "proxyless-w0.75@32:116611661166116611661"


def steps(arch: str, batch: int, n: int, threads: int) -> float:
    """Median seconds of one training step, on ``threads`` threads."""
    torch.set_num_threads(threads)
    model = build_for(Arch.parse(arch), 10, 0).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default=REFERENCE_W075)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    one = steps(args.arch, args.batch, args.steps, args.threads)
    with mp.get_context("spawn").Pool(args.threads) as pool:
        many = pool.starmap(steps, [(args.arch, args.batch, args.steps, 1)] * args.threads)
    result = {"arch": args.arch, "batch": args.batch, "threads": args.threads,
              "one_process_s_per_step": one, "one_process_images_per_s": args.batch / one,
              "processes_s_per_step": many, "processes_images_per_s": sum(args.batch / s for s in many)}
    result["ratio"] = result["processes_images_per_s"] / result["one_process_images_per_s"]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
