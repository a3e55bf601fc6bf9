"""Datasets for search and training: three splits of a source, streamed as normalized float batches.

:func:`load` reads a spec (:mod:`hwnas.learn.formats`) into ``train`` (weights learn on it), ``valid`` (every
search decision sees it) and ``test`` (the answer's reported accuracy; nothing else touches it). The test split
is the dataset's own test set where it has one (CIFAR's ``test_batch``, IDX ``t10k``, a folder's ``test/``), else
a seeded part of the pool; ``valid`` is carved from the pool (a folder's own ``val/`` next to ``test/`` is used as
given). ``limit`` caps the pool (quick runs); the test split is always whole.

Each split is an :class:`ImageSet`: indexed by a list of indices it returns a whole (x, y) batch, decoded and
augmented then (training only), so a :class:`torch.utils.data.DataLoader` over it streams; nothing holds the
dataset as float. Normalization statistics come from a seeded sample of the training split and are recorded
(:meth:`Dataset.describe`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from hwnas.core.errors import ConfigError
from hwnas.learn import transforms
from hwnas.learn.formats import ArraySource, Source, check_spec, read, specs

MIN_TRAIN = 4  # BatchNorm trains on two or more; NASWOT's kernel wants a few inputs
TEST_FRACTION = 0.2  # of the pool, for a dataset without a test set of its own
STATS_SAMPLE = 512  # training images the normalization statistics are taken from

__all__ = ["Dataset", "ImageSet", "MIN_TRAIN", "check_spec", "load", "specs"]


@dataclass
class ImageSet(torch.utils.data.Dataset):
    """The images ``indices`` of ``source`` at ``resolution``; ``augment`` a policy (training) or "none"."""

    source: Source
    indices: np.ndarray
    resolution: int
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    augment: str = "none"
    seed: int = 0
    epoch: int = field(default=0, compare=False)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def labels(self) -> np.ndarray:
        return self.source.labels[self.indices]

    def set_epoch(self, epoch: int) -> None:
        """The augmentation draws of ``epoch`` (a loader's workers take the value their iterator started with)."""
        self.epoch = int(epoch)

    def __getitem__(self, items: int | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch (x float32 (n, 3, R, R) normalized, y int64 (n,)) of the positions ``items`` (one: n = 1)."""
        pos = np.atleast_1d(np.asarray(items, dtype=np.int64))
        index = self.indices[pos]
        u = transforms.uniforms(self.seed, self.epoch, index, transforms.DRAWS)
        if isinstance(self.source, ArraySource):
            x = transforms.augment_batch(transforms.to_float(self.source.take(index)), self.resolution, u,
                                         self.augment)
        else:
            x = self._decode(index, u)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (x - mean) / std, torch.from_numpy(self.source.labels[index])

    def _decode(self, index: np.ndarray, u: np.ndarray) -> torch.Tensor:
        from PIL import Image

        size, policy = self.resolution, self.augment
        large = policy != "none" and size > transforms.SMALL
        arrays = []
        for i, row in zip(index, u):
            im = self.source.open(i)
            if large:
                top, left, h, w = transforms.crop_box(im.height, im.width, row)
                im = im.crop((left, top, left + w, top + h))
            im = im.resize((size, size), Image.BILINEAR)
            if large and policy == "flip-crop" and row[4] < 0.5:
                im = im.transpose(Image.FLIP_LEFT_RIGHT)
            arrays.append(np.asarray(im, np.uint8))
        x = transforms.to_float(np.stack(arrays))
        if policy != "none" and not large:
            x = transforms.pad_crop_flip(x, u, policy == "flip-crop")
        return x

    def head(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` images (evaluation transform, or this split's own), as one batch."""
        return self[np.arange(min(n, len(self)))]

    def subset(self, positions: np.ndarray) -> ImageSet:
        return replace(self, indices=self.indices[np.asarray(positions, dtype=np.int64)])

    def evaluation(self) -> ImageSet:
        """The same images without augmentation."""
        return replace(self, augment="none")


@dataclass(frozen=True)
class Dataset:
    name: str
    classes: int
    train: ImageSet
    valid: ImageSet
    test: ImageSet
    augment: str  # the training augmentation, resolved
    test_source: str  # where the test split came from

    def describe(self) -> dict:
        """What a run records about its data: the splits' sizes and origin, normalization, augmentation."""
        return {"data": self.name, "classes": self.classes, "resolution": self.train.resolution,
                "splits": {"train": len(self.train), "valid": len(self.valid), "test": len(self.test)},
                "test_split": self.test_source, "augment": self.augment,
                "normalize": {"mean": list(self.train.mean), "std": list(self.train.std)}}


def load(spec: str, resolution: int, *, seed: int = 0, valid_fraction: float = 0.2, limit: int | None = None,
         augment: str = "auto") -> Dataset:
    """The dataset ``spec`` at ``resolution``, split by ``seed``; ``limit`` caps the pool (train + valid)."""
    if not 0.0 < valid_fraction < 1.0:
        raise ConfigError(f"valid fraction {valid_fraction} is out of range.", "use a value between 0 and 1")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit} leaves no image.", "give --limit of at least 10, or leave it out")
    if augment not in transforms.AUGMENTATIONS:
        raise ConfigError(f"unknown augmentation '{augment}'.", f"use one of {', '.join(transforms.AUGMENTATIONS)}")
    parts = read(spec)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(parts.pool))
    if parts.test is None:
        n_test = max(1, int(round(len(order) * TEST_FRACTION)))
        test, order = ImageSet(parts.pool, np.sort(order[:n_test]), resolution), order[n_test:]
        test_source = f"{TEST_FRACTION:.0%} of the pool, held out by the seed (the dataset has no test set)"
    else:
        test = ImageSet(parts.test, np.arange(len(parts.test)), resolution)
        test_source = "the dataset's own test set"
    if limit:
        order = order[:limit]
    if parts.valid is not None:
        valid, train_idx = ImageSet(parts.valid, np.arange(len(parts.valid)), resolution), order
    else:
        n_valid = max(1, int(round(len(order) * valid_fraction)))
        valid, train_idx = ImageSet(parts.pool, np.sort(order[:n_valid]), resolution), order[n_valid:]
    if len(train_idx) < MIN_TRAIN:
        where = f"{parts.name} at --limit {limit}" if limit else parts.name
        raise ConfigError(f"{where} leaves {len(train_idx)} training images (of {len(order)} after the test "
                          f"split); training needs at least {MIN_TRAIN}.",
                          "raise --limit (10 or more) or leave it out" if limit else "add images to the dataset")
    train = ImageSet(parts.pool, np.sort(train_idx), resolution, seed=seed)
    mean, std = _statistics(train, seed)
    policy = transforms.resolve(augment, parts.flip)
    norm = {"mean": mean, "std": std}
    return Dataset(parts.name, parts.classes, replace(train, augment=policy, **norm), replace(valid, **norm),
                   replace(test, **norm), policy, test_source)


