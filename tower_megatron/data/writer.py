"""Token files in Megatron's ``IndexedDataset`` format, one per (source, language or direction, split).

File layout: ``<output_dir>/<source>/<tag>.<split>.bin/.idx`` where ``tag`` is the language
(``pt``) or the direction (``en-pt``), and ``split`` is train, valid or test. The prefix
``<source>/<tag>.<split>`` is what Megatron's ``IndexedDataset`` and blends take.

:class:`TokenFile` writes exactly the bytes Megatron-Core's ``IndexedDatasetBuilder`` writes for
``add_document(doc, [len(doc)])`` per document and ``finalize`` (tested byte for byte), without
importing Megatron-Core: its package import pulls in torch and the whole core library, 3-6 s of
CPU per preprocess run, more than a third of a tens-of-MB job on two cores. Reading stays with
Megatron's own ``IndexedDataset``.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Optional

import numpy as np

from tower_megatron.data.records import SourceSpec
from tower_megatron.data.stats import SourceStats
from tower_megatron.data.worker import ChunkResult

# Megatron's index (.idx) layout, version 1: magic, version, dtype code, sequence count, document
# count, int32 sequence lengths, int64 byte offsets of the sequences, int64 document boundaries.
_INDEX_HEADER = b"MMIDIDX\x00\x00"
# Dtype codes: megatron.core.datasets.indexed_dataset.DType.
_DTYPE_CODES = {
    np.uint8: 1, np.int8: 2, np.int16: 3, np.int32: 4, np.int64: 5, np.float64: 6, np.float32: 7, np.uint16: 8
}


def token_dtype(vocab_size: int) -> type:
    """The token dtype Megatron picks for a vocabulary (``DType.optimal_dtype``): uint16 below
    65,500 entries, else int32."""
    return np.uint16 if vocab_size < 65500 else np.int32


class TokenFile:
    """One ``<prefix>.bin`` / ``<prefix>.idx`` pair, every document a single sequence."""

    def __init__(self, prefix: Path | str, dtype: type) -> None:
        if dtype not in _DTYPE_CODES:
            raise ValueError(f"unsupported token dtype {dtype}; known: {[d.__name__ for d in _DTYPE_CODES]}")
        self.prefix, self.dtype = str(prefix), dtype
        self._bin = open(f"{self.prefix}.bin", "wb")  # noqa: SIM115 (closed in finalize/close)
        self._lengths: list[np.ndarray] = []

    def add(self, values: np.ndarray, lengths: np.ndarray | list[int]) -> None:
        """Appends ``len(lengths)`` documents whose values are ``values``, concatenated."""
        self._bin.write(np.asarray(values, dtype=self.dtype).tobytes(order="C"))
        self._lengths.append(np.asarray(lengths, dtype=np.int64))

    def finalize(self) -> None:
        """Closes the ``.bin`` and writes the ``.idx``."""
        self._bin.close()
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int64)
        n = len(lengths)
        pointers = np.zeros(n, np.int64)  # byte offset of each sequence
        np.cumsum(lengths[:-1] * np.dtype(self.dtype).itemsize, out=pointers[1:])
        with open(f"{self.prefix}.idx", "wb") as idx:
            idx.write(_INDEX_HEADER + struct.pack("<Q", 1) + struct.pack("<B", _DTYPE_CODES[self.dtype]))
            idx.write(struct.pack("<Q", n) + struct.pack("<Q", n + 1))
            idx.write(lengths.astype(np.int32).tobytes(order="C"))
            idx.write(pointers.tobytes(order="C"))
            idx.write(np.arange(n + 1, dtype=np.int64).tobytes(order="C"))  # document i = sequence i

    def close(self) -> None:
        self._bin.close()


class DatasetWriters:
    def __init__(self, root: Path, dtype: type) -> None:
        self.root = root
        self.dtype = dtype
        self._files: dict[tuple[str, str, str], TokenFile] = {}
        self._counts: dict[tuple[str, str, str], list[int]] = {}  # documents, tokens
        self.documents = 0

    def _file(self, source: str, tag: str, split: str) -> TokenFile:
        key = (source, tag, split)
        file = self._files.get(key)
        if file is None:
            (self.root / source).mkdir(parents=True, exist_ok=True)
            file = self._files[key] = TokenFile(self.root / source / f"{tag}.{split}", self.dtype)
            self._counts[key] = [0, 0]
        return file

    def add_chunk(
        self, spec: SourceSpec, res: ChunkResult, seen: Optional[set[bytes]], stats: SourceStats
    ) -> None:
        """Appends a chunk's documents in input order, skipping records whose key was seen."""
        offsets = np.zeros(len(res.lengths) + 1, np.int64)
        np.cumsum(res.lengths, out=offsets[1:])
        groups: dict[tuple[str, str], list[int]] = {}  # (tag, split) -> document indices, in order
        d = 0
        for _, key, split, n in res.records:
            if seen is not None:
                if key in seen:
                    stats.filter("duplicate", res.tags[d])
                    d += n
                    continue
                seen.add(key)
            stats.kept += 1
            for doc in range(d, d + n):
                groups.setdefault((res.tags[doc], split), []).append(doc)
            d += n
        for (tag, split), docs in groups.items():
            if docs[-1] - docs[0] + 1 == len(docs):  # contiguous (the usual case): one slice
                tokens = res.tokens[offsets[docs[0]] : offsets[docs[-1] + 1]]
            else:
                tokens = np.concatenate([res.tokens[offsets[i] : offsets[i + 1]] for i in docs])
            self._file(spec.name, tag, split).add(tokens, res.lengths[docs])
            counts = self._counts[(spec.name, tag, split)]
            counts[0] += len(docs)
            counts[1] += int(tokens.size)
            self.documents += len(docs)

    def finalize(self) -> dict[str, dict[str, dict[str, dict]]]:
        """Writes every ``.idx``; returns ``{source: {tag: {split: {prefix, documents, tokens}}}}``."""
        outputs: dict[str, dict[str, dict[str, dict]]] = {}
        for (source, tag, split), file in sorted(self._files.items()):
            file.finalize()
            docs, tokens = self._counts[(source, tag, split)]
            outputs.setdefault(source, {}).setdefault(tag, {})[split] = {
                "prefix": f"{source}/{tag}.{split}",
                "documents": docs,
                "tokens": tokens,
            }
        return outputs

    def close(self) -> None:
        for file in self._files.values():
            file.close()
