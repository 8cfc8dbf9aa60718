"""Rendered chats → token ids + a per-token loss mask, in preprocessing worker processes.

The whole rendered text is tokenized in one call (never piece by piece: a BPE merge across a turn
boundary would then give other ids than ``apply_chat_template``), with each token's offsets into
the text; a token belongs to an assistant span when it overlaps it. That is the rule of
``transformers``' ``return_assistant_tokens_mask`` (the tokens holding the span's first through last
character), so masks agree with it exactly (tested).

Mask values stored per token (uint8): 0 not learned, 1 an earlier assistant turn, 2 the final
assistant turn, so the choice "loss on every assistant turn or the last one" is made at load time.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from tower_megatron.config.data import TokenizerConfig
from tower_megatron.data.chat_format import format_for
from tower_megatron.data.tokenizer import BatchEncoder

MASK_NONE, MASK_EARLIER, MASK_FINAL = 0, 1, 2

# A document's assistant spans as (start char, end char, mask value).
Spans = list[tuple[int, int, int]]


def span_mask(begins: np.ndarray, ends: np.ndarray, spans: Spans) -> np.ndarray:
    """Per-token mask from token offsets (``begins``/``ends``, non-decreasing, in the units of
    ``spans``). A zero-width token (a byte-fallback piece before the one carrying the character)
    occupies its start position."""
    mask = np.zeros(len(begins), np.uint8)
    ends = np.maximum(ends, begins + 1)
    for start, end, value in spans:
        first = int(np.searchsorted(ends, start, side="right"))
        last = int(np.searchsorted(begins, end, side="left"))  # exclusive
        mask[first:last] = value
    return mask


class ChatEncoder(BatchEncoder):
    """:class:`BatchEncoder` plus offsets: ``encode_chats`` gives ids and masks of rendered chats."""

    def __init__(self, cfg: TokenizerConfig, chat_format: str, threads: int = -1) -> None:
        super().__init__(cfg, threads)
        fmt = format_for(chat_format)
        self.bos: Optional[int] = None
        if fmt.bos_token:
            self.bos = self.token_id(fmt.bos_token)
            if self.bos is None:
                raise ValueError(
                    f"chat format {fmt.name!r} starts with {fmt.bos_token!r}, which the tokenizer {cfg.path} lacks"
                )

    def token_id(self, token: str) -> Optional[int]:
        if self.type == "sentencepiece":
            i = self._sp.piece_to_id(token)
            return None if i == self._sp.unk_id() and token != self._sp.id_to_piece(i) else int(i)
        return self._hf.token_to_id(token)

    def _ids_and_offsets(self, texts: list[str]) -> list[tuple[list[int], np.ndarray, np.ndarray, bool]]:
        """``(ids, begins, ends, in_bytes)`` per text."""
        out = []
        if self.type == "sentencepiece":
            for proto in self._sp.encode(texts, return_type="proto", num_threads=self.threads):
                # one pass over the pieces (each attribute access is a Python-level proto read)
                table = np.array([(p.id, p.begin, p.end) for p in proto.pieces], np.int64).reshape(-1, 3)
                # sentencepiece offsets are UTF-8 byte offsets
                out.append((table[:, 0].tolist(), table[:, 1], table[:, 2], True))
            return out
        for enc in self._hf.encode_batch(texts, add_special_tokens=False):
            offsets = np.asarray(enc.offsets, np.int64).reshape(-1, 2)
            out.append((enc.ids, offsets[:, 0], offsets[:, 1], False))
        return out

    def encode_chats(self, texts: list[str], spans: list[Spans]) -> tuple[list[list[int]], list[np.ndarray]]:
        """Ids (BOS first when the format has one) and the matching uint8 masks."""
        ids_out, masks_out = [], []
        for text, doc_spans, (ids, begins, ends, in_bytes) in zip(
            texts, spans, self._ids_and_offsets(texts), strict=True
        ):
            if in_bytes and not text.isascii():
                doc_spans = [(_bytes_at(text, s), _bytes_at(text, e), v) for s, e, v in doc_spans]
            mask = span_mask(begins, ends, doc_spans)
            if self.bos is not None:
                ids = [self.bos, *ids]
                mask = np.concatenate([np.zeros(1, np.uint8), mask])
            ids_out.append(list(ids))
            masks_out.append(mask)
        return ids_out, masks_out


def _bytes_at(text: str, char: int) -> int:
    return len(text[:char].encode("utf-8"))
