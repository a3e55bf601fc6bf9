"""What INT8 buys, per block and for the whole net, on both host runtimes, in one run (issue 15).

Every measurable candidate block of the space and the space's reference net (MBConv e6 k3 everywhere), each
prepared for four devices: ``cpu`` and ``cpu-int8`` (ONNX Runtime, fp32 and static QDQ), ``cpu-tflite`` and
``cpu-tflite-int8`` (LiteRT + XNNPACK, fp32 and full integer). All of them are timed interleaved in random order
over ``--rounds`` rounds, so the host's drift hits fp32 and INT8 alike. Reports, per runtime, the reference net's
fp32 and INT8 medians and their ratio, the median and range of the per-block speed-ups, and every block where
INT8 is slower than fp32; ``--out`` keeps every figure as JSON.

    python tools/bench/int8_speedup.py [--resolution 32] [--rounds 3] [--seconds 0.3] [--out runs/bench/int8.json]
"""

from __future__ import annotations

import argparse
import json
import statistics

import numpy as np

from hwnas.core.atomic import atomic_write_text
from hwnas.devices.backends.base import Backend, MeasureSettings
from hwnas.devices.registry import get_device
from hwnas.spaces import get_space
from hwnas.spaces.keys import input_shape

RUNTIMES = {"onnxruntime": ("cpu", "cpu-int8"), "litert": ("cpu-tflite", "cpu-tflite-int8")}
NET = "reference net"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="proxyless")
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=0.3, help="timed seconds per item per round")
    ap.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=list(RUNTIMES))
    ap.add_argument("--out", help="write every figure here as JSON")
    args = ap.parse_args()

    space = get_space(args.space, args.resolution)
    keys = space.measurable_keys()
    sessions = {}
    for runtime in args.runtimes:
        for name in RUNTIMES[runtime]:
            backend = get_device(name).backend_instance()
            backend.check_ready()
            for key in keys:
                art = backend.prepare(space.build_op(key).eval(), input_shape(key), tag=f"{space.name}/{key}")
                sessions[(name, str(key))] = backend.load(art)
            net = backend.prepare(space.build(space.reference_choices()).eval(), space.input_shape,
                                  tag=f"reference-net/{space.id}/{space.resolution}")
            sessions[(name, NET)] = backend.load(net)
    settings = MeasureSettings(warmup_runs=5, min_runs=10, min_seconds=args.seconds)
    samples: dict[tuple[str, str], list[np.ndarray]] = {k: [] for k in sessions}
    order = list(sessions)
    rng = np.random.default_rng(0)
    for _ in range(args.rounds):
        for i in rng.permutation(len(order)):
            samples[order[i]].append(Backend.time_session(sessions[order[i]], settings))
    median = {k: float(np.median(np.concatenate(v))) for k, v in samples.items()}

    result: dict = {"space": space.id, "resolution": space.resolution, "rounds": args.rounds, "runtimes": {}}
    for runtime in args.runtimes:
        fp32, int8 = RUNTIMES[runtime]
        blocks = {str(k): {"fp32_ms": median[(fp32, str(k))], "int8_ms": median[(int8, str(k))]} for k in keys}
        for b in blocks.values():
            b["speedup"] = b["fp32_ms"] / b["int8_ms"]
        ups = [b["speedup"] for b in blocks.values()]
        slower = sorted((k for k, b in blocks.items() if b["speedup"] < 1), key=lambda k: blocks[k]["speedup"])
        result["runtimes"][runtime] = {
            "devices": [fp32, int8],
            "net_fp32_ms": median[(fp32, NET)], "net_int8_ms": median[(int8, NET)],
            "net_speedup": median[(fp32, NET)] / median[(int8, NET)],
            "block_speedup_median": statistics.median(ups), "block_speedup_min": min(ups),
            "block_speedup_max": max(ups),
            "slower_at_int8": slower,
            "blocks": blocks}
    if args.out:
        atomic_write_text(args.out, json.dumps(result, indent=1))
    for runtime, r in result["runtimes"].items():
        print(f"{runtime}: reference net {r['net_fp32_ms']:.3f} ms fp32, {r['net_int8_ms']:.3f} ms int8 "
              f"({r['net_speedup']:.2f}x); blocks {r['block_speedup_median']:.2f}x median "
              f"({r['block_speedup_min']:.2f}-{r['block_speedup_max']:.2f}); slower at int8: "
              f"{len(r['slower_at_int8'])} of {len(r['blocks'])}")
        for k in r["slower_at_int8"]:
            print(f"  {k}: {r['blocks'][k]['fp32_ms']:.4f} -> {r['blocks'][k]['int8_ms']:.4f} ms")


if __name__ == "__main__":
    main()
