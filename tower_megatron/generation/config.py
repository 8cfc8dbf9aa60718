"""The ``checkpoint:`` section shared by the ``generate``, ``eval`` and ``serve`` configs: which
checkpoint to generate with, at which layout, on which device (torch-free, so configs load fast)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from tower_megatron.generation.base import GenerationBackend


@dataclass
class CheckpointSection:
    path: str = ""  # trainer run / its checkpoints/ or iter_* dir, converted checkpoint, HF dir
    tokenizer: Optional[str] = None  # tokenizer file/dir when the checkpoint does not name one
    backend: str = "megatron"  # megatron | vllm (GPU): tower_megatron.generation.GENERATION_BACKENDS
    tensor_model_parallel_size: int = 1
    pipeline_model_parallel_size: int = 1
    device: str = "auto"  # auto | cpu | cuda
    precision: Optional[str] = None  # megatron backend: fp32 | bf16; default bf16 on GPU, fp32 on CPU

    def load(self, **kwargs: Any) -> GenerationBackend:
        """The backend for this section (every rank of the layout calls it); ``kwargs`` go to
        :func:`tower_megatron.generation.load_generator`."""
        from tower_megatron.generation.loading import load_generator

        if self.backend == "megatron" and self.precision:
            kwargs.setdefault("precision", self.precision)
        return load_generator(
            self.path,
            tp=self.tensor_model_parallel_size,
            pp=self.pipeline_model_parallel_size,
            device=self.device,
            tokenizer=self.tokenizer,
            backend=self.backend,
            **kwargs,
        )
