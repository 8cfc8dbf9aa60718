"""Model families as Megatron-Core specs (GPT, Gemma 2, Qwen 2.5), presets and HF conversion."""

from tower_megatron.models.family import (
    MODEL_FAMILIES,
    ModelFamily,
    pad_vocab,
    resolve_model_config,
    use_transformer_engine,
)

__all__ = ["MODEL_FAMILIES", "ModelFamily", "pad_vocab", "resolve_model_config", "use_transformer_engine"]
