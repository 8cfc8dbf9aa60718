"""Continued pretraining: next-token loss on Megatron ``GPTDataset`` samples of the mixture.

The simplest stage: everything but its data and forward step is the base class's default."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch

from tower_megatron.data.gpt_datasets import build_gpt_datasets, prepare_mixture
from tower_megatron.training.stage import STAGES, Stage, masked_token_loss


@STAGES.register("cpt", "pretrain")
class CPTStage(Stage):
    name = "cpt"

    def prepare_data(self, run_dir: Path) -> None:
        """Resolves the language mixture (building missing token files) and writes its report."""
        job = self.job
        report_dir = Path(run_dir) / "mixture" if job.data.mixture.report else None
        planned_tokens = job.train.train_steps * job.train.global_batch_size * job.train.seq_length
        prepare_mixture(job.data, planned_tokens, report_dir)

    def build_datasets(self, cache_dir: str):
        return build_gpt_datasets(self.job.data, self.tokenizer, **self.dataset_sizes(cache_dir))

    def forward_step(self, batch: dict[str, torch.Tensor], model: torch.nn.Module):
        output = model(
            batch["tokens"],
            batch["position_ids"],
            None,
            labels=batch["labels"],
        )
        # Only the last pipeline stage gets per-token losses; the others return hidden states
        # and Megatron never calls loss_func on them.
        return output, functools.partial(masked_token_loss, loss_mask=batch["loss_mask"])

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = torch.utils.data.default_collate(samples)
        batch.pop("attention_mask", None)
        return batch
