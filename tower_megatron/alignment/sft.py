"""Supervised fine-tuning: next-token loss on assistant tokens of (packed) chat data.

Samples come from :func:`tower_megatron.data.sft_dataset.build_sft_datasets`: ``tokens``,
``labels``, ``loss_mask`` (1 where the label is an assistant token to learn), ``position_ids``
(restarting per conversation) and ``segment_ids`` (1..k for the k conversations packed into a
row, 0 for padding). Packed conversations must not see each other:

- local attention (CPU, and GPU without Transformer Engine): a block-diagonal causal mask
  ``[b, 1, s, s]`` (True = masked), which our attention modules apply on top of causality;
- Transformer Engine: Megatron's packed-sequence path (``PackedSeqParams``, THD layout), the row
  flattened into one sequence with ``cu_seqlens`` at the conversation boundaries.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from tower_megatron.training.stage import STAGES, Stage, masked_token_loss


def block_causal_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """``[b, 1, s, s]`` bool, True where query ``i`` may NOT attend key ``j``: other segment or
    the future."""
    same = segment_ids.unsqueeze(2) == segment_ids.unsqueeze(1)
    s = segment_ids.size(1)
    causal = torch.ones(s, s, dtype=torch.bool, device=segment_ids.device).tril()
    return ~(same & causal).unsqueeze(1)


def packed_seq_params(segment_ids: torch.Tensor) -> Any:
    """Megatron ``PackedSeqParams`` (THD) for rows flattened into one sequence: every change of
    segment (and every row start) is a boundary. Padding forms its own segments."""
    from megatron.core.packed_seq_params import PackedSeqParams

    flat = segment_ids.reshape(-1)
    starts = torch.ones_like(flat, dtype=torch.bool)
    starts[1:] = flat[1:] != flat[:-1]
    row_starts = torch.arange(0, flat.numel(), segment_ids.size(1), device=flat.device)
    starts[row_starts] = True
    boundaries = torch.nonzero(starts).view(-1)
    cu = torch.cat([boundaries, torch.tensor([flat.numel()], device=flat.device)]).to(torch.int32)
    max_len = int((cu[1:] - cu[:-1]).max())
    return PackedSeqParams(
        qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu, max_seqlen_q=max_len, max_seqlen_kv=max_len
    )


@STAGES.register("sft")
class SFTStage(Stage):
    name = "sft"

    @classmethod
    def check_data(cls, job: Any, vocab_size: int | None) -> list[str]:
        from tower_megatron.data.sft_dataset import chat_data_errors

        return chat_data_errors(job.data, "sft")

    @classmethod
    def check_config(cls, job: Any, world_size: int) -> list[str]:
        if job.parallel.context_parallel_size > 1:
            return ["train.stage=sft does not support parallel.context_parallel_size > 1"]
        return []

    def build_datasets(self, cache_dir: str) -> tuple[Any, dict[str, Any]]:
        from tower_megatron.data.sft_dataset import build_sft_datasets

        return build_sft_datasets(self.job, self.tokenizer, **self.dataset_sizes(cache_dir))

    def _uses_thd(self) -> bool:
        from tower_megatron.models.family import use_transformer_engine

        on_gpu = self.runtime is not None and not self.runtime.is_cpu
        return on_gpu and use_transformer_engine(self.job.model)

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = torch.utils.data.default_collate(samples)
        segments = batch.pop("segment_ids")
        if self._uses_thd():
            batch["packed_seq_params"] = packed_seq_params(segments)
            for key in ("tokens", "labels", "loss_mask", "position_ids"):
                batch[key] = batch[key].reshape(1, -1)
        else:
            batch["attention_mask"] = block_causal_mask(segments)
        return batch

    def forward_step(self, batch: dict[str, Any], model: torch.nn.Module):
        output = model(
            batch["tokens"],
            batch["position_ids"],
            batch.get("attention_mask"),
            labels=batch["labels"],
            packed_seq_params=batch.get("packed_seq_params"),
        )
        return output, functools.partial(masked_token_loss, loss_mask=batch["loss_mask"])
