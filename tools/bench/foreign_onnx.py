"""Price a foreign ONNX model from its own blocks: predicted vs measured latency and activation memory.

Exports MobileNetV2 (torchvision's if importable, else the same definition below) at 224 from PyTorch to ONNX,
profiles its unique blocks on the device (:func:`hwnas.foreign.modelcost.profile_model`: interleaved rounds, overhead
subtracted), predicts the whole model from that table (:func:`hwnas.foreign.modelcost.predict_model`), then times the
whole model in interleaved rounds (each round in a new random order, together with the empty model and every
block, so that the same-round sum can be read too) and probes its activation memory in a fresh process
(:func:`hwnas.measure.memprobe.measure_activation_memory`). Prints one JSON object.

    python tools/bench/foreign_onnx.py --device cpu [--resolution 224] [--rounds 5] [--work /tmp/foreign]
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hwnas.core.stats import summarize
from hwnas.devices.backends.base import Artifact, Backend, MeasureSettings
from hwnas.devices.registry import get_device
from hwnas.foreign.modelcost import cancelled_reorders_ms, predict_model, profile_model
from hwnas.foreign.onnxblocks import read_model
from hwnas.measure.memprobe import measure_activation_memory
from hwnas.measure.profiler import OVERHEAD, prepare_overhead
from hwnas.tables.table import Table


# -- torchvision's MobileNetV2, for hosts without torchvision ------------------------------------------
def _divisible(v: float, divisor: int = 8) -> int:
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


class _ConvBNReLU6(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class _InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = int(round(cin * expand))
        self.use_res = stride == 1 and cin == cout
        layers = [] if expand == 1 else [_ConvBNReLU6(cin, hidden, 1)]
        layers += [_ConvBNReLU6(hidden, hidden, 3, stride, hidden), nn.Conv2d(hidden, cout, 1, bias=False),
                   nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
               (6, 320, 1, 1))

    def __init__(self, width_mult: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()
        cin, last = _divisible(32 * width_mult), _divisible(1280 * max(1.0, width_mult))
        feats: list[nn.Module] = [_ConvBNReLU6(3, cin, stride=2)]
        for t, c, n, s in self.SETTING:
            cout = _divisible(c * width_mult)
            for i in range(n):
                feats.append(_InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        feats.append(_ConvBNReLU6(cin, last, 1))
        self.features = nn.Sequential(*feats)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


def mobilenet_v2() -> tuple[nn.Module, str]:
    try:
        from torchvision.models import mobilenet_v2 as tv

        return tv(), "torchvision"
    except ImportError:
        return MobileNetV2(), "tools/bench/foreign_onnx.py (torchvision's definition)"


def export(module: nn.Module, shape: tuple[int, ...], path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.zeros(shape),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"])


# -- the whole model in interleaved rounds, beside its blocks ------------------------------------------
def timed_rounds(backend: Backend, model_path: Path, shape: tuple[int, ...], rounds: int, seconds: float
                 ) -> tuple[dict[str, float], Counter]:
    """Median ms of the whole model, the empty model and every unique block, interleaved over ``rounds``."""
    m = read_model(model_path)
    folder = model_path.parent / "blocks"
    folder.mkdir(exist_ok=True)
    arts = {"whole": Artifact(model_path, shape, (1, 1000)), OVERHEAD: prepare_overhead(backend)}
    for b in m.blocks:
        if b.key not in arts:
            path = folder / f"{len(arts)}.onnx"
            path.write_bytes(m.block_model(b).SerializeToString())
            arts[b.key] = Artifact(path, m.info[b.inputs[0]].shape, m.info[b.outputs[0]].shape)
    sessions = {n: backend.load(a) for n, a in arts.items()}
    names = list(sessions)
    settings = MeasureSettings(warmup_runs=10, min_runs=20, min_seconds=seconds)
    samples: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for r in range(rounds):
        for i in np.random.default_rng([1, r]).permutation(len(names)):
            samples[names[i]].append(Backend.time_session(sessions[names[i]], settings))
    return {n: summarize(np.concatenate(v)).median for n, v in samples.items()}, Counter(b.key for b in m.blocks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the whole-model timing")
    ap.add_argument("--seconds", type=float, default=0.5, help="timed seconds per item per round")
    ap.add_argument("--work", default="/tmp/hwnas-foreign-onnx", help="folder for the model, blocks and table")
    args = ap.parse_args()

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    shape = (1, 3, args.resolution, args.resolution)
    module, source = mobilenet_v2()
    model_path = work / f"mobilenet_v2_{args.resolution}.onnx"
    export(module, shape, model_path)
    device = get_device(args.device)
    profiled = profile_model(device, model_path, work / "table.json", force=True, progress=False)
    table = Table.load(profiled.path)
    pred = predict_model(table, model_path)

    backend = device.backend_instance()
    med, uses = timed_rounds(backend, model_path, shape, args.rounds, args.seconds)
    blocks = read_model(model_path).blocks
    cancelled = cancelled_reorders_ms(table, blocks)
    same_round = med[OVERHEAD] + sum(n * (med[k] - med[OVERHEAD]) for k, n in uses.items()) - cancelled
    memory = measure_activation_memory(backend.name, model_path, shape, device.threads)
    whole = med["whole"]
    print(json.dumps({
        "device": device.name, "runtime": backend.runtime, "runtime_version": backend.runtime_version(),
        "host_cpu": table.fingerprint.get("host_cpu"), "model": f"MobileNetV2-1.0 @{args.resolution}",
        "model_source": source, "blocks": pred.blocks, "unique_blocks": len(table.entries),
        "unpriced": [str(u) for u in pred.unpriced], "table_overhead_ms": table.overhead.median,
        "predicted_ms": pred.latency_ms, "measured_ms": whole, "ratio": pred.latency_ms / whole,
        "error_pct": 100 * (pred.latency_ms / whole - 1),
        "same_round_sum_ms": same_round, "same_round_ratio": same_round / whole,
        "naive_sum_ms": sum(n * med[k] for k, n in uses.items()), "cancelled_edge_reorders_ms": cancelled,
        "uncorrected_ratio": (pred.latency_ms + cancelled) / whole,
        "planned_activation_bytes": pred.planned_activation_bytes,
        "measured_activation_bytes": memory["activation_bytes"],
        "memory_ratio": pred.planned_activation_bytes / memory["activation_bytes"],
        "weight_bytes": pred.weight_bytes, "params": pred.params,
    }, indent=1))


if __name__ == "__main__":
    main()
