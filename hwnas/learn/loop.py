"""The training loop for any architecture: SGD + cosine (or Adam), label smoothing, on any torch device.

One loop serves the retrain, the ``train`` and ``supernet`` estimators and (through its pieces) ProxylessNAS:

- data streams through :func:`hwnas.learn.loader.loader` (augmented training batches, workers);
- the model and its inputs are channels_last on the runtime's device, the forward pass under autocast when
  mixed precision is on (:class:`hwnas.learn.runtime.Runtime`), ``torch.compile`` behind a flag;
- under torchrun the model is wrapped in DistributedDataParallel and each rank trains on its slice of every
  global batch. The loss is summed and divided by the global batch's size, so the gradient is the global
  batch's mean however it is sliced: W processes, or one process with ``micro_batch`` = batch / W, give the
  same weights (BatchNorm normalizes each slice, as DDP without SyncBatchNorm does);
- no per-step host synchronization: the loss is accumulated on the device and read once per epoch (where a
  non-finite loss stops the run).

Deterministic for a seed on the CPU: weights are re-initialized from it, the order and the augmentation are
functions of (seed, epoch). Every epoch records its loss, validation accuracy, seconds and images/s.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import nn

from hwnas.core.errors import ConfigError
from hwnas.core.progress import Tasks
from hwnas.core.schema import NonNegative, NonNegativeInt, Positive, PositiveInt, settings
from hwnas.learn.data import Dataset, ImageSet
from hwnas.learn.distributed import all_sum
from hwnas.learn.loader import loader
from hwnas.learn.runtime import Runtime, check_device, cpu_contiguous
from hwnas.spaces.arch import Arch

OPTIMIZERS = ("sgd", "adam")
Smoothing = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]  # 1 would make every target uniform
EVAL_PIXELS = 256 * 32 * 32  # an evaluation batch holds about this many input pixels: 256 images at 32 px, 5 at 224


def eval_batch(resolution: int) -> int:
    """The evaluation batch at ``resolution`` when the caller gives none: activations, not images, fill memory."""
    return max(4, min(256, EVAL_PIXELS // (resolution * resolution)))


@settings("training settings", "correct it on the command line (--lr, --batch-size, --epochs, --optimizer, "
          "--label-smoothing, --train-device, --amp, --workers)")
class TrainConfig:
    epochs: NonNegativeInt = 10
    batch_size: PositiveInt = 64  # the global batch (over every process under torchrun)
    lr: Positive = 0.05
    optimizer: Literal["sgd", "adam"] = "sgd"  # sgd: momentum 0.9, nesterov, cosine decay; adam: cosine decay too
    weight_decay: NonNegative = 4e-5
    label_smoothing: Smoothing = 0.0
    seed: NonNegativeInt = 0
    micro_batch: PositiveInt | None = None  # forward/backward in slices of this size (gradient accumulation)
    device: str = "auto"  # auto, cpu, cuda, cuda:N (hwnas.learn.runtime)
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    workers: NonNegativeInt | None = None  # data-loading processes; None: 0 on the CPU, a few beside a GPU
    compile: bool = False  # torch.compile the model

    def __post_init__(self) -> None:
        check_device(self.device)

    def runtime(self) -> Runtime:
        return Runtime.create(self.device, self.amp, self.workers, self.compile)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    valid_accuracy: float
    history: list[dict] = field(default_factory=list)  # per epoch: loss, valid_accuracy, seconds, images_per_s


def init_weights(model: nn.Module, seed: int) -> nn.Module:
    """MobileNetV2's initialization (Kaiming fan-out convs, unit BN, small linear), reproducible by ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
            with torch.no_grad():
                m.weight.normal_(0.0, math.sqrt(2.0 / fan_out), generator=gen)
                if m.bias is not None:
                    m.bias.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
            m.reset_running_stats()
        elif isinstance(m, nn.Linear):
            with torch.no_grad():
                m.weight.normal_(0.0, 0.01, generator=gen)
                m.bias.zero_()
    return model


def build_for(arch: Arch, classes: int, seed: int = 0) -> nn.Module:
    """The architecture's network with a classifier for ``classes``, freshly initialized from ``seed``."""
    model = arch.build()
    last = model[-1]
    if isinstance(last, nn.Linear) and last.out_features != classes:
        model[-1] = nn.Linear(last.in_features, classes)
    return init_weights(model, seed)


@torch.no_grad()
def evaluate(model: nn.Module, split: ImageSet, runtime: Runtime | None = None, batch_size: int | None = None) -> float:
    """Top-1 accuracy on ``split`` (no augmentation) in batches of ``batch_size`` (default: by resolution, see
    :func:`eval_batch`); under torchrun each rank counts its slice and the counts are summed. The model stays
    where it is: pass the runtime it trains on (default: the CPU)."""
    rt = runtime or Runtime.create("cpu", "off", 0)
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=rt.device)
    count = 0
    batch_size = batch_size or eval_batch(split.resolution)
    for x, y in loader(split.evaluation(), batch_size, shuffle=False, workers=rt.workers, world=rt.world,
                       pin=rt.device.type == "cuda"):
        with rt.autocast():
            out = model(rt.inputs(x))
        correct += (out.argmax(dim=1) == y.to(rt.device, non_blocking=True)).sum()
        count += len(y)
    right, total = all_sum([float(correct), float(count)], rt.device)
    return right / max(1.0, total)


def make_optimizer(params, cfg: TrainConfig, steps: int) -> tuple[torch.optim.Optimizer, object]:
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))


