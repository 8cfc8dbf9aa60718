"""Stage plugins: what one training step means (data, batch, loss) for CPT, SFT, DPO/WPO, GRPO.

The trainer owns the loop, parallelism, optimizer, checkpoints and logging; a stage owns only
what differs between training paradigms. A new stage is a subclass registered by name:

    @STAGES.register("sft")
    class SFTStage(Stage): ...

and selected with ``train.stage=sft``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from tower_megatron.config.schema import JobConfig
from tower_megatron.registry import Registry

STAGES: Registry[type[Stage]] = Registry("stage")

LossFunc = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]]


class Stage:
    """Base class. ``forward_step`` returns Megatron's ``(output_tensor, loss_func)`` pair; the
    ``loss_func`` returns ``(loss_sum, num_tokens, {name: tensor([sum, count])})`` so the loss is
    averaged per token across micro-batches and data-parallel ranks (calculate_per_token_loss)."""

    name = "base"
    # Keys of the loss_func's report dict; the first is the loss that is logged as train/loss.
    loss_keys: tuple[str, ...] = ("lm loss",)

    def __init__(self, job: JobConfig, tokenizer: Any) -> None:
        self.job = job
        self.tokenizer = tokenizer

    def build_datasets(
        self, train_samples: int, valid_samples: int, cache_dir: str
    ) -> tuple[Any, dict[str, Any]]:
        raise NotImplementedError

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return torch.utils.data.default_collate(samples)

    def forward_step(
        self, batch: dict[str, torch.Tensor], model: torch.nn.Module
    ) -> tuple[torch.Tensor, LossFunc]:
        raise NotImplementedError

    def tokens_per_sample(self) -> int:
        """Tokens a sample feeds through the model (for throughput and MFU)."""
        return self.job.train.seq_length


# Modules whose import registers stages (later stages add their module here).
STAGE_MODULES = ("tower_megatron.training.cpt",)


def load_stage_plugins() -> None:
    import importlib

    for module in STAGE_MODULES:
        importlib.import_module(module)


def build_stage(job: JobConfig, tokenizer: Any) -> Stage:
    load_stage_plugins()
    return STAGES.get(job.train.stage)(job, tokenizer)


def masked_token_loss(per_token_loss: torch.Tensor, loss_mask: torch.Tensor, key: str = "lm loss"):
    """Sum of the per-token losses where ``loss_mask`` is 1, plus the token count."""
    losses = per_token_loss.float().view(-1)
    mask = loss_mask.float().view(-1)
    loss_sum = torch.sum(losses * mask)
    num_tokens = mask.sum().to(torch.int)
    report = torch.stack([loss_sum.detach(), num_tokens.detach().float()])
    return loss_sum, num_tokens, {key: report}
