"""Where images come from: each dataset format read as labelled sources whose images are decoded per item.

A spec names a format and, for all but the built-in one, a folder:

- ``digits``: scikit-learn's 8x8 handwritten digits (1,797 images, no download); no test set of its own.
- ``cifar10:DIR`` / ``cifar100:DIR``: the python batches (``data_batch_1..5`` + ``test_batch``; ``train`` +
  ``test`` with fine labels for CIFAR-100).
- ``mnist:DIR``: IDX files, gzipped or not (``train-images-idx3-ubyte[.gz]`` and its labels, ``t10k-*`` the test
  set): MNIST, Fashion-MNIST, KMNIST. Uncompressed files are memory-mapped; grayscale is replicated to 3 channels.
- ``imagefolder:DIR``: one sub-folder of images per class. With ``train/`` and ``test/`` sub-folders those are
  used as given (and ``val/`` as the validation split when present); with ``train/`` and ``val/`` only, ``val/``
  is the test split (as ImageNet's is reported); without them the folder is one pool.

A source holds labels and a way to get images, never the dataset as float: arrays stay uint8 (CIFAR's pickles
and gzipped IDX files are decompressed to uint8 arrays, at most a few hundred MB), files stay paths.

CIFAR's batches are pickles. They are read with an unpickler that admits only the builtin containers and
numpy's array reconstruction, so a crafted file cannot run code.
"""

from __future__ import annotations

import gzip
import io
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwnas.core.errors import ConfigError
from hwnas.core.registry import Registry

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
MAX_IMAGES = 20_000_000


@dataclass(frozen=True)
class ArraySource:
    """Images as a uint8 (N, H, W, C) array, in memory or memory-mapped."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: np.ndarray) -> np.ndarray:
        return np.asarray(self.images[np.asarray(idx)])


@dataclass(frozen=True)
class FileSource:
    """Images as files, decoded when an item is read."""

    paths: tuple[Path, ...]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def open(self, i: int):
        """The image ``i`` as an RGB PIL image, or a :class:`ConfigError` naming the file that cannot be read."""
        from PIL import Image, UnidentifiedImageError

        path = self.paths[int(i)]
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
            raise ConfigError(f"cannot read image {path} ({exc}).", "remove or replace the file") from None


Source = ArraySource | FileSource


@dataclass(frozen=True)
class Parts:
    """What a format reads: the pool that training and validation are drawn from, and the dataset's own
    held-out sets where it has them."""

    name: str
    classes: int
    pool: Source
    test: Source | None = None  # the dataset's own test set; None: carved from the pool
    valid: Source | None = None  # a folder's own val/ (next to test/); None: carved from the pool
    flip: bool = True  # whether a mirrored image is still of its class (not for digits)


@dataclass(frozen=True)
class Format:
    name: str
    read: Callable[[Path | None], Parts]
    folder: str = ""  # what DIR must hold ("" for a built-in dataset)
    probe: Callable[[Path], None] | None = None  # a cheap look for the files (no image read); raises ConfigError

    @property
    def spec(self) -> str:
        return f"{self.name}:DIR" if self.folder else self.name


FORMATS: Registry[Format] = Registry("dataset")


def register(name: str, folder: str = "", probe: Callable[[Path], None] | None = None):
    def wrap(read: Callable[[Path | None], Parts]) -> Callable[[Path | None], Parts]:
        FORMATS.register(name)(Format(name, read, folder, probe))
        return read

    return wrap


def specs() -> list[str]:
    return [FORMATS[n].spec for n in FORMATS]


def check_spec(spec: str) -> tuple[Format, Path | None]:
    """``spec`` as (format, folder), or a :class:`ConfigError` naming what is wrong with it and the fix.

    Cheap (nothing is read): a search checks its ``--data`` with it before it writes anything."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"--data {spec!r} is not a dataset.", f"use one of {', '.join(specs())}")
    kind, sep, arg = spec.partition(":")
    if kind not in FORMATS:
        raise ConfigError(f"unknown dataset '{spec}'.", f"use one of {', '.join(specs())} (any other dataset as "
                          "imagefolder:DIR, one sub-folder of images per class)")
    fmt = FORMATS[kind]
    if not fmt.folder:
        if sep:
            raise ConfigError(f"--data {spec!r}: the built-in {kind} take no folder.", f"give --data {kind}")
        return fmt, None
    fix = f"give {fmt.spec}, DIR {fmt.folder}"
    if not arg.strip():
        raise ConfigError(f"--data {spec!r} names no folder.", fix)
    folder = Path(arg).expanduser()
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise ConfigError(f"--data {spec!r}: {folder} {what}.", fix)
    if fmt.probe is not None:
        fmt.probe(folder)
    return fmt, folder


