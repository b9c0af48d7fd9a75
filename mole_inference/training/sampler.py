"""Mixed-task, rank-aware batch sampler whose batch at step s depends only on (seed, s).

It plays the role of `DistributedSampler` for our weighted draws (DistributedSampler cannot weight):
every rank draws the same global batch of `batch_size` indices from the dataset's sample weights
(with replacement: tasks and sources mix in every batch) and keeps its own contiguous slice, so the ranks
together see exactly the batch a single process would, and resuming at step s yields the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler

from mole_inference.errors import ConfigError


class MixedTaskSampler(Sampler[list[tuple[int, int]]]):
    """Yields, per step from `start_step` on, this rank's list of (sample index, augmentation seed)."""

    def __init__(self, weights: np.ndarray, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 start_step: int = 0, steps: int | None = None) -> None:
        if batch_size % world_size:
            raise ConfigError(f"training.batch_size={batch_size}: must be divisible by the {world_size} ranks")
        self.p = np.asarray(weights, dtype=np.float64)
        self.batch_size, self.seed = batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.start_step, self.steps = start_step, steps

    @property
    def per_rank(self) -> int:
        """Samples per rank per step."""
        return self.batch_size // self.world_size

    def batch(self, step: int) -> list[tuple[int, int]]:
        """This rank's (index, seed) pairs for `step`."""
        rng = np.random.default_rng([self.seed, step])
        idx = rng.choice(len(self.p), size=self.batch_size, replace=True, p=self.p)
        seeds = rng.integers(0, 2**62, size=self.batch_size)
        lo = self.rank * self.per_rank
        return [(int(i), int(s)) for i, s in zip(idx[lo : lo + self.per_rank], seeds[lo : lo + self.per_rank],
                                                 strict=True)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while self.steps is None or step < self.start_step + self.steps:
            yield self.batch(step)
            step += 1

    def __len__(self) -> int:
        if self.steps is None:
            raise TypeError("an endless MixedTaskSampler has no length")
        return self.steps