def _statistics(train: ImageSet, seed: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of a seeded sample of training images (evaluation transform)."""
    n = min(STATS_SAMPLE, len(train))
    pick = np.sort(np.random.default_rng(seed + 7).choice(len(train), n, replace=False))
    sample = train.subset(pick)
    total = torch.zeros(3, dtype=torch.float64)
    square = torch.zeros(3, dtype=torch.float64)
    for start in range(0, n, 64):  # in chunks: 512 images at 224 px would be 300 MB as one batch
        x, _ = sample[np.arange(start, min(n, start + 64))]
        total += x.double().sum(dim=(0, 2, 3))
        square += x.double().pow(2).sum(dim=(0, 2, 3))
    count = n * train.resolution * train.resolution
    mean = total / count
    std = (square / count - mean.pow(2)).clamp_min(0).sqrt().clamp_min(1e-3)
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)



def calibration_images(spec: str, resolution: int, n: int, *, seed: int = 0, limit: int | None = None) -> np.ndarray:
    """``n`` images of the training split of ``spec`` as the network sees them at inference (normalized as in
    training, no augmentation): what INT8 quantization calibrates its ranges on, never the test split. ``seed``
    and ``limit`` must be the training run's, so that the split and its normalization are the same."""
    if n < 1:
        raise ConfigError(f"--calibration-images {n} gives no image to calibrate on.",
                          "pass a count of at least 1 (a few hundred is usual)")
    images, _ = load(spec, resolution, seed=seed, limit=limit).train.evaluation().head(n)
    return images.numpy()
