"""``data:`` section — tokenizer and the token files the trainer reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class TokenizerConfig:
    type: str = "sentencepiece"  # sentencepiece | huggingface
    path: Optional[str] = None  # a .model file, a tokenizer.json, or a directory holding one


@dataclass
class MixtureSourceConfig:
    """One preprocessed source (by its name in ``stats.json``; ``*`` globs allowed)."""

    name: str = ""
    weight: Optional[float] = None  # relative weight of the whole source
    tokens: Optional[int] = None  # or: planned training tokens from it (a budget)
    languages: list[str] = field(default_factory=list)  # only these tags (``pt``, ``en-pt``); empty: all
    validate: bool = True  # its held-out files become named validation sets


@dataclass
class MixtureConfig:
    """``data.mixture``: language/kind mixing over ``tower-megatron preprocess`` outputs. Off while
    ``sources`` is empty. Resolved by :func:`tower_megatron.data.mixture.resolve_mixture`.

    Without weights or budgets: within each kind, language (or direction) ``l`` with ``n_l``
    tokens is sampled with p ∝ n_l^(1/temperature) (1: proportional, large: uniform), and kinds
    get the fixed ``shares`` (or their natural proportion when ``shares`` is empty).
    """

    stats: list[str] = field(default_factory=list)  # stats.json files (or their directories)
    sources: list[MixtureSourceConfig] = field(default_factory=list)
    temperature: float = 1.0
    shares: dict[str, float] = field(
        default_factory=dict
    )  # e.g. {mono: 0.66, parallel: 0.33, instruction: 0.01}
    total_tokens: Optional[int] = None  # planned training tokens; default: steps × batch × seq_length
    max_epochs: float = 4.0  # warn when a source would be repeated more often than this
    # Named validation sets to keep (en, en-pt, instruction/pt); empty: every held-out file.
    valid_languages: list[str] = field(default_factory=list)
    preprocess: Optional[str] = None  # recipe that (re)builds missing stats (tower-megatron mixture)
    report: bool = True  # write mixture.md/.json/.png into the run directory


@dataclass
class SFTDataConfig:
    """``data.sft``: how ``train.stage=sft`` reads ``sft`` token files (see docs/data_sft.md)."""

    packing: bool = True  # several conversations per row (segment_ids / position_ids restart)
    overflow: str = "truncate"  # truncate | drop: conversations longer than seq_length (counted)
    loss_on: str = "all"  # all | last: learn every assistant turn or only the final one
    pack_group: int = 10000  # conversations packed together (first-fit decreasing within a group)


@dataclass
class PreferenceDataConfig:
    """``data.preference``: how ``train.stage=dpo`` reads ``preference`` token files."""

    overflow: str = "truncate"  # truncate | drop: pairs with a side longer than seq_length (counted)


@dataclass
class DataConfig:
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    # Megatron blend: prefixes of IndexedDataset .bin/.idx pairs, optionally weighted as
    # ["0.7", "path/a_text_document", "0.3", "path/b_text_document"] like Megatron-LM's --data-path.
    paths: list[str] = field(default_factory=list)
    split: str = "969,30,1"
    # Validation sets evaluated (and logged) one by one: name -> prefix.
    valid_paths: dict[str, str] = field(default_factory=dict)
    cache_dir: Optional[str] = None  # Megatron dataset index cache; default <run_dir>/data_cache
    num_workers: int = 0
    reset_position_ids: bool = False
    reset_attention_mask: bool = False
    eod_mask_loss: bool = False
    mixture: MixtureConfig = field(default_factory=MixtureConfig)
    sft: SFTDataConfig = field(default_factory=SFTDataConfig)
    preference: PreferenceDataConfig = field(default_factory=PreferenceDataConfig)
