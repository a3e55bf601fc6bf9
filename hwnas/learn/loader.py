"""Batches of an :class:`~hwnas.learn.data.ImageSet` through a torch DataLoader: workers, sharding, order.

The order is a function of (seed, epoch) alone, and a batch is the *global* batch: with W processes each rank
takes its contiguous slice of it (and with ``micro_batch`` the loop splits that further), so one process with
the same global batch sees exactly the images W processes see together. Batches are fetched whole (the
ImageSet decodes a list of indices at once), in ``workers`` processes when there are any.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from hwnas.learn.data import ImageSet
from hwnas.learn.distributed import World


class GlobalBatches(torch.utils.data.Sampler):
    """Lists of positions: the seeded permutation (or the natural order) in global batches, this rank's slice."""

    def __init__(self, n: int, batch_size: int, *, shuffle: bool, seed: int = 0, world: World = World(),
                 min_batch: int = 1) -> None:
        self.n, self.batch_size, self.shuffle, self.seed, self.world = n, batch_size, shuffle, seed, world
        self.min_batch = min_batch  # a final global batch smaller than this is dropped (BatchNorm needs 2)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> list[np.ndarray]:
        order = (np.random.default_rng([self.seed, self.epoch]).permutation(self.n) if self.shuffle
                 else np.arange(self.n))
        batches = [order[i:i + self.batch_size] for i in range(0, self.n, self.batch_size)]
        return [b for b in batches if len(b) >= self.min_batch]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches():
            part = np.array_split(batch, self.world.size)[self.world.rank]
            yield part.tolist()

    def __len__(self) -> int:
        return len(self.global_batches())


def _whole(batch):
    return batch  # the ImageSet returns (x, y) already batched


def loader(data: ImageSet, batch_size: int, *, shuffle: bool, seed: int = 0, epoch: int = 0, workers: int = 0,
           world: World = World(), min_batch: int = 1, pin: bool = False) -> torch.utils.data.DataLoader:
    """One epoch's loader over ``data``: global batches of ``batch_size``, this rank's slice of each."""
    sampler = GlobalBatches(len(data), batch_size, shuffle=shuffle, seed=seed, world=world, min_batch=min_batch)
    sampler.set_epoch(epoch)
    data.set_epoch(epoch)
    return torch.utils.data.DataLoader(data, batch_size=None, sampler=sampler, collate_fn=_whole,
                                       num_workers=workers, pin_memory=pin, persistent_workers=False,
                                       prefetch_factor=4 if workers else None)
