"""Named model shapes (``model.preset=gemma2-2b``), as published in each model's HF ``config.json``.

A preset names its family and the architecture fields; anything the family derives (e.g. Gemma 2's
alternating sliding-window layers) is left to the family. Explicit ``model.*`` values override a
preset field by field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tower_megatron.registry import Registry


@dataclass(frozen=True)
class Preset:
    arch: str
    fields: dict[str, Any] = field(default_factory=dict)
    published_params: float | None = None  # the size its authors quote, for tests and reports


PRESETS: Registry[Preset] = Registry("model preset")


def _gemma2(
    layers: int, hidden: int, ffn: int, heads: int, groups: int, head_dim: int, qpas: float, size: float
):
    return Preset(
        "gemma2",
        dict(
            num_layers=layers,
            hidden_size=hidden,
            ffn_hidden_size=ffn,
            num_attention_heads=heads,
            num_query_groups=groups,
            kv_channels=head_dim,
            query_pre_attn_scalar=qpas,
            vocab_size=256000,
            max_position_embeddings=8192,
        ),
        size,
    )


def _qwen25(layers: int, hidden: int, ffn: int, heads: int, groups: int, tied: bool, size: float):
    return Preset(
        "qwen2",
        dict(
            num_layers=layers,
            hidden_size=hidden,
            ffn_hidden_size=ffn,
            num_attention_heads=heads,
            num_query_groups=groups,
            # Qwen 2.5 ≤ 3B ship a 151936-row embedding, 7B and up 152064 (both padded past the
            # 151665-token tokenizer).
            vocab_size=151936 if tied else 152064,
            untie_embeddings_and_output_weights=not tied,
            max_position_embeddings=32768,
        ),
        size,
    )


for _name, _preset in {
    "gemma2-2b": _gemma2(26, 2304, 9216, 8, 4, 256, 256, 2.6e9),
    "gemma2-9b": _gemma2(42, 3584, 14336, 16, 8, 256, 256, 9.2e9),
    # 27B scales queries by (hidden / heads)^-½ = 144^-½, not head_dim^-½.
    "gemma2-27b": _gemma2(46, 4608, 36864, 32, 16, 128, 144, 27.2e9),
    "qwen2.5-0.5b": _qwen25(24, 896, 4864, 14, 2, True, 0.49e9),
    "qwen2.5-1.5b": _qwen25(28, 1536, 8960, 12, 2, True, 1.54e9),
    "qwen2.5-3b": _qwen25(36, 2048, 11008, 16, 2, True, 3.09e9),
    "qwen2.5-7b": _qwen25(28, 3584, 18944, 28, 4, False, 7.61e9),
    "qwen2.5-14b": _qwen25(48, 5120, 13824, 40, 8, False, 14.7e9),
    "qwen2.5-32b": _qwen25(64, 5120, 27648, 40, 8, False, 32.5e9),
    "qwen2.5-72b": _qwen25(80, 8192, 29568, 64, 8, False, 72.7e9),
}.items():
    PRESETS.register(_name)(_preset)