def read(spec: str) -> Parts:
    fmt, folder = check_spec(spec)
    return fmt.read(folder)


# -- digits ---------------------------------------------------------------------------------------------------
@register("digits")
def _digits(_folder: Path | None) -> Parts:
    from sklearn.datasets import load_digits

    d = load_digits()
    gray = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # (N, 8, 8, 1)
    return Parts("digits", 10, ArraySource(gray, d.target.astype(np.int64)), flip=False)


# -- CIFAR ----------------------------------------------------------------------------------------------------
class _SafeUnpickler(pickle.Unpickler):
    """Admits the builtins and numpy arrays that CIFAR's batches hold, and nothing that could run code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


_CIFAR = {"cifar10": ("cifar-10-python.tar.gz", "cifar-10-batches-py"), "cifar100": ("cifar-100-python.tar.gz",
                                                                                "cifar-100-python")}
_CIFAR_TRAIN = {"cifar10": [f"data_batch_{i}" for i in range(1, 6)], "cifar100": ["train"]}


def _read_batch(path: Path, key: bytes, classes: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    fix = f"point {what}:DIR at the extracted {_CIFAR[what][1]} folder"
    try:
        batch = _SafeUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[key], dtype=np.int64)
    except (OSError, pickle.UnpicklingError, KeyError, ValueError, TypeError, EOFError) as exc:
        raise ConfigError(f"{path} is not a {what} python batch ({exc}).", fix) from None
    if len(data) != len(labels) or (len(labels) and not 0 <= labels.min() <= labels.max() < classes):
        raise ConfigError(f"{path} has inconsistent data and labels.", f"re-extract the {what} archive")
    return data, labels


def _cifar_source(paths: list[Path], key: bytes, classes: int, what: str) -> ArraySource:
    parts = [_read_batch(p, key, classes, what) for p in paths]
    images = np.ascontiguousarray(np.concatenate([p[0] for p in parts]).transpose(0, 2, 3, 1))  # uint8 NHWC
    return ArraySource(images, np.concatenate([p[1] for p in parts]))


def _cifar_probe(what: str) -> Callable[[Path], None]:
    def probe(folder: Path) -> None:
        train = _CIFAR_TRAIN[what]
        if not any((folder / f).is_file() for f in train):
            archive, made = _CIFAR[what]
            raise ConfigError(f"no {what} training batches ({', '.join(train)}) in {folder}.",
                              f"extract {archive} and point {what}:DIR at the {made} folder it makes")

    return probe


def _cifar(folder: Path, test: str, key: bytes, classes: int, what: str) -> Parts:
    present = [folder / f for f in _CIFAR_TRAIN[what] if (folder / f).is_file()]
    test_file = folder / test
    test_src = _cifar_source([test_file], key, classes, what) if test_file.is_file() else None
    return Parts(f"{what}:{folder}", classes, _cifar_source(present, key, classes, what), test_src)


@register("cifar10", "the extracted cifar-10-batches-py folder", _cifar_probe("cifar10"))
def _cifar10(folder: Path | None) -> Parts:
    return _cifar(folder, "test_batch", b"labels", 10, "cifar10")


@register("cifar100", "the extracted cifar-100-python folder", _cifar_probe("cifar100"))
def _cifar100(folder: Path | None) -> Parts:
    return _cifar(folder, "test", b"fine_labels", 100, "cifar100")


# -- IDX (MNIST, Fashion-MNIST, KMNIST) -------------------------------------------------------------------------
_IDX_UBYTE = 0x08


def _idx_file(folder: Path, prefix: str, kind: str) -> Path | None:
    names = [f"{prefix}-{kind}", f"{prefix}-{kind}.gz"]
    found = [folder / n for n in names if (folder / n).is_file()]
    if not found:
        found = sorted(p for p in folder.glob(f"*{prefix}-{kind}*") if p.is_file())
    return found[0] if found else None


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzipped or not) of unsigned bytes as an array: memory-mapped when uncompressed."""
    fix = "give mnist:DIR a folder of IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-*)"
    try:
        raw = None
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
            head = raw[:4 + 4 * 255]
        else:
            with open(path, "rb") as f:
                head = f.read(4 + 4 * 255)  # the magic number and at most 255 dimensions
        if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != _IDX_UBYTE:
            raise ValueError("not an IDX file of unsigned bytes")
        ndim = head[3]
        dims = tuple(int(d) for d in np.frombuffer(head[4:4 + 4 * ndim], ">u4"))
        if len(dims) != ndim or not ndim:
            raise ValueError("truncated header")
        offset, count = 4 + 4 * ndim, int(np.prod(dims))
        if raw is not None:
            if len(raw) - offset < count:
                raise ValueError(f"holds {len(raw) - offset} bytes of the {count} its header declares")
            return np.frombuffer(raw, np.uint8, count, offset).reshape(dims)
        if path.stat().st_size - offset < count:
            raise ValueError("shorter than its header declares")
        return np.memmap(path, np.uint8, "r", offset, dims)
    except (OSError, EOFError, ValueError, gzip.BadGzipFile) as exc:
        raise ConfigError(f"{path} is not a readable IDX file ({exc}).", fix) from None


