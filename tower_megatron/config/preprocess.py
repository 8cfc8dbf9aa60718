"""``tower-megatron preprocess`` job: raw JSONL/TSV sources → Megatron ``IndexedDataset`` files.

A source is files + language (or pair) + kind. Records look like::

    mono:        {"text": "...", "lang": "pt"}                      (lang optional if the source sets it)
    parallel:    {"src": "...", "tgt": "...", "src_lang": "en", "tgt_lang": "pt"}   or TSV columns
    instruction: {"messages": [{"role": "user", "content": "..."}, ...], "lang": "pt"}
    sft:         chat messages, NeMo-Aligner conversations or prompt/completion (data/sft_records.py)
    preference:  {"prompt", "chosen", "rejected"} (TRL) or NeMo-Aligner's {..._response}

``instruction`` chats become plain CPT text; ``sft``/``preference`` records are rendered through
the job's ``chat_format`` and written with their assistant-span loss masks (docs/data_sft.md).

Any record may carry ``"id"``: records sharing an id land in the same split (train/valid/test)
across all sources, so e.g. a held-out article is held out of the mono and the parallel data alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from tower_megatron.config.data import TokenizerConfig


@dataclass
class LangIdConfig:
    """Language-ID check with ``py3langid``: drop a text whose detected language is not the declared one."""

    enabled: bool = False
    min_prob: float = 0.5  # only a confident detection can reject a text
    min_chars: int = 40  # shorter texts are not checked: detectors guess on a few words


@dataclass
class FilterConfig:
    normalize: str = "NFC"  # NFC | NFKC | none (Unicode normalization before everything else)
    strip: bool = True  # strip leading/trailing whitespace of every text field
    min_chars: int = 1  # per text (per side for pairs); shorter texts are filtered (counted)
    max_chars: int = 0  # 0: no limit
    # Pairs: longer/shorter side length in UTF-8 bytes (bytes keep CJK comparable to Latin scripts).
    max_length_ratio: float = 0.0  # 0: off
    dedup: bool = True  # exact duplicates (after normalization) by hash, across all sources
    langid: LangIdConfig = field(default_factory=LangIdConfig)


@dataclass
class SourceConfig:
    name: str = ""  # output files go to <output_dir>/<name>/<lang or src-tgt>.<split>.bin/.idx
    kind: str = "mono"  # mono | parallel | instruction | sft | preference
    files: list[str] = field(default_factory=list)  # paths or globs; .gz/.zst read transparently
    format: str = "auto"  # auto (from the extension) | jsonl | tsv
    lang: Optional[str] = None  # mono/instruction: every record's language (else the record's "lang")
    src_lang: Optional[str] = None  # parallel: else the record's "src_lang"
    tgt_lang: Optional[str] = None
    # TSV: column names, from: src, tgt, src_lang, tgt_lang, id, skip.
    columns: list[str] = field(default_factory=lambda: ["src", "tgt"])
    # Parallel: named templates (see `tower_megatron.data.templates`) drawn per pair and direction.
    templates: list[str] = field(default_factory=lambda: ["plain", "tower"])
    template_weights: list[float] = field(default_factory=list)  # empty: uniform
    directions: str = "both"  # both | forward (src→tgt) | backward (tgt→src)
    valid_fraction: Optional[float] = None  # None: the job's
    test_fraction: Optional[float] = None


@dataclass
class PreprocessConfig:
    """Everything ``tower-megatron preprocess`` reads."""

    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    output_dir: str = "outputs/data"  # replaced atomically as a whole when the job succeeds
    sources: list[SourceConfig] = field(default_factory=list)
    filters: FilterConfig = field(default_factory=FilterConfig)
    chat_format: str = "gemma"  # instruction/sft/preference rendering: gemma | chatml (data/chat_format.py)
    templates: dict[str, str] = field(default_factory=dict)  # extra named parallel templates
    seed: int = 1234  # template choice and nothing else: splits depend on content/ids only
    valid_fraction: float = 0.0  # share of records (by id or content hash) held out per source
    test_fraction: float = 0.0
    append_eod: bool = True
    on_error: str = "raise"  # raise | skip (skips are counted per reason in stats.json)
    workers: int = 0  # tokenizer processes; 0: one per CPU core, 1: in this process
    batch_size: int = 512  # records per task sent to a worker
    progress: bool = True
