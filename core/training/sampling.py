"""Training order and augmentation randomness as functions of (seed, epoch, sample).

Loader worker processes keep their own RNG state, which no checkpoint saves: with persistent workers a
resumed run drew other augmentations than an uninterrupted one. Here nothing depends on that state:

- ``EpochSampler`` shuffles with a generator seeded by (seed, epoch) and hands each index to the
  dataset as ``epoch * n + i``;
- ``SeededSamples`` wraps any dataset plugin's training set: for item ``epoch * n + i`` it seeds
  torch's, numpy's and Python's RNGs from (seed, epoch, i), calls the plugin's ``dataset[i]`` and
  restores the previous RNG state.

So a run gives the same batches with 0 or 2 workers, resumed or not; dataset plugins need no change.
The runner sets ``sampler.epoch`` before each epoch (not ``set_epoch``: accelerate calls that with its
own count of passes, which restarts at 0 on resume).
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

_MASK = (1 << 63) - 1


def mix(*parts: int) -> int:
    """A 63-bit seed from integers, stable across processes and Python runs (no ``hash``)."""
    return int(np.random.SeedSequence([int(p) & _MASK for p in parts]).generate_state(2, np.uint64)[0]) & _MASK


class EpochSampler(Sampler):
    """A permutation of ``range(n)`` seeded by (seed, epoch), yielded as ``epoch * n + i``."""

    def __init__(self, n: int, seed: int, shuffle: bool = True):
        self.n, self.seed, self.shuffle, self.epoch = int(n), int(seed), shuffle, 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        if self.shuffle:
            gen = torch.Generator().manual_seed(mix(self.seed, self.epoch, 0x5A3D))
            order = torch.randperm(self.n, generator=gen).tolist()
        else:
            order = list(range(self.n))
        base = self.epoch * self.n
        return iter([base + i for i in order])


class SeededSamples(Dataset):
    """``dataset[i]`` drawn under RNGs seeded by (seed, epoch, i), for indices ``epoch * len + i``."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed, self.n = dataset, int(seed), len(dataset)

    def __len__(self) -> int:
        return self.n

    def __getattr__(self, name):  # labels, files, ... of the wrapped dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, k: int):
        epoch, i = divmod(int(k), self.n)
        s = mix(self.seed, epoch, i)
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            random.seed(s)
            np.random.seed(s % (2 ** 32))
            try:
                return self.dataset[i]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)
