"""Accuracy estimators for the sampling strategies: short training, a weight-sharing supernet, or NASWOT.

All map architectures to a score where higher is better, and are plain picklable objects (a dataset spec and
settings; data and models load lazily in the process that evaluates), so an executor can ship them to
workers.

- ``train``: train each architecture briefly (:mod:`hwnas.learn.loop`); the score is validation accuracy.
- ``supernet``: train one weight-sharing supernet once with uniform single-path sampling (SPOS), then score
  each architecture by the validation accuracy of its path with inherited weights, BatchNorm statistics
  recomputed on training batches first.
- ``naswot``: training-free (Mellor et al., "Neural Architecture Search without Training", 2021): for one
  minibatch, each input's binary code of which ReLU units fire; K_H[i, j] = units on which inputs i and j
  agree; the score is log|det K_H|. Networks that separate inputs well score high. Seconds on a CPU.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import ClassVar

import torch
from torch import nn

from hwnas.core.progress import Tasks
from hwnas.core.registry import Registry
from hwnas.learn.data import Dataset, load
from hwnas.learn.loop import TrainConfig, build_for, evaluate, train
from hwnas.learn.runtime import cpu_contiguous
from hwnas.spaces.arch import Arch


@dataclass
class Estimator(ABC):
    data: str = "digits"
    resolution: int = 32
    seed: int = 0
    limit: int | None = None  # cap on images (quick runs)
    augment: str = "auto"  # training augmentation (hwnas.learn.transforms)
    name: ClassVar[str] = ""
    accuracy: ClassVar[bool] = False  # the score is an accuracy on the validation split
    _cache: dict = field(default_factory=dict, repr=False, compare=False)
    progress: Tasks | None = field(default=None, repr=False, compare=False)  # bars for training, where shown

    @property
    def dataset(self) -> Dataset:
        if "data" not in self._cache:
            self._cache["data"] = load(self.data, self.resolution, seed=self.seed, limit=self.limit,
                                       augment=self.augment)
        return self._cache["data"]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_cache"] = {}  # workers load their own data
        state["progress"] = None  # a display stays where it is shown
        return state

    @classmethod
    def create(cls, train_config: TrainConfig | None = None, space_id: str = "proxyless", **common) -> Estimator:
        """The estimator from a search's settings (``common``: data, resolution, seed, limit, augment); those that
        train take ``train_config``, those that build a supernet the space."""
        return cls(**common)

    def prepare(self) -> None:
        """One-time work done where the search runs, before evaluations are shipped anywhere (none by default)."""
        return None

    @abstractmethod
    def score(self, arch: Arch) -> float:
        """Higher is better."""

    def clearly_better(self, a: float, b: float) -> bool:
        """Score ``a`` is measurably above ``b``: accuracies on the validation split that differ by more than two
        standard errors of their difference. Never for a score that is not an accuracy (NASWOT)."""
        if not self.accuracy:
            return False
        n = max(1, len(self.dataset.valid))
        return a - b > 2 * math.sqrt((a * (1 - a) + b * (1 - b)) / n)


@dataclass
class TrainEstimator(Estimator):
    config: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=3))
    name: ClassVar[str] = "train"
    accuracy: ClassVar[bool] = True

    @classmethod
    def create(cls, train_config: TrainConfig | None = None, space_id: str = "proxyless", **common) -> Estimator:
        return cls(**common, config=train_config or TrainConfig(epochs=3, seed=common["seed"]))

    def score(self, arch: Arch) -> float:
        model = build_for(arch, self.dataset.classes, self.config.seed)
        return train(model, self.dataset, self.config, progress=self.progress, label=f"train {arch.id}").valid_accuracy


@dataclass
class NaswotEstimator(Estimator):
    batch_size: int = 64
    name: ClassVar[str] = "naswot"

    @classmethod
    def create(cls, train_config: TrainConfig | None = None, space_id: str = "proxyless", **common) -> Estimator:
        return cls(**common, batch_size=train_config.batch_size if train_config else 64)  # --batch-size: the kernel's

    def score(self, arch: Arch) -> float:
        x, _ = self.dataset.train.evaluation().head(self.batch_size)
        model = build_for(arch, self.dataset.classes, self.seed)
        return naswot_score(model, x)


NASWOT_CHUNK = 1 << 18  # units per product: (64, 2^18) float32 is 64 MB, whatever the activation's size


def naswot_score(model: nn.Module, x: torch.Tensor) -> float:
    """log|det K_H| over the binary ReLU codes of the batch ``x`` (in train mode, as the paper scores).

    K_H[i, j] counts the units on which i and j agree: C C^T + (1 − C)(1 − C)^T = 2 C C^T − r_i − r_j + units,
    with r the row sums of the codes C; the products run over chunks of units in float32 (exact below 2^24)."""
    n = len(x)
    kernel = torch.zeros(n, n, dtype=torch.float64)

    def hook(_module, _inp, out):
        flat = out.detach().reshape(n, -1)
        units = flat.shape[1]
        for start in range(0, units, NASWOT_CHUNK):
            code = (flat[:, start:start + NASWOT_CHUNK] > 0).float()
            rows = code.sum(dim=1, dtype=torch.float64)
            kernel.add_(2 * (code @ code.T).double() - rows[:, None] - rows[None, :] + code.shape[1])

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.ReLU, nn.ReLU6))]
    try:
        model.train()
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet) if sign > 0 else float("-inf")


@dataclass
class SupernetEstimator(Estimator):
    config: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=5))
    space_id: str = "proxyless"
    bn_batches: int = 4
    name: ClassVar[str] = "supernet"
    accuracy: ClassVar[bool] = True

    @classmethod
    def create(cls, train_config: TrainConfig | None = None, space_id: str = "proxyless", **common) -> Estimator:
        cfg = train_config or TrainConfig(epochs=5, seed=common["seed"])
        return cls(**common, config=replace(cfg, seed=common["seed"]), space_id=space_id)

    @property
    def supernet(self):
        if "supernet" not in self._cache:
            from hwnas.search.supernet import SuperNet, train_single_path
            from hwnas.spaces import space_from_id

            net = SuperNet(space_from_id(self.space_id, self.resolution), self.dataset.classes, seed=self.seed)
            train_single_path(net, self.dataset, self.config, progress=self.progress)
            self._cache["supernet"] = self.config.runtime().place(net)  # scored where it trained
        return self._cache["supernet"]

    def prepare(self) -> None:
        self.supernet  # noqa: B018 -- trained once here; workers receive it with the estimator

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        if "supernet" in self._cache:
            import copy

            state["_cache"] = {"supernet": cpu_contiguous(copy.deepcopy(self._cache["supernet"]))}
        return state

    def score(self, arch: Arch) -> float:
        rt = self.config.runtime()
        net = rt.place(self.supernet)
        net.fix(arch.choices)
        net.recalibrate_bn(self.dataset.train, batches=self.bn_batches, batch_size=self.config.batch_size, runtime=rt)
        return evaluate(net, self.dataset.valid, rt, self.config.batch_size)


ESTIMATORS: Registry[type[Estimator]] = Registry("estimator")
for _cls in (TrainEstimator, NaswotEstimator, SupernetEstimator):
    ESTIMATORS.register(_cls.name)(_cls)


def make_estimator(name: str, *, data: str, resolution: int, seed: int, train_config: TrainConfig | None = None,
                   limit: int | None = None, space_id: str = "proxyless", augment: str = "auto") -> Estimator:
    return ESTIMATORS.get(name).create(train_config, space_id, data=data, resolution=resolution, seed=seed,
                                       limit=limit, augment=augment)