def _idx_pair(folder: Path, prefix: str) -> ArraySource | None:
    images, labels = _idx_file(folder, prefix, "images-idx3-ubyte"), _idx_file(folder, prefix, "labels-idx1-ubyte")
    if images is None and labels is None:
        return None
    if images is None or labels is None:
        missing = f"{prefix}-images-idx3-ubyte" if images is None else f"{prefix}-labels-idx1-ubyte"
        raise ConfigError(f"{folder} has {prefix}'s {'labels' if images is None else 'images'} but no {missing}[.gz].",
                          "put both IDX files of each set in the folder")
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise ConfigError(f"{images.name} ({x.shape}) and {labels.name} ({y.shape}) do not match.",
                          "use the images and labels of the same set")
    return ArraySource(x[..., None], y.astype(np.int64))


def _mnist_probe(folder: Path) -> None:
    if all(_idx_file(folder, "train", kind) is None for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")):
        raise ConfigError(f"no IDX training files (train-images-idx3-ubyte[.gz]) in {folder}.",
                          "point mnist:DIR at the folder of MNIST-format files (Fashion-MNIST: apt-get install "
                          "dataset-fashion-mnist puts them in /usr/share/datasets/fashion-mnist)")


@register("mnist", "a folder of IDX files (MNIST, Fashion-MNIST or KMNIST: train-*-ubyte[.gz], t10k-*)", _mnist_probe)
def _mnist(folder: Path | None) -> Parts:
    train, test = _idx_pair(folder, "train"), _idx_pair(folder, "t10k")
    classes = int(max(train.labels.max(), test.labels.max() if test is not None else 0)) + 1
    return Parts(f"mnist:{folder}", classes, train, test)


# -- image folders --------------------------------------------------------------------------------------------
def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir())


def _files(folder: Path, classes: list[str]) -> FileSource:
    index = {c: i for i, c in enumerate(classes)}
    found = [(f, index[d.name]) for d in _class_dirs(folder) if d.name in index
             for f in sorted(d.rglob("*")) if f.suffix.lower() in IMAGE_SUFFIXES]
    unknown = [d.name for d in _class_dirs(folder) if d.name not in index]
    if unknown:
        raise ConfigError(f"{folder} has class folder(s) {', '.join(unknown[:5])} that train/ has not.",
                          "give every split the same class folders")
    if len(found) > MAX_IMAGES:
        raise ConfigError(f"{folder} has {len(found)} images, more than {MAX_IMAGES}.", "use a smaller folder")
    return FileSource(tuple(f for f, _ in found), np.array([c for _, c in found], dtype=np.int64))


@register("imagefolder", "one sub-folder of images per class (or train/ and test/ or val/ sub-folders of those)")
def _imagefolder(folder: Path | None) -> Parts:
    subs = {name: folder / name for name in ("train", "val", "test") if (folder / name).is_dir()}
    root = subs.get("train", folder)
    classes = [d.name for d in _class_dirs(root)]
    pool = _files(root, classes) if classes else None
    if pool is None or len(classes) < 2 or not len(pool):
        raise ConfigError(f"{root} needs at least two class folders with images ({', '.join(sorted(IMAGE_SUFFIXES))}).",
                          "lay it out as DIR/<class>/<image> (or DIR/train/<class>/<image> and DIR/test/...)")
    test = valid = None
    if "train" in subs:
        if "test" in subs:
            test = _files(subs["test"], classes)
            valid = _files(subs["val"], classes) if "val" in subs else None
        elif "val" in subs:
            test = _files(subs["val"], classes)
    return Parts(f"imagefolder:{folder}", len(classes), pool, test or None, valid or None)
