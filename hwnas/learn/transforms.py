"""Decoding and augmentation of image batches, reproducible per image.

Training augmentation is the standard pair for the resolution: pad-and-crop (by an eighth of the side) plus a
horizontal flip at small resolutions (≤ 64 px, CIFAR-style), random-resized-crop plus flip above (ImageNet-style);
evaluation only resizes. A flip is left out for datasets whose mirrored images change class (digits).

Random draws are a hash of (seed, epoch, image index), not a stream: an image gets the same crop whichever
worker decodes it and however the data is sharded across processes, so training is deterministic for a seed
and a DDP run sees exactly the batches one process would.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

SMALL = 64  # at or below: pad-and-crop; above: random-resized-crop
RRC_SCALE = (0.25, 1.0)  # fraction of the image area a random-resized-crop keeps
RRC_RATIO = (3 / 4, 4 / 3)
AUGMENTATIONS = ("auto", "flip-crop", "crop", "none")

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def uniforms(seed: int, epoch: int, index: np.ndarray, draws: int) -> np.ndarray:
    """(len(index), draws) uniforms in [0, 1), a pure function of (seed, epoch, index, draw): splitmix64."""
    with np.errstate(over="ignore"):
        base = (np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)) ^ (np.uint64(epoch) * np.uint64(0xBF58476D1CE4E5B9))
        z = (np.asarray(index, np.uint64)[:, None] * np.uint64(draws) + np.arange(draws, dtype=np.uint64)[None])
        z = z + base + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def resolve(augment: str, flip_ok: bool) -> str:
    """``auto`` as the dataset allows: flip-crop, or crop where a mirrored image changes class."""
    if augment == "auto":
        return "flip-crop" if flip_ok else "crop"
    return augment


def to_float(batch: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, C) → float32 (N, 3, H, W) in [0, 1]; one channel is replicated to three."""
    x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float().div_(255.0)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=x.shape[-1] > size)


def pad_crop_flip(x: torch.Tensor, u: np.ndarray, flip: bool) -> torch.Tensor:
    """Pad by an eighth of the side (zeros), crop back at the offsets ``u[:, 0:2]``, flip where ``u[:, 2] < ½``."""
    n, _, h, w = x.shape
    pad = max(1, h // 8)
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = np.minimum((u[:, 0] * (2 * pad + 1)).astype(int), 2 * pad)
    dx = np.minimum((u[:, 1] * (2 * pad + 1)).astype(int), 2 * pad)
    out = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    if flip:
        mirror = torch.from_numpy(u[:, 2] < 0.5)
        out[mirror] = out[mirror].flip(-1)
    return out


def crop_box(height: int, width: int, u: np.ndarray) -> tuple[int, int, int, int]:
    """A random-resized-crop box (top, left, h, w) from 4 uniforms: area fraction and log aspect drawn first,
    the offsets last; the whole image when the draw does not fit."""
    area = height * width * (RRC_SCALE[0] + u[0] * (RRC_SCALE[1] - RRC_SCALE[0]))
    lo, hi = math.log(RRC_RATIO[0]), math.log(RRC_RATIO[1])
    ratio = math.exp(lo + u[1] * (hi - lo))
    w = int(round(math.sqrt(area * ratio)))
    h = int(round(math.sqrt(area / ratio)))
    if not (0 < w <= width and 0 < h <= height):
        h, w = height, width
    return int(u[2] * (height - h + 1)) if height > h else 0, int(u[3] * (width - w + 1)) if width > w else 0, h, w


def resized_crop_flip(image: torch.Tensor, size: int, u: np.ndarray, flip: bool) -> torch.Tensor:
    """One float (3, H, W) image: random-resized-crop to ``size`` from ``u[0:4]``, flipped when ``u[4] < ½``."""
    top, left, h, w = crop_box(image.shape[-2], image.shape[-1], u)
    out = resize(image[None, :, top:top + h, left:left + w], size)[0]
    return out.flip(-1) if flip and u[4] < 0.5 else out


DRAWS = 5  # uniforms per image: enough for either augmentation


def augment_batch(x: torch.Tensor, size: int, u: np.ndarray, policy: str) -> torch.Tensor:
    """Float images (N, 3, H, W) at their own size → (N, 3, size, size), augmented by ``policy``."""
    if policy == "none":
        return resize(x, size)
    flip = policy == "flip-crop"
    if size <= SMALL:
        return pad_crop_flip(resize(x, size), u, flip)
    return torch.stack([resized_crop_flip(img, size, row, flip) for img, row in zip(x, u)])
