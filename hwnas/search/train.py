"""A plain, correct training loop for any architecture: SGD + cosine (or Adam), optional label smoothing.

Deterministic for a seed on one machine: weights are re-initialized from it, and batches are shuffled by a
generator seeded from it. Reports validation accuracy per epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import nn

from hwnas.core.errors import ConfigError
from hwnas.core.schema import NonNegative, NonNegativeInt, Positive, PositiveInt, settings
from hwnas.search.data import Dataset, Split
from hwnas.spaces.arch import Arch

OPTIMIZERS = ("sgd", "adam")
Smoothing = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]  # 1 would make every target uniform


@settings("training settings", "correct it on the command line (--lr, --batch-size, --epochs, --optimizer, "
          "--label-smoothing)")
class TrainConfig:
    epochs: NonNegativeInt = 10
    batch_size: PositiveInt = 64
    lr: Positive = 0.05
    optimizer: Literal["sgd", "adam"] = "sgd"  # sgd: momentum 0.9, nesterov, cosine decay; adam: cosine decay too
    weight_decay: NonNegative = 4e-5
    label_smoothing: Smoothing = 0.0
    seed: NonNegativeInt = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    valid_accuracy: float
    history: list[dict] = field(default_factory=list)  # per epoch: loss, valid_accuracy


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
def evaluate(model: nn.Module, split: Split, batch_size: int = 256) -> float:
    model.eval()
    correct = sum(int((model(x).argmax(dim=1) == y).sum()) for x, y in split.batches(batch_size))
    return correct / max(1, len(split))


def make_optimizer(params, cfg: TrainConfig, steps: int) -> tuple[torch.optim.Optimizer, object]:
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))


def train(model: nn.Module, data: Dataset, cfg: TrainConfig,
          on_epoch: Callable[[int, dict], None] | None = None, *,
          before_step: Callable[[], None] | None = None,
          before_eval: Callable[[], None] | None = None) -> TrainResult:
    """Train ``model`` on ``data.train``; validation accuracy on ``data.valid`` after every epoch.

    ``before_step`` runs before each optimizer step and ``before_eval`` before each validation: a supernet
    picks its path there (:func:`hwnas.search.supernet.train_single_path`)."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    steps = cfg.epochs * math.ceil(len(data.train) / cfg.batch_size)
    opt, sched = make_optimizer(model.parameters(), cfg, steps)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    result = TrainResult(valid_accuracy=evaluate(model, data.valid) if cfg.epochs == 0 else 0.0)
    for epoch in range(cfg.epochs):
        model.train()
        total, count = 0.0, 0
        for x, y in data.train.batches(cfg.batch_size, gen):
            if len(y) < 2:
                continue  # BatchNorm cannot train on one sample
            if before_step:
                before_step()
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            if not torch.isfinite(loss):
                raise ConfigError(f"training diverged at epoch {epoch + 1} (loss {loss.item()}).",
                                  "lower the learning rate")
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(y)
            count += len(y)
        if before_eval:
            before_eval()
        acc = evaluate(model, data.valid)
        row = {"epoch": epoch + 1, "loss": total / max(1, count), "valid_accuracy": acc}
        result.history.append(row)
        result.valid_accuracy = acc
        if on_epoch:
            on_epoch(epoch + 1, row)
    model.eval()
    return result
