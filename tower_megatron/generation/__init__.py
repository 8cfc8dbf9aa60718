"""Generation: one interface (:mod:`.base`), a Megatron-Core backend and an optional vLLM one.

``load_generator(path, tp=..., pp=...)`` turns any checkpoint (trainer run, converted checkpoint,
HF directory) into a backend; ``MegatronGenerator.from_model`` wraps live training modules.
The loader and the Megatron backend are imported on first use (they import torch and
Megatron-Core), so configs and the interface load without them.
"""

from typing import Any

from tower_megatron.generation.base import GenerationBackend, GenerationOutput, SamplingParams

__all__ = [
    "GENERATION_BACKENDS",
    "GenerationBackend",
    "GenerationOutput",
    "MegatronGenerator",
    "SamplingParams",
    "load_generator",
]


def __getattr__(name: str) -> Any:
    if name in ("GENERATION_BACKENDS", "load_generator"):
        from tower_megatron.generation import loading

        return getattr(loading, name)
    if name == "MegatronGenerator":
        from tower_megatron.generation.megatron_backend import MegatronGenerator

        return MegatronGenerator
    raise AttributeError(name)
