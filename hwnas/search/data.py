"""Datasets for search and training: built-in digits (no download), CIFAR-10 batches, an image folder.

A spec names one: ``digits`` (scikit-learn's 8x8 handwritten digits, 1,797 images, upsampled to the space's
resolution), ``cifar10:DIR`` (the standard python batches ``data_batch_1..5`` and ``test_batch`` from a local
folder), ``imagefolder:DIR`` (one sub-folder per class). Every dataset comes as float32 NCHW tensors,
normalized per channel, split deterministically by the seed: ``train`` (weights), ``valid`` (architecture
decisions and reported accuracy).

CIFAR-10's batches are pickles. They are read with an unpickler that admits only the builtin containers and
numpy's array reconstruction, so a crafted file cannot run code.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hwnas.core.errors import ConfigError

SPECS = ("digits", "cifar10:DIR", "imagefolder:DIR")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
MAX_IMAGES = 2_000_000
MIN_TRAIN = 4  # BatchNorm trains on two or more; NASWOT's kernel wants a few inputs


@dataclass(frozen=True)
class Split:
    x: torch.Tensor  # (N, 3, R, R) float32
    y: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.y)

    def batches(self, batch_size: int, generator: torch.Generator | None = None):
        """(x, y) minibatches; shuffled when a generator is given."""
        order = torch.randperm(len(self), generator=generator) if generator is not None else torch.arange(len(self))
        for i in range(0, len(self), batch_size):
            idx = order[i:i + batch_size]
            yield self.x[idx], self.y[idx]


@dataclass(frozen=True)
class Dataset:
    name: str
    classes: int
    train: Split
    valid: Split


_FOLDER_FIX = {"cifar10": "give cifar10:DIR, DIR the extracted cifar-10-batches-py folder",
               "imagefolder": "give imagefolder:DIR, DIR holding one sub-folder of images per class"}


def check_spec(spec: str) -> tuple[str, Path | None]:
    """``spec`` as (kind, folder), or a :class:`ConfigError` naming what is wrong with it and the fix.

    Cheap (no image is read): a search checks its ``--data`` with it before it writes anything."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"--data {spec!r} is not a dataset.", f"use one of {', '.join(SPECS)}")
    kind, sep, arg = spec.partition(":")
    if kind == "digits":
        if sep:
            raise ConfigError(f"--data {spec!r}: the built-in digits take no folder.", "give --data digits")
        return kind, None
    if kind not in _FOLDER_FIX:
        raise ConfigError(f"unknown dataset '{spec}'.", f"use one of {', '.join(SPECS)} (any other dataset as "
                          "imagefolder:DIR, one sub-folder of images per class)")
    if not arg.strip():
        raise ConfigError(f"--data {spec!r} names no folder.", _FOLDER_FIX[kind])
    folder = Path(arg).expanduser()
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise ConfigError(f"--data {spec!r}: {folder} {what}.", _FOLDER_FIX[kind])
    return kind, folder


def load(spec: str, resolution: int, *, seed: int = 0, valid_fraction: float = 0.2,
         limit: int | None = None) -> Dataset:
    """The dataset ``spec`` at ``resolution``, split by ``seed``; ``limit`` caps the images used (quick runs)."""
    kind, folder = check_spec(spec)
    if kind == "digits":
        x, y, name = *_digits(), "digits"
    elif kind == "cifar10":
        x, y, name = *_cifar10(folder), f"cifar10:{folder}"
    else:
        x, y, name = *_imagefolder(folder, resolution), f"imagefolder:{folder}"
    if not 0.0 < valid_fraction < 1.0:
        raise ConfigError(f"valid fraction {valid_fraction} is out of range.", "use a value between 0 and 1")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit} leaves no image.", "give --limit of at least 10, or leave it out")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    if limit:
        order = order[:limit]
    n_valid = max(1, int(round(len(order) * valid_fraction)))
    if len(order) - n_valid < MIN_TRAIN:
        raise ConfigError(f"{name} at --limit {limit} leaves {len(order) - n_valid} training images "
                          f"(of {len(order)}); training needs at least {MIN_TRAIN}.",
                          "raise --limit (10 or more) or leave it out" if limit
                          else "add images to the dataset")
    xs = _resize(torch.from_numpy(np.ascontiguousarray(x[order])), resolution)
    mean, std = xs[n_valid:].mean(dim=(0, 2, 3), keepdim=True), xs[n_valid:].std(dim=(0, 2, 3), keepdim=True)
    xs = (xs - mean) / std.clamp_min(1e-6)
    ys = torch.from_numpy(np.asarray(y)[order].astype(np.int64))
    classes = int(ys.max()) + 1
    return Dataset(name, classes, train=Split(xs[n_valid:], ys[n_valid:]), valid=Split(xs[:n_valid], ys[:n_valid]))


def _resize(x: torch.Tensor, resolution: int) -> torch.Tensor:
    x = x.float()
    if x.shape[-1] == resolution and x.shape[-2] == resolution:
        return x
    return torch.nn.functional.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    gray = (d.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8) in [0, 1]
    return np.repeat(gray, 3, axis=1), d.target


class _SafeUnpickler(pickle.Unpickler):
    """Admits the builtins and numpy arrays that CIFAR-10's batches hold, and nothing that could run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = _SafeUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (OSError, pickle.UnpicklingError, KeyError, ValueError, TypeError, EOFError) as exc:
        raise ConfigError(f"{path} is not a CIFAR-10 python batch ({exc}).",
                          "point cifar10:DIR at the extracted cifar-10-batches-py folder") from None
    if len(data) != len(labels) or (len(labels) and not 0 <= labels.min() <= labels.max() < 10):
        raise ConfigError(f"{path} has inconsistent data and labels.", "re-extract the CIFAR-10 archive")
    return data, labels


def _cifar10(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    files = [folder / f"data_batch_{i}" for i in range(1, 6)] + [folder / "test_batch"]
    present = [f for f in files if f.is_file()]
    if not present:
        raise ConfigError(f"no CIFAR-10 batches (data_batch_1..5, test_batch) in {folder}.",
                          "extract cifar-10-python.tar.gz and point cifar10:DIR at cifar-10-batches-py")
    parts = [_read_batch(f) for f in present]
    x = np.concatenate([p[0] for p in parts]).astype(np.float32) / 255.0
    return x, np.concatenate([p[1] for p in parts])


def _imagefolder(folder: Path, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    if not folder.is_dir():
        raise ConfigError(f"image folder {folder} does not exist.", "give imagefolder:DIR with one folder per class")
    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    files = [(f, c) for c, d in enumerate(classes) for f in sorted(d.rglob("*")) if f.suffix.lower() in IMAGE_SUFFIXES]
    if len(classes) < 2 or not files:
        raise ConfigError(f"{folder} needs at least two class folders with images ({', '.join(IMAGE_SUFFIXES)}).",
                          "lay it out as DIR/<class>/<image>")
    if len(files) > MAX_IMAGES:
        raise ConfigError(f"{folder} has {len(files)} images, more than {MAX_IMAGES}.", "use a smaller folder")
    xs = np.empty((len(files), 3, resolution, resolution), np.float32)
    for i, (f, _) in enumerate(files):
        try:
            with Image.open(f) as im:
                im = im.convert("RGB").resize((resolution, resolution), Image.BILINEAR)
                xs[i] = np.asarray(im, np.float32).transpose(2, 0, 1) / 255.0
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
            raise ConfigError(f"cannot read image {f} ({exc}).", "remove or replace the file") from None
    return xs, np.array([c for _, c in files])
