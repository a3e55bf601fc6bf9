"""ProxylessNAS's memory claim, measured: one search step vs training one network vs a DARTS-style mixed op.

Each configuration runs in its own fresh process, on the same batch: one forward + backward + optimizer step,
while a thread samples the C allocator's bytes in use (glibc mallinfo2, as hwnas.measure.memprobe does). The figure
is the peak above the level before the step (activations kept for backward, gradients, optimizer state).

- ``single``: the sampled network alone (the path extracted from the supernet), as if trained by itself;
- ``weight``: a ProxylessNAS weight step (one binarized path per layer, in the supernet);
- ``arch``: a ProxylessNAS architecture step (two paths per layer behind binary gates, expected latency loss);
- ``darts``: every candidate of every layer run and summed with softmax weights (DARTS' mixed op).

    python tools/bench/proxyless_memory.py [--table latency_tables/cpu-proxyless-32.json] [--batch 64]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _child(kind: str, table: str, batch: int, seed: int) -> dict:
    import torch
    from torch import nn

    from hwnas.cost.model import CostModel
    from hwnas.measure.memprobe import bytes_in_use
    from hwnas.search import Budget, Feasibility, SearchContext
    from hwnas.search.strategies.proxyless import ProxylessSearch
    from hwnas.tables.table import Table

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    model = CostModel(Table.load(Path(table)))
    space = model.space
    x = torch.randn(batch, 3, space.resolution, space.resolution)
    y = torch.randint(0, 10, (batch,))
    gen = torch.Generator().manual_seed(seed)
    strategy = ProxylessSearch()
    ctx = SearchContext(Feasibility(model, Budget(latency_ms=1e9)), None, None, None, seed=seed)
    net, alpha = strategy.setup(ctx, type("D", (), {"classes": 10})())
    choices = torch.multinomial(strategy.probs(alpha), 1, generator=gen)[:, 0].tolist()
    if kind == "single":
        target = net.extract(choices).train()
        del net
        opt = torch.optim.SGD(target.parameters(), lr=0.01, momentum=0.9)

        def step():
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(target(x), y).backward()
            opt.step()
    elif kind == "weight":
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

        def step():
            strategy.weight_step(net, alpha, x, y, opt, gen)
    elif kind == "arch":
        arch_opt = torch.optim.Adam([alpha], lr=1e-3, betas=(0.0, 0.999))

        def step():
            strategy.arch_step(net, alpha, x, y, arch_opt, ctx, 10.0, gen)
    elif kind == "darts":
        weights = torch.zeros_like(alpha).masked_fill(~torch.isfinite(alpha), -torch.inf).requires_grad_(True)
        opt = torch.optim.SGD(list(net.parameters()) + [weights], lr=0.01, momentum=0.9)

        def forward_all(layer, i):
            def f(inp):
                w = torch.softmax(weights[i, :len(layer.candidates)], dim=0)
                return sum(w[j] * c(inp) for j, c in enumerate(layer.candidates))
            return f

        for i, layer in enumerate(net.mixed):  # every path of every layer, summed with softmax weights
            layer.forward = forward_all(layer, i)

        def step():
            net.train()
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    else:
        raise SystemExit(f"unknown kind {kind}")
    step()  # warm: allocator pools, optimizer state, lazy kernels
    used = bytes_in_use()
    base = used()
    peak = [base]
    done = threading.Event()

    def sample():  # a training step's peak (all saved activations, before backward frees them) lasts ms
        while not done.is_set():
            peak[0] = max(peak[0], used())
            time.sleep(2e-4)  # without a pause the allocator's lock starves the step

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    for _ in range(3):
        step()
    done.set()
    t.join()
    return {"kind": kind, "peak_bytes": peak[0] - base, "choices": "".join(map(str, choices))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", default=str(ROOT / "latency_tables" / "cpu-proxyless-32.json"))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.table, args.batch, args.seed)))
        return
    rows = {}
    for kind in ("single", "weight", "arch", "darts"):
        proc = subprocess.run([sys.executable, __file__, "--child", kind, "--table", args.table,
                               "--batch", str(args.batch), "--seed", str(args.seed)],
                              capture_output=True, text=True, cwd=ROOT)
        if proc.returncode:
            raise SystemExit(proc.stderr[-2000:])
        rows[kind] = json.loads(proc.stdout.strip().splitlines()[-1])
    single = rows["single"]["peak_bytes"]
    print(f"table {args.table}, batch {args.batch}, sampled path {rows['single']['choices']}")
    print("| step | peak MB | / single network |")
    print("|---|---|---|")
    for kind, r in rows.items():
        print(f"| {kind} | {r['peak_bytes'] / 1e6:.1f} | {r['peak_bytes'] / single:.2f}× |")
    print(f"darts / weight step: {rows['darts']['peak_bytes'] / rows['weight']['peak_bytes']:.1f}×; "
          f"darts / arch step: {rows['darts']['peak_bytes'] / rows['arch']['peak_bytes']:.1f}×")


if __name__ == "__main__":
    main()
