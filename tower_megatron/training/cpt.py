"""Continued pretraining: next-token loss on Megatron ``GPTDataset`` samples of the mixture."""

from __future__ import annotations

import functools
from typing import Any

import torch

from tower_megatron.data.gpt_datasets import build_gpt_datasets
from tower_megatron.training.stage import STAGES, Stage, masked_token_loss


@STAGES.register("cpt", "pretrain")
class CPTStage(Stage):
    name = "cpt"

    def build_datasets(self, train_samples: int, valid_samples: int, cache_dir: str):
        return build_gpt_datasets(
            self.job.data,
            self.tokenizer,
            seq_length=self.job.train.seq_length,
            train_samples=train_samples,
            valid_samples=valid_samples,
            seed=self.job.run.seed,
            cache_dir=cache_dir,
        )

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
