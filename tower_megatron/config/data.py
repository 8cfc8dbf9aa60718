"""``data:`` section — tokenizer and the token files the trainer reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class TokenizerConfig:
    type: str = "sentencepiece"  # sentencepiece | huggingface
    path: Optional[str] = None  # a .model file, a tokenizer.json, or a directory holding one


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
