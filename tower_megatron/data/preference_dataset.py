"""Preference (DPO/WPO) training samples from ``preference`` token files: one (chosen, rejected)
pair per sample, right-padded, loss mask on the final response.

``data.paths`` / ``data.valid_paths`` as for SFT (:mod:`tower_megatron.data.sft_dataset`: prefixes
``<output_dir>/<source>/<tag>.train``, optional per-epoch weights); ``data.preference.overflow``
decides about pairs with a side longer than ``seq_length`` (``truncate`` keeps the first
``seq_length`` tokens, and drops a pair only when a side has no response token left; ``drop``
drops every overflowing pair; both counted in ``dataset.stats``).

A sample::

    tokens, labels (next token), position_ids: int64 [2, S]; loss_mask: float32 [2, S]
    (row 0 chosen, row 1 rejected; 1 where the label is a response token); index: int64 scalar,
    the pair's position in the concatenated ``data.paths`` prefixes, the same in every epoch (for
    per-pair reference log-probabilities).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import numpy as np
import torch

from tower_megatron.config.data import DataConfig
from tower_megatron.config.loader import ConfigError
from tower_megatron.data.sft_dataset import (
    ChatTokens,
    check_overflow,
    keep_documents,
    learned,
    pad_id_of,
    parse_paths,
)
from tower_megatron.data.sft_packing import cached_plan, epoch_documents

log = logging.getLogger(__name__)
PARTS = ("_chosen", "_rejected")


class _PairLengths:
    """What :func:`keep_documents` needs of a store: the longer side's length per pair."""

    def __init__(self, chosen: ChatTokens, rejected: ChatTokens) -> None:
        self.lengths = np.maximum(chosen.lengths, rejected.lengths)

    def __len__(self) -> int:
        return len(self.lengths)


class PreferenceDataset(torch.utils.data.Dataset):
    def __init__(
        self,
        prefixes: list[tuple[float, str]],
        overflow: str,
        *,
        seq_length: int,
        num_samples: int,
        seed: int,
        cache_dir: str,
        pad_id: int,
    ) -> None:
        check_overflow(overflow, "data.preference.overflow")
        self.seq_length, self.pad_id = seq_length, pad_id
        paths = [p for _, p in prefixes]
        self.sides = [ChatTokens(paths, part) for part in PARTS]
        if not np.array_equal(self.sides[0].offsets, self.sides[1].offsets):
            raise ValueError(f"{paths}: chosen and rejected files hold different numbers of pairs")
        self.stats: dict[str, Any] = {}

        def has_loss(i: int) -> bool:
            return all(learned(side.get(i, seq_length)[1][1:], "last").any() for side in self.sides)

        pairs = _PairLengths(*self.sides)
        keep = keep_documents(pairs, seq_length, overflow, has_loss, self.stats)  # type: ignore[arg-type]
        if not len(keep):
            raise ValueError(f"no preference pairs to train on in {paths} ({self.stats})")
        owners = np.repeat(np.arange(len(prefixes)), np.diff(self.sides[0].offsets))[keep]
        key = {"kind": "preference", "prefixes": [(w, os.path.abspath(p)) for w, p in prefixes],
               "seq": seq_length, "n": num_samples, "seed": seed, "overflow": overflow}  # fmt: skip

        def plan() -> tuple[np.ndarray, np.ndarray]:
            order, epoch = [], 0
            while epoch == 0 or sum(map(len, order)) < num_samples:
                rng = np.random.default_rng([seed, epoch, 0xD70])
                order.append(epoch_documents(keep, owners, [w for w, _ in prefixes], rng))
                epoch += 1
            self.stats["epochs"] = epoch
            flat = np.concatenate(order).astype(np.int64)
            return np.arange(len(flat) + 1, dtype=np.int64), flat

        _, self.order = cached_plan(cache_dir, key, pairs.lengths, plan)
        self.num_samples = num_samples if num_samples > 0 else len(self.order)  # one epoch
        self.stats["pairs"] = len(keep)
        log.info("preference data %s: %s", paths, json.dumps(self.stats))

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        s = self.seq_length
        pair = int(self.order[index])
        tokens = np.full((2, s), self.pad_id, np.int64)
        labels = np.full((2, s), self.pad_id, np.int64)
        loss_mask = np.zeros((2, s), np.float32)
        for row, side in enumerate(self.sides):
            text, mask = side.get(pair, s)
            n = len(text)
            tokens[row, :n] = text
            labels[row, : n - 1] = text[1:]
            loss_mask[row, : n - 1] = learned(mask[1:], "last")  # the response, not earlier turns
        position_ids = np.broadcast_to(np.arange(s, dtype=np.int64), (2, s)).copy()
        return {
            "tokens": torch.from_numpy(tokens),
            "labels": torch.from_numpy(labels),
            "loss_mask": torch.from_numpy(loss_mask),
            "position_ids": torch.from_numpy(position_ids),
            "index": torch.tensor(pair, dtype=torch.int64),
        }


def build_preference_datasets(
    job: Any,
    tokenizer: Any,
    *,
    seq_length: int,
    train_samples: int,
    valid_samples: int,
    seed: int,
    cache_dir: str,
) -> tuple[PreferenceDataset, dict[str, PreferenceDataset]]:
    """(training dataset, {validation name: dataset}) from ``job.data`` (see the module docstring)."""
    data: DataConfig = job.data
    check_overflow(data.preference.overflow, "data.preference.overflow")
    train_paths = parse_paths(list(data.paths), part=PARTS[0])
    if not train_paths:
        raise ConfigError(
            "data.paths: no preference data (prefixes written by a preprocess 'preference' source)"
        )
    common = dict(seq_length=seq_length, seed=seed, cache_dir=cache_dir, pad_id=pad_id_of(tokenizer))
    overflow = data.preference.overflow
    train = PreferenceDataset(train_paths, overflow, num_samples=train_samples, **common)
    valid = {
        name: PreferenceDataset(
            parse_paths([p], f"data.valid_paths.{name}", PARTS[0]),
            overflow,
            num_samples=valid_samples,
            **common,
        )
        for name, p in data.valid_paths.items()
    }
    return train, valid
