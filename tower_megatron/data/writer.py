"""Megatron ``IndexedDatasetBuilder`` s, one per (source, language or direction, split).

File layout: ``<output_dir>/<source>/<tag>.<split>.bin/.idx`` where ``tag`` is the language
(``pt``) or the direction (``en-pt``), and ``split`` is train, valid or test. The prefix
``<source>/<tag>.<split>`` is what Megatron's ``IndexedDataset`` and blends take.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder, get_bin_path, get_idx_path

from tower_megatron.data.records import SourceSpec
from tower_megatron.data.stats import SourceStats
from tower_megatron.data.worker import ChunkResult


def _add_documents(builder: IndexedDatasetBuilder, tokens: np.ndarray, lengths: list[int]) -> None:
    """``builder.add_document(doc, [len(doc)])`` for many one-sequence documents at once.

    Does exactly what ``add_document`` does (write the tokens in the builder's dtype, extend the
    sequence lengths, one document boundary after each sequence) with one write per chunk instead
    of one per document: the per-document Python call was the reading process's largest cost.
    Tested byte-for-byte against ``add_document``.
    """
    builder.data_file.write(np.asarray(tokens, dtype=builder.dtype).tobytes(order="C"))
    start = len(builder.sequence_lengths)
    builder.sequence_lengths.extend(lengths)
    builder.document_indices.extend(range(start + 1, start + len(lengths) + 1))


class DatasetWriters:
    def __init__(self, root: Path, dtype: type) -> None:
        self.root = root
        self.dtype = dtype
        self._builders: dict[tuple[str, str, str], IndexedDatasetBuilder] = {}
        self._counts: dict[tuple[str, str, str], list[int]] = {}  # documents, tokens
        self.documents = 0

    def _builder(self, source: str, tag: str, split: str) -> IndexedDatasetBuilder:
        key = (source, tag, split)
        builder = self._builders.get(key)
        if builder is None:
            (self.root / source).mkdir(parents=True, exist_ok=True)
            builder = IndexedDatasetBuilder(
                get_bin_path(str(self.root / source / f"{tag}.{split}")), dtype=self.dtype
            )
            self._builders[key] = builder
            self._counts[key] = [0, 0]
        return builder

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
            lengths = res.lengths[docs].tolist()
            _add_documents(self._builder(spec.name, tag, split), tokens, lengths)
            counts = self._counts[(spec.name, tag, split)]
            counts[0] += len(docs)
            counts[1] += int(tokens.size)
            self.documents += len(docs)

    def finalize(self) -> dict[str, dict[str, dict[str, dict]]]:
        """Writes every ``.idx``; returns ``{source: {tag: {split: {prefix, documents, tokens}}}}``."""
        outputs: dict[str, dict[str, dict[str, dict]]] = {}
        for (source, tag, split), builder in sorted(self._builders.items()):
            prefix = f"{source}/{tag}.{split}"
            builder.finalize(get_idx_path(str(self.root / prefix)))
            docs, tokens = self._counts[(source, tag, split)]
            outputs.setdefault(source, {}).setdefault(tag, {})[split] = {
                "prefix": prefix,
                "documents": docs,
                "tokens": tokens,
            }
        return outputs

    def close(self) -> None:
        for builder in self._builders.values():
            builder.data_file.close()
