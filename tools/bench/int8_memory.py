"""INT8 activation memory on ONNX Runtime: the plan (with the integer kernels' temporaries) against the probe.

For the reference net and ``--samples`` random nets of each width at 32 px: the net exported, quantized to QDQ
(random calibration: memory does not depend on the ranges), measured by :mod:`hwnas.measure.memprobe` (memray,
batch 1) and planned by :mod:`hwnas.cost.memplan` with ``ort-qlinear`` and, for comparison, the uint8 tensors
alone. Prints each net and the MAPE and ±5%/±10% shares.

    python tools/bench/int8_memory.py [--samples 4] [--seed 7]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from hwnas.cost.memplan import planned_peak
from hwnas.cost.netgraph import dataflow_graph
from hwnas.devices.backends.onnxruntime import export_onnx
from hwnas.devices.backends.quantize import quantize_onnx, random_calibration
from hwnas.measure.memprobe import measure_activation_memory
from hwnas.spaces import get_space
from hwnas.spaces.arch import Arch, sample_choices


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=4, help="random nets per width (plus the reference)")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    errors = {"planned": [], "tensors only": []}
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "f.onnx", Path(tmp) / "q.onnx"
        for width in (0.35, 0.5, 0.75, 1.0):
            space = get_space("proxyless", 32, width)
            for row in [space.reference_choices(), *sample_choices(space, args.samples, rng)]:
                module = Arch.of(space, row).build().eval()
                export_onnx(module, space.input_shape, fp32)
                quantize_onnx(fp32, int8, random_calibration(space.input_shape, n=4))
                measured = measure_activation_memory("onnxruntime", int8, space.input_shape)["activation_bytes"]
                g = dataflow_graph(module, space.input_shape, bytes_per_elem=1)
                planned = planned_peak(g, "onnxruntime", count_input=False, kernels="ort-qlinear")
                tensors = planned_peak(g, "onnxruntime", count_input=False)
                errors["planned"].append(planned / measured - 1)
                errors["tensors only"].append(tensors / measured - 1)
                print(f"{Arch.of(space, row)}: measured {measured} B, planned {planned / measured - 1:+.1%}, "
                      f"tensors only {tensors / measured - 1:+.1%}", flush=True)
    for name, errs in errors.items():
        e = np.abs(errs)
        print(f"{name}: {len(e)} nets, MAPE {e.mean():.1%}, ±5% {np.mean(e <= 0.05):.0%}, "
              f"±10% {np.mean(e <= 0.10):.0%}")


if __name__ == "__main__":
    main()
