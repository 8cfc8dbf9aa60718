"""Token + loss-mask files of the ``sft`` and ``preference`` kinds (Megatron ``IndexedDataset`` s).

Per (source, tag, split) the prefix is ``<source>/<tag>.<split>`` and the files are

- ``sft``: ``<prefix>_text_document.bin/.idx`` (token ids) and ``<prefix>_mask_document.bin/.idx``
  (uint8 mask values, see :mod:`tower_megatron.data.sft_tokens`), one document per conversation,
  identical document boundaries;
- ``preference``: the same pair for ``_chosen`` and ``_rejected`` (``<prefix>_chosen_text_document``,
  ...): document ``i`` of all four files is pair ``i``.

Both are memory-mapped by the training datasets (:mod:`tower_megatron.data.sft_dataset`,
:mod:`tower_megatron.data.preference_dataset`); nothing loads a whole file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder, get_bin_path, get_idx_path

from tower_megatron.data.records import SourceSpec
from tower_megatron.data.stats import SourceStats
from tower_megatron.data.worker import ChunkResult

PARTS = {"sft": ("",), "preference": ("_chosen", "_rejected")}  # file-name part per document of a record


def file_prefixes(prefix: str, kind: str) -> dict[str, tuple[str, str]]:
    """``{part: (text prefix, mask prefix)}`` of a stats prefix; part "" for sft."""
    return {p: (f"{prefix}{p}_text_document", f"{prefix}{p}_mask_document") for p in PARTS[kind]}


def _append(builder: IndexedDatasetBuilder, values: np.ndarray, lengths: list[int]) -> None:
    # What IndexedDatasetBuilder.add_document does per document, for many at once.
    builder.data_file.write(np.asarray(values, dtype=builder.dtype).tobytes(order="C"))
    start = len(builder.sequence_lengths)
    builder.sequence_lengths.extend(lengths)
    builder.document_indices.extend(range(start + 1, start + len(lengths) + 1))


class ChatDatasetWriters:
    def __init__(self, root: Path, dtype: type) -> None:
        self.root, self.dtype = root, dtype
        self._builders: dict[
            tuple[str, str, str], dict[str, tuple[IndexedDatasetBuilder, IndexedDatasetBuilder]]
        ] = {}
        self._counts: dict[tuple[str, str, str], list[int]] = {}  # records, tokens
        self._kinds: dict[str, str] = {}
        self.documents = 0

    def _group(self, spec: SourceSpec, tag: str, split: str) -> dict:
        key = (spec.name, tag, split)
        if key not in self._builders:
            (self.root / spec.name).mkdir(parents=True, exist_ok=True)
            self._kinds[spec.name] = spec.kind
            self._builders[key] = {
                part: (
                    IndexedDatasetBuilder(get_bin_path(str(self.root / text)), dtype=self.dtype),
                    IndexedDatasetBuilder(get_bin_path(str(self.root / mask)), dtype=np.uint8),
                )
                for part, (text, mask) in file_prefixes(f"{spec.name}/{tag}.{split}", spec.kind).items()
            }
            self._counts[key] = [0, 0]
        return self._builders[key]

    def add_chunk(
        self, spec: SourceSpec, res: ChunkResult, seen: Optional[set[bytes]], stats: SourceStats
    ) -> None:
        """Appends a chunk's records in input order, skipping records whose key was seen."""
        parts = PARTS[spec.kind]
        offsets = np.zeros(len(res.lengths) + 1, np.int64)
        np.cumsum(res.lengths, out=offsets[1:])
        d = 0
        for _, key, split, n in res.records:
            if n != len(parts):  # a worker/writer mismatch would silently misalign pairs
                raise AssertionError(f"{spec.kind} record with {n} documents")
            if seen is not None and key in seen:
                stats.filter("duplicate", res.tags[d])
                d += n
                continue
            if seen is not None:
                seen.add(key)
            stats.kept += 1
            group = self._group(spec, res.tags[d], split)
            counts = self._counts[(spec.name, res.tags[d], split)]
            for part, doc in zip(parts, range(d, d + n), strict=True):
                lo, hi = offsets[doc], offsets[doc + 1]
                text, mask = group[part]
                _append(text, res.tokens[lo:hi], [int(hi - lo)])
                _append(mask, res.masks[lo:hi], [int(hi - lo)])
                counts[1] += int(hi - lo)
            counts[0] += 1
            self.documents += n
            d += n

    def finalize(self) -> dict[str, dict[str, dict[str, dict]]]:
        """Writes every ``.idx``; ``{source: {tag: {split: {prefix, documents, tokens}}}}`` where
        documents counts conversations (sft) or pairs (preference)."""
        outputs: dict[str, dict[str, dict[str, dict]]] = {}
        for (source, tag, split), group in sorted(self._builders.items()):
            prefix = f"{source}/{tag}.{split}"
            for part, (text, mask) in file_prefixes(prefix, self._kinds[source]).items():
                group[part][0].finalize(get_idx_path(str(self.root / text)))
                group[part][1].finalize(get_idx_path(str(self.root / mask)))
            docs, tokens = self._counts[(source, tag, split)]
            outputs.setdefault(source, {}).setdefault(tag, {})[split] = {
                "prefix": prefix,
                "documents": docs,
                "tokens": tokens,
            }
        return outputs

    def close(self) -> None:
        for group in self._builders.values():
            for text, mask in group.values():
                text.data_file.close()
                mask.data_file.close()
