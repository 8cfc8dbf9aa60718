"""Model families as Megatron-Core specs (GPT, Gemma 2, Qwen 2.5), presets and HF conversion.

The trainer's entry points: :func:`resolve_model_config` (then ``MODEL_FAMILIES.get(cfg.arch)``
for ``transformer_config``/``build``), :func:`load_model_checkpoint` for ``checkpoint.load``, and
:func:`flops_per_token`/:func:`count_parameters` for throughput reporting.
"""

from tower_megatron.models import gemma2, qwen2  # noqa: F401  (register the families)
from tower_megatron.models.checkpoint import load_model_checkpoint
from tower_megatron.models.family import (
    MODEL_FAMILIES,
    ModelFamily,
    family_for_hf_config,
    pad_vocab,
    resolve_model_config,
    use_transformer_engine,
)
from tower_megatron.models.flops import count_parameters, flops_per_token
from tower_megatron.models.presets import PRESETS

__all__ = [
    "MODEL_FAMILIES",
    "PRESETS",
    "ModelFamily",
    "count_parameters",
    "family_for_hf_config",
    "flops_per_token",
    "load_model_checkpoint",
    "pad_vocab",
    "resolve_model_config",
    "use_transformer_engine",
]
