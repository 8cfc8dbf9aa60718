"""Model construction for a run, in one place: the trained model and any frozen copies a stage
asks for (a DPO/GRPO reference policy), all with the job's parallel layout.

Keeping every ``build_model`` call here means a later switch of Megatron model class (Megatron-Core
0.19 deprecates ``GPTModel`` in favour of ``HybridModel``) is one change for every stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tower_megatron.config.model import ModelConfig
from tower_megatron.config.schema import JobConfig


@dataclass
class ModelFactory:
    """Builds models of the run's architecture and layout (collective: every rank calls it)."""

    job: JobConfig
    model_cfg: ModelConfig

    def build_trainable(self, initialize: bool = True) -> Any:
        """The trained model: chunks wrapped in Megatron DDP (a ``BuiltModel``)."""
        from tower_megatron.training.builder import build_model

        return build_model(self.job, self.model_cfg, initialize=initialize)

    def build_frozen(self, weights: str | Path | None = None) -> list[torch.nn.Module]:
        """A frozen model (no DDP, eval mode, no gradients) with the weights of the checkpoint
        ``weights``, or without one the run's deterministic initialisation (layout-invariant and
        seeded, so it equals the trained model's starting point, also after a resume)."""
        from tower_megatron.models.checkpoint import load_model_checkpoint
        from tower_megatron.training.builder import build_model

        chunks = build_model(self.job, self.model_cfg, wrap_ddp=False, initialize=weights is None).chunks
        if weights is not None:  # a checkpoints root means its newest complete checkpoint
            from tower_megatron.training.checkpointing import resolve_load_path

            load_model_checkpoint(chunks, resolve_load_path(weights))
        for chunk in chunks:
            chunk.eval()
            chunk.requires_grad_(False)
        return chunks