def steps_per_epoch(n: int, cfg: TrainConfig, world_size: int = 1) -> int:
    """Optimizer steps of one epoch over ``n`` images (a last global batch too small for BatchNorm is dropped)."""
    full, rest = divmod(n, cfg.batch_size)
    return full + (rest >= min_batch(world_size))


def min_batch(world_size: int) -> int:
    return 2 * world_size  # every rank's slice holds two images or more: BatchNorm cannot train on one


class Trainer:
    """One model's optimization on a runtime: the pieces :func:`train` and ProxylessNAS's weight steps share."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, runtime: Runtime, steps: int,
                 unused_parameters: bool = False) -> None:
        self.cfg, self.rt = cfg, runtime
        self.model = runtime.place(model)
        self.forward_model = self.model
        if runtime.world.parallel:
            from torch.nn.parallel import DistributedDataParallel

            ids = [runtime.device.index] if runtime.device.type == "cuda" else None
            self.forward_model = DistributedDataParallel(self.model, device_ids=ids,
                                                         find_unused_parameters=unused_parameters)
        if cfg.compile:
            self.forward_model = torch.compile(self.forward_model)
        self.opt, self.sched = make_optimizer(self.model.parameters(), cfg, steps)
        self.scaler = runtime.scaler()
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing, reduction="sum")

    def step(self, x: torch.Tensor, y: torch.Tensor, global_count: int) -> torch.Tensor:
        """One optimizer step on this rank's slice (x, y) of a global batch of ``global_count`` images; returns the
        slice's summed loss (a device tensor: no synchronization)."""
        rt, scale = self.rt, self.rt.world.size / global_count  # DDP averages over ranks: sum / global count
        self.opt.zero_grad(set_to_none=True)
        parts = -(-len(y) // (self.cfg.micro_batch or len(y)))
        parts = max(1, min(parts, len(y) // 2))  # near-equal slices of two images or more (BatchNorm)
        bounds = [round(i * len(y) / parts) for i in range(parts + 1)]
        chunks = list(zip(bounds[:-1], bounds[1:]))
        total = torch.zeros((), device=rt.device)
        for k, (lo, hi) in enumerate(chunks):
            xs, ys = rt.inputs(x[lo:hi]), y[lo:hi].to(rt.device, non_blocking=True)
            sync = k == len(chunks) - 1 or not rt.world.parallel
            ctx = torch.enable_grad() if sync else self.forward_model.no_sync()
            with ctx:
                with rt.autocast():
                    loss = self.loss_fn(self.forward_model(xs), ys)
                self.scaler.scale(loss * scale).backward()
            total += loss.detach().float()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        return total


def train(model: nn.Module, data: Dataset, cfg: TrainConfig,
          on_epoch: Callable[[int, dict], None] | None = None, *,
          before_step: Callable[[], None] | None = None,
          before_eval: Callable[[], None] | None = None,
          progress: Tasks | None = None, label: str = "train",
          unused_parameters: bool = False) -> TrainResult:
    """Train ``model`` on ``data.train``; validation accuracy on ``data.valid`` after every epoch.

    ``before_step`` runs before each optimizer step and ``before_eval`` before each validation: a supernet
    picks its path there (:func:`hwnas.search.supernet.train_single_path`; ``unused_parameters`` then, for
    DDP). ``progress`` makes the bar (``label``, every batch of every epoch). The model comes back on the CPU,
    in eval mode."""
    rt = cfg.runtime()
    torch.manual_seed(cfg.seed)
    per_epoch = steps_per_epoch(len(data.train), cfg, rt.world.size)
    advance = progress(label, max(1, cfg.epochs * per_epoch)) if progress and rt.world.main else None
    trainer = Trainer(model, cfg, rt, cfg.epochs * per_epoch, unused_parameters)
    result = TrainResult(valid_accuracy=0.0)
    try:
        if cfg.epochs == 0:
            result.valid_accuracy = evaluate(trainer.model, data.valid, rt, cfg.batch_size)
        for epoch in range(cfg.epochs):
            trainer.model.train()
            start, total, seen = time.perf_counter(), torch.zeros((), device=rt.device), 0
            batches = loader(data.train, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=epoch,
                             workers=rt.workers, world=rt.world, min_batch=min_batch(rt.world.size),
                             pin=rt.device.type == "cuda")
            sizes = [len(b) for b in batches.sampler.global_batches()]
            for (x, y), global_count in zip(batches, sizes):
                if before_step:
                    before_step()
                total += trainer.step(x, y, global_count)
                seen += global_count
                if advance:
                    advance(1)
            loss_sum = all_sum([float(total)], rt.device)[0]
            seconds = time.perf_counter() - start
            if not math.isfinite(loss_sum):
                raise ConfigError(f"training diverged at epoch {epoch + 1} (loss {loss_sum}).",
                                  "lower the learning rate (--lr)")
            if before_eval:
                before_eval()
            acc = evaluate(trainer.model, data.valid, rt, cfg.batch_size)
            row = {"epoch": epoch + 1, "loss": loss_sum / max(1, seen), "valid_accuracy": acc,
                   "seconds": round(seconds, 3), "images_per_s": round(seen / max(seconds, 1e-9), 1)}
            result.history.append(row)
            result.valid_accuracy = acc
            if on_epoch:
                on_epoch(epoch + 1, row)
    finally:
        cpu_contiguous(trainer.model).eval()
    return result

