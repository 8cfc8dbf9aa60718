"""SFT training samples from ``sft`` token files: packed (or one-per-row) conversations with
assistant-only loss masks.

``data.paths`` lists prefixes written by ``tower-megatron preprocess`` (``<output_dir>/<source>/<tag>.train``;
a ``..._text_document`` file prefix works too), optionally weighted as ``[w1, p1, w2, p2]``: a
weight is how often each conversation of that prefix is seen per epoch (2: twice, 0.5: a seeded
half); ``data.valid_paths`` names validation prefixes. ``data.sft`` (:class:`SFTDataConfig`) chooses
packing, the overflow policy and loss on all or only the last assistant turn.

A sample is a dict of fixed-shape tensors::

    tokens int64 [S]; labels int64 [S] (next token); loss_mask float32 [S] (1 where the label is an
    assistant token to learn); position_ids int64 [S] (restart at 0 per conversation);
    segment_ids int64 [S] (1..k for the k conversations of the row, 0 = padding)

Packing: per epoch, a seeded shuffle of the conversations, then first-fit decreasing within groups
of ``pack_group`` conversations, then a seeded shuffle of the rows; more epochs (new shuffles)
until ``num_samples`` rows exist. The plan is cached in ``cache_dir`` as ``.npy`` files keyed by
the data and the settings. Token files stay memory-mapped: only document lengths are in RAM.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tower_megatron.config.data import DataConfig, SFTDataConfig
from tower_megatron.config.loader import ConfigError
from tower_megatron.data.sft_packing import cached_plan, epoch_documents, pack_first_fit_decreasing
from tower_megatron.data.sft_tokens import MASK_FINAL

log = logging.getLogger(__name__)
SUFFIX = "_text_document"


def chat_prefix(prefix: str) -> str:
    return prefix[: -len(SUFFIX)] if prefix.endswith(SUFFIX) else prefix


def parse_paths(paths: list[str], key: str = "data.paths", part: str = "") -> list[tuple[float, str]]:
    """``[p1, p2]`` or ``[w1, p1, w2, p2]`` → ``[(weight, prefix)]``; a prefix with glob
    characters (``out/*/*.train``) stands for every prefix whose token file it matches (``part``:
    ``_chosen`` for preference files), each with the pattern's weight."""

    def number(x: Any) -> bool:
        try:
            float(x)
        except (TypeError, ValueError):
            return False
        return True

    items = [str(p) for p in paths]
    if items and number(items[0]):
        if len(items) % 2:
            raise ConfigError(f"{key}: the weighted form needs pairs of weight, prefix")
        pairs = [(float(items[i]), chat_prefix(items[i + 1])) for i in range(0, len(items), 2)]
    else:
        pairs = [(1.0, chat_prefix(p)) for p in items]
    out = []
    for weight, prefix in pairs:
        if weight < 0:
            raise ConfigError(f"{key}: negative weight {weight} for {prefix}")
        if not glob.has_magic(prefix):
            out.append((weight, prefix))
            continue
        tail = f"{part}{SUFFIX}.idx"
        matches = sorted(m[: -len(tail)] for m in glob.glob(prefix + tail))
        if not matches:
            raise ConfigError(f"{key}: no token files match {prefix!r} (looked for {prefix + tail})")
        out += [(weight, m) for m in matches]
    return out


def missing_chat_files(prefix: str, parts: tuple[str, ...] = ("",)) -> list[str]:
    """The ``.bin``/``.idx`` files of an sft (or preference: parts ``_chosen``, ``_rejected``)
    prefix that do not exist; for the config check before training starts."""
    prefix = chat_prefix(prefix)
    files = [
        f"{prefix}{p}_{k}_document{ext}" for p in parts for k in ("text", "mask") for ext in (".bin", ".idx")
    ]
    return [f for f in files if not Path(f).is_file()]


def chat_data_errors(data: DataConfig, kind: str) -> list[str]:
    """Config-check messages for ``data.paths``/``data.valid_paths`` of an ``sft`` or
    ``preference`` stage (missing token files, globs matching nothing, bad weights)."""
    parts = ("",) if kind == "sft" else ("_chosen", "_rejected")
    errors: list[str] = []
    if not data.paths:
        errors.append(
            f"no training data: set data.paths to {kind} prefixes (<output_dir>/<source>/<tag>.train)"
        )
    keys = [("data.paths", list(data.paths))] + [
        (f"data.valid_paths.{n}", [p]) for n, p in data.valid_paths.items()
    ]
    for key, paths in keys:
        try:
            prefixes = parse_paths(paths, key, parts[0]) if paths else []
        except ConfigError as exc:
            errors.append(str(exc))
            continue
        for _, prefix in prefixes:
            missing = missing_chat_files(prefix, parts)
            if missing:
                errors.append(
                    f"{key}: missing {missing[0]}"
                    + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                )
    return errors


class ChatTokens:
    """Token and mask documents of several prefixes as one indexable collection (memory-mapped)."""

    def __init__(self, prefixes: list[str], part: str = "") -> None:
        from megatron.core.datasets.indexed_dataset import IndexedDataset

        self.texts, self.masks, lengths = [], [], []
        for prefix in prefixes:
            missing = missing_chat_files(prefix, (part,))
            if missing:
                raise FileNotFoundError(f"SFT/preference data: missing {missing[0]}")
            text = IndexedDataset(f"{prefix}{part}_text_document")
            mask = IndexedDataset(f"{prefix}{part}_mask_document")
            if not np.array_equal(text.sequence_lengths, mask.sequence_lengths):
                raise ValueError(f"{prefix}{part}: token and mask files have different documents")
            self.texts.append(text)
            self.masks.append(mask)
            lengths.append(np.asarray(text.sequence_lengths, np.int64))
        self.lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
        self.offsets = np.cumsum([0, *(len(x) for x in lengths)])

    def __len__(self) -> int:
        return len(self.lengths)

    def get(self, index: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """The first ``limit`` tokens and mask values of document ``index``."""
        which = int(np.searchsorted(self.offsets, index, side="right")) - 1
        local = int(index - self.offsets[which])
        n = min(int(self.lengths[index]), limit)
        text = self.texts[which].get(local, 0, n)
        mask = self.masks[which].get(local, 0, n)
        return np.asarray(text, np.int64), np.asarray(mask)


def learned(mask: np.ndarray, loss_on: str) -> np.ndarray:
    """Mask values → bool per token: every assistant turn, or only the final one."""
    return mask == MASK_FINAL if loss_on == "last" else mask > 0


def check_overflow(policy: str, key: str) -> None:
    if policy not in ("truncate", "drop"):
        raise ConfigError(f"{key}: must be truncate or drop, got {policy!r}")


def check_sft_config(cfg: SFTDataConfig) -> None:
    """:class:`ConfigError` naming the key of a bad ``data.sft`` value."""
    check_overflow(cfg.overflow, "data.sft.overflow")
    if cfg.loss_on not in ("all", "last"):
        raise ConfigError(f"data.sft.loss_on: must be all or last, got {cfg.loss_on!r}")
    if cfg.pack_group < 1:
        raise ConfigError(f"data.sft.pack_group: must be >= 1, got {cfg.pack_group}")


def keep_documents(
    store: ChatTokens, seq_length: int, overflow: str, has_loss: Any, stats: dict[str, int]
) -> np.ndarray:
    """Indices of the documents to train on: overflowing ones dropped (``drop``) or kept for
    truncation unless truncation leaves nothing to learn (``has_loss(index)`` on the cut
    document). Counts go to ``stats``."""
    over = np.flatnonzero(store.lengths > seq_length)
    stats["documents"] = len(store)
    stats["overflowing"] = len(over)
    keep = np.ones(len(store), bool)
    if overflow == "drop":
        keep[over] = False
        stats["dropped_overflow"] = len(over)
    else:
        empty = [i for i in over if not has_loss(int(i))]
        keep[empty] = False
        stats["truncated"] = len(over) - len(empty)
        stats["dropped_no_loss_after_truncation"] = len(empty)
    return np.flatnonzero(keep)


class SFTDataset(torch.utils.data.Dataset):
    def __init__(
        self,
        prefixes: list[tuple[float, str]],
        cfg: SFTDataConfig,
        *,
        seq_length: int,
        num_samples: int,
        seed: int,
        cache_dir: str,
        pad_id: int,
    ) -> None:
        check_sft_config(cfg)
        self.cfg, self.seq_length, self.pad_id = cfg, seq_length, pad_id
        self.store = ChatTokens([p for _, p in prefixes])
        self.stats: dict[str, Any] = {}

        def has_loss(i: int) -> bool:
            return bool(learned(self.store.get(i, seq_length)[1][1:], cfg.loss_on).any())

        owners = np.repeat(np.arange(len(prefixes)), np.diff(self.store.offsets))
        docs = keep_documents(self.store, seq_length, cfg.overflow, has_loss, self.stats)
        if not len(docs):
            raise ValueError(f"no SFT conversations to train on in {[p for _, p in prefixes]} ({self.stats})")
        key = {"kind": "sft", "prefixes": [(w, os.path.abspath(p)) for w, p in prefixes], "seq": seq_length,
               "n": num_samples, "seed": seed, "packing": cfg.packing, "group": cfg.pack_group,
               "overflow": cfg.overflow, "loss_on": cfg.loss_on}  # fmt: skip
        self.row_offsets, self.row_docs = cached_plan(
            cache_dir,
            key,
            self.store.lengths,
            lambda: self._plan(docs, owners[docs], prefixes, num_samples, seed),
        )
        self.num_samples = num_samples if num_samples > 0 else len(self.row_offsets) - 1
        lengths = np.minimum(self.store.lengths[self.row_docs], seq_length)
        self.stats["rows"] = len(self.row_offsets) - 1
        self.stats["fill_rate"] = float(lengths.sum() / max(1, self.stats["rows"] * seq_length))
        log.info("SFT data %s: %s", [p for _, p in prefixes], json.dumps(self.stats))

    def _plan(self, docs, owners, prefixes, num_samples, seed) -> tuple[np.ndarray, np.ndarray]:
        rows: list[np.ndarray] = []
        lengths = np.minimum(self.store.lengths, self.seq_length)
        epoch = 0
        while epoch == 0 or len(rows) < num_samples:
            rng = np.random.default_rng([seed, epoch, 0x5F7])
            order = epoch_documents(docs, owners, [w for w, _ in prefixes], rng)
            epoch_rows: list[np.ndarray] = []
            if self.cfg.packing:
                for start in range(0, len(order), self.cfg.pack_group):
                    group = order[start : start + self.cfg.pack_group]
                    epoch_rows += [
                        group[b] for b in pack_first_fit_decreasing(lengths[group], self.seq_length)
                    ]
                epoch_rows = [epoch_rows[i] for i in rng.permutation(len(epoch_rows))]
            else:
                epoch_rows = [order[i : i + 1] for i in range(len(order))]
            if not epoch_rows:
                raise ValueError("an SFT epoch has no conversations (all weights 0?)")
            rows += epoch_rows
            epoch += 1
        self.stats["epochs"] = epoch
        offsets = np.cumsum([0, *(len(r) for r in rows)]).astype(np.int64)
        return offsets, np.concatenate(rows).astype(np.int64)

    def __len__(self) -> int:
        return self.num_samples

    def row(self, index: int) -> np.ndarray:
        """The document indices packed into row ``index``."""
        return self.row_docs[self.row_offsets[index] : self.row_offsets[index + 1]]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        s = self.seq_length
        tokens = np.full(s, self.pad_id, np.int64)
        labels = np.full(s, self.pad_id, np.int64)
        loss_mask = np.zeros(s, np.float32)
        position_ids = np.zeros(s, np.int64)
        segment_ids = np.zeros(s, np.int64)
        pos = 0
        for k, doc in enumerate(self.row(index), start=1):
            text, mask = self.store.get(int(doc), s)
            n = len(text)
            tokens[pos : pos + n] = text
            labels[pos : pos + n - 1] = text[1:]  # a segment's last label is never learned
            loss_mask[pos : pos + n - 1] = learned(mask[1:], self.cfg.loss_on)
            position_ids[pos : pos + n] = np.arange(n)
            segment_ids[pos : pos + n] = k
            pos += n
        return {
            "tokens": torch.from_numpy(tokens),
            "labels": torch.from_numpy(labels),
            "loss_mask": torch.from_numpy(loss_mask),
            "position_ids": torch.from_numpy(position_ids),
            "segment_ids": torch.from_numpy(segment_ids),
        }


def pad_id_of(tokenizer: Any) -> int:
    for attr in ("pad", "eod"):
        try:
            value = getattr(tokenizer, attr)
        except (AttributeError, NotImplementedError):
            continue
        if isinstance(value, int) and value >= 0:
            return value
    return 0


def build_sft_datasets(
    job: Any,
    tokenizer: Any,
    *,
    seq_length: int,
    train_samples: int,
    valid_samples: int,
    seed: int,
    cache_dir: str,
) -> tuple[SFTDataset, dict[str, SFTDataset]]:
    """(training dataset, {validation name: dataset}) from ``job.data`` (see the module docstring)."""
    data: DataConfig = job.data
    check_sft_config(data.sft)
    train_paths = parse_paths(list(data.paths))
    if not train_paths:
        raise ConfigError("data.paths: no SFT training data (prefixes written by a preprocess 'sft' source)")
    common = dict(seq_length=seq_length, seed=seed, cache_dir=cache_dir, pad_id=pad_id_of(tokenizer))
    train = SFTDataset(train_paths, data.sft, num_samples=train_samples, **common)
    valid = {
        name: SFTDataset(
            parse_paths([p], f"data.valid_paths.{name}"), data.sft, num_samples=valid_samples, **common
        )
        for name, p in data.valid_paths.items()
    }
    return train, valid
