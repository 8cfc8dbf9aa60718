"""The per-process half of preprocessing: a chunk of raw lines → cleaned, rendered, tokenized
documents. Light imports only (no torch, no Megatron): worker processes start in a fraction of a
second."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from tower_megatron.config.data import TokenizerConfig
from tower_megatron.config.preprocess import FilterConfig
from tower_megatron.data.readers import InputError
from tower_megatron.data.records import Filtered, RecordProcessor, SourceSpec
from tower_megatron.data.sft_records import CHAT_KINDS
from tower_megatron.data.sft_tokens import ChatEncoder
from tower_megatron.data.templates import register_template
from tower_megatron.data.tokenizer import BatchEncoder


@dataclass(frozen=True)
class WorkerJob:
    tokenizer: TokenizerConfig
    filters: FilterConfig
    chat_format: str
    seed: int
    templates: tuple[tuple[str, str], ...] = ()
    eod: Optional[int] = None  # appended to every document when set
    threads: int = -1  # tokenizer threads: all cores in-process, 1 per worker process


@dataclass
class ChunkResult:
    """What a worker sends back for one chunk. Documents are flattened into one token array so
    the transfer is a single buffer, not thousands of small lists."""

    records: list[tuple[int, bytes, str, int]] = field(default_factory=list)  # line, key, split, n_docs
    tags: list[str] = field(default_factory=list)  # one per document
    lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    # (path, line, field, message, reason): exceptions with custom fields do not pickle cleanly.
    errors: list[tuple[str, Optional[int], Optional[str], str, str]] = field(default_factory=list)
    filtered: Counter = field(default_factory=Counter)  # (reason, tag) -> count
    blank: int = 0
    masks: Optional[np.ndarray] = None  # sft/preference: uint8 loss-mask value per token (sft_tokens)


class _Worker:
    def __init__(self, job: WorkerJob) -> None:
        for name, pattern in job.templates:
            register_template(name, pattern)
        self.processor = RecordProcessor(job.filters, job.chat_format, job.seed)
        self.encoder = BatchEncoder(job.tokenizer, job.threads)
        self.eod = job.eod
        self.job = job
        self._chat_encoder: Optional[ChatEncoder] = None  # made on the first sft/preference chunk

    def run(self, source: SourceSpec, path: str, fmt: str, lines: list[tuple[int, bytes]]) -> ChunkResult:
        out = ChunkResult()
        texts: list[str] = []
        spans: list = []
        for line, raw in lines:
            try:
                record = self.processor.process(raw, fmt, source, path, line)
            except InputError as exc:
                out.errors.append((exc.path, exc.line, exc.field, exc.message, exc.reason))
                continue
            except Filtered as f:
                out.filtered[(f.reason, f.tag)] += 1
                continue
            if record is None:
                out.blank += 1
                continue
            out.records.append((record.line, record.key, record.split, len(record.docs)))
            for tag, text in record.docs:
                out.tags.append(tag)
                texts.append(text)
            spans.extend(record.spans or ())
        if texts and source.kind in CHAT_KINDS:  # no EOD: a chat ends with its end-of-turn marker
            if self._chat_encoder is None:
                self._chat_encoder = ChatEncoder(self.job.tokenizer, self.job.chat_format, self.job.threads)
            ids, masks = self._chat_encoder.encode_chats(texts, spans)
            out.lengths = np.fromiter(map(len, ids), np.int64, len(ids))
            out.tokens = np.fromiter(itertools.chain.from_iterable(ids), np.int32, int(out.lengths.sum()))
            out.masks = np.concatenate(masks)
        elif texts:
            ids = self.encoder.encode(texts)
            if self.eod is not None:
                for x in ids:  # our own lists: appending is the cheapest way to add EOD
                    x.append(self.eod)
            out.lengths = np.fromiter(map(len, ids), np.int64, len(ids))
            out.tokens = np.fromiter(itertools.chain.from_iterable(ids), np.int32, int(out.lengths.sum()))
        return out


_STATE: Optional[_Worker] = None


def init_worker(job: WorkerJob) -> None:
    """Process-pool initializer: load the tokenizer (and language detector) once per process."""
    global _STATE
    _STATE = _Worker(job)


def process_chunk(source: SourceSpec, path: str, fmt: str, lines: list[tuple[int, bytes]]) -> ChunkResult:
    assert _STATE is not None, "init_worker was not called in this process"
    return _STATE.run(source, path, fmt, lines)
