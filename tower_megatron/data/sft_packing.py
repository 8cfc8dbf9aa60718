"""Packing plans of the SFT/preference datasets: which documents form each row, per epoch.

Deterministic given the seed: a seeded shuffle per epoch, first-fit decreasing with ties in input
order, plans cached as ``.npy`` under a hash of the settings and the document lengths.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np


def epoch_documents(
    docs: np.ndarray, owners: np.ndarray, weights: list[float], rng: np.random.Generator
) -> np.ndarray:
    """One epoch's documents: each prefix's repeated ``weight`` times (fraction: a random subset),
    shuffled."""
    out = []
    for p, weight in enumerate(weights):
        mine = docs[owners == p]
        whole, frac = int(weight), weight - int(weight)
        out += [mine] * whole
        if frac > 0:
            out.append(rng.choice(mine, size=round(frac * len(mine)), replace=False))
    order = np.concatenate(out) if out else np.zeros(0, np.int64)
    return order[rng.permutation(len(order))]


def pack_first_fit_decreasing(lengths: np.ndarray, capacity: int) -> list[list[int]]:
    """Bins (lists of positions into ``lengths``): longest first, each into the first bin with
    room. Ties keep the input order, so a shuffled input gives a seeded, deterministic packing."""
    order = np.argsort(-lengths, kind="stable")
    room = np.empty(len(lengths), np.int64)
    bins: list[list[int]] = []
    for pos in order:
        n = int(lengths[pos])
        fits = np.flatnonzero(room[: len(bins)] >= n)
        if len(fits):
            b = int(fits[0])
            bins[b].append(int(pos))
            room[b] -= n
        else:
            room[len(bins)] = capacity - n
            bins.append([int(pos)])
    return bins


def cached_plan(cache_dir: str, key: dict, lengths: np.ndarray, build: Any) -> tuple[np.ndarray, np.ndarray]:
    """``build()`` → (row offsets, row documents), saved as ``.npy`` in ``cache_dir`` under a hash
    of ``key`` and the document lengths, and loaded from there next time."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode() + lengths.tobytes()).hexdigest()[:16]
    root = Path(cache_dir)
    files = [root / f"{key['kind']}_{digest}_{name}.npy" for name in ("row_offsets", "row_docs")]
    if all(f.is_file() for f in files):
        return np.load(files[0]), np.load(files[1], mmap_mode="r")
    arrays = build()
    root.mkdir(parents=True, exist_ok=True)
    for f, array in zip(files, arrays, strict=True):
        tmp = f.with_name(f".{f.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as handle:
            np.save(handle, array)
        os.replace(tmp, f)  # ranks building the same plan write identical bytes
    return arrays
