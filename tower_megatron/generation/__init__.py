"""Generation: one interface (:mod:`.base`), a Megatron-Core backend and an optional vLLM one.

``load_generator(path, tp=..., pp=...)`` turns any checkpoint (trainer run, converted checkpoint,
HF directory) into a backend; ``MegatronGenerator.from_model`` wraps live training modules.
The Megatron backend is imported on first use (it imports Megatron-Core).
"""

from typing import Any

from tower_megatron.generation.base import GenerationBackend, GenerationOutput, SamplingParams
from tower_megatron.generation.loading import GENERATION_BACKENDS, load_generator

__all__ = [
    "GENERATION_BACKENDS",
    "GenerationBackend",
    "GenerationOutput",
    "MegatronGenerator",
    "SamplingParams",
    "load_generator",
]


def __getattr__(name: str) -> Any:
    if name == "MegatronGenerator":
        from tower_megatron.generation.megatron_backend import MegatronGenerator

        return MegatronGenerator
    raise AttributeError(name)
