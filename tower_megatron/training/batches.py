"""Deterministic micro-batch iteration: the sample order depends only on the seed and the number
of samples consumed, never on the data-parallel layout, so DP=2 sees exactly the samples DP=1
sees in a step, and a resumed run continues where the saved one stopped."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader


class MicroBatchSampler:
    """Yields the index list of this rank's micro-batches, starting after ``consumed_samples``.

    A global batch of ``mbs × num_micro × dp`` samples is consumed in order; within each group of
    ``mbs × dp`` consecutive samples, DP rank r takes the r-th slice of ``mbs`` (as Megatron-LM's
    pretraining sampler does).
    """

    def __init__(self, total: int, consumed_samples: int, micro_batch_size: int, dp_rank: int, dp_size: int):
        if consumed_samples >= total:
            raise ValueError(f"consumed {consumed_samples} samples of {total}: the dataset is exhausted")
        self.total = total
        self.start = consumed_samples
        self.mbs = micro_batch_size
        self.dp_rank = dp_rank
        self.dp_size = dp_size

    def __iter__(self) -> Iterator[list[int]]:
        group = self.mbs * self.dp_size
        offset = self.dp_rank * self.mbs
        for base in range(self.start, self.total - group + 1, group):
            yield list(range(base + offset, base + offset + self.mbs))

    def __len__(self) -> int:
        return (self.total - self.start) // (self.mbs * self.dp_size)


def make_loader(
    dataset: Any,
    micro_batch_size: int,
    dp_rank: int,
    dp_size: int,
    consumed_samples: int = 0,
    num_workers: int = 0,
    collate_fn: Callable | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    sampler = MicroBatchSampler(len(dataset), consumed_samples, micro_batch_size, dp_rank, dp_size)
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        persistent_workers=num_workers > 0,
    )
    return iter(loader)
