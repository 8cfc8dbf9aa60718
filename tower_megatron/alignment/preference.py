"""Preference optimisation (DPO, IPO, WPO): chosen and rejected responses in one forward pass.

Samples come from :func:`tower_megatron.data.preference_dataset.build_preference_datasets`:
``tokens``/``labels``/``loss_mask``/``position_ids`` of shape ``[2, seq]`` (chosen, rejected) and
the pair's ``index``. A micro-batch of ``m`` pairs runs as ``2m`` sequences, chosen rows first,
so the activations between pipeline ranks are ``[seq, 2m]`` (:meth:`pipeline_shape`). The loss is
averaged per pair (the loss function's count is the number of pairs).

Reference log-probabilities (``dpo.reference``):

- ``precompute`` (default): before the first step, a forward-only pass of the initial policy
  (the frozen reference, by definition) over the training and validation samples; stored in
  ``<run_dir>/reference_logps_<set>.npy`` and read again on resume. Works at any TP/PP/DP layout.
- ``model``: a frozen copy stays resident and scores each micro-batch inline (PP = 1 only).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from megatron.core import parallel_state as ps

from tower_megatron.alignment.logprobs import log_sum_squared_probs, sequence_logprob, token_logprobs
from tower_megatron.alignment.losses import (
    PREFERENCE_LOSSES,
    PreferenceInputs,
    implicit_rewards,
    wpo_pair_weight,
    wpo_sequence_term,
)
from tower_megatron.training.stage import STAGES, Stage
from tower_megatron.utils.atomic import atomic_open

REPORT_KEYS = (
    "preference loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margin",
    "rewards/accuracy",
    "wpo weight",
)


class WithReference(torch.utils.data.Dataset):
    """A preference dataset whose samples also carry the pair's reference log-probs
    ``[chosen, rejected]`` from a precomputed table indexed by the pair's ``index``."""

    def __init__(self, dataset: Any, table: np.ndarray) -> None:
        self.dataset, self.table = dataset, table

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = dict(self.dataset[i])
        sample["reference"] = torch.from_numpy(self.table[int(sample["index"])])
        return sample


def _flatten_pairs(x: torch.Tensor) -> torch.Tensor:
    """``[m, 2, ...]`` → ``[2m, ...]`` with the m chosen rows first."""
    return x.transpose(0, 1).reshape(-1, *x.shape[2:])


@STAGES.register("dpo", "wpo", "ipo")
class PreferenceStage(Stage):
    name = "dpo"
    config_section = "dpo"
    loss_keys = REPORT_KEYS

    @classmethod
    def check_data(cls, job: Any, vocab_size: int | None) -> list[str]:
        from tower_megatron.data.sft_dataset import chat_data_errors

        return chat_data_errors(job.data, "preference")

    @classmethod
    def check_config(cls, job: Any, world_size: int) -> list[str]:
        opts, errors = job.dpo, []
        loss = cls._loss_name(job)
        if loss not in PREFERENCE_LOSSES:
            errors.append(f"dpo.preference_loss: {PREFERENCE_LOSSES.unknown_message(loss)}")
        if opts.reference not in ("precompute", "model"):
            errors.append(f"dpo.reference={opts.reference!r} is not one of precompute, model")
        if opts.reference == "model" and job.parallel.pipeline_model_parallel_size > 1:
            errors.append(
                "dpo.reference=model keeps a frozen copy that scores inline, which needs "
                "parallel.pipeline_model_parallel_size=1; use dpo.reference=precompute with PP > 1"
            )
        if opts.ref_policy_kl_penalty <= 0:
            errors.append(f"dpo.ref_policy_kl_penalty={opts.ref_policy_kl_penalty} must be > 0 (it is beta)")
        if not 0 <= opts.label_smoothing < 0.5:
            errors.append(f"dpo.label_smoothing={opts.label_smoothing} must be within [0, 0.5)")
        if job.parallel.context_parallel_size > 1:
            errors.append("train.stage=dpo does not support parallel.context_parallel_size > 1")
        return errors

    @staticmethod
    def _loss_name(job: Any) -> str:
        # train.stage=wpo / ipo pick their loss unless dpo.preference_loss says otherwise.
        stage, loss = job.train.stage, job.dpo.preference_loss
        return stage if stage in ("wpo", "ipo") and loss == "dpo" else loss

    def __init__(self, job: Any, tokenizer: Any, runtime: Any = None) -> None:
        super().__init__(job, tokenizer, runtime)
        self.loss_fn = PREFERENCE_LOSSES.get(self._loss_name(job))  # checked by check_config
        self.reference_model: list[torch.nn.Module] | None = None

    # ------------------------------------------------------------------ data and models
    def build_datasets(self, cache_dir: str) -> tuple[Any, dict[str, Any]]:
        from tower_megatron.data.preference_dataset import build_preference_datasets

        return build_preference_datasets(self.job, self.tokenizer, **self.dataset_sizes(cache_dir))

    def pipeline_shape(self) -> tuple[int, int]:
        return self.job.train.seq_length, 2 * self.job.train.micro_batch_size

    def tokens_per_sample(self) -> int:
        return 2 * self.job.train.seq_length

    def build_models(self, factory: Any) -> None:
        if self.options.reference == "model":
            self.reference_model = factory.build_frozen(self._reference_weights())

    def _reference_weights(self) -> str | None:
        return self.options.reference_checkpoint or self.job.checkpoint.load

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = torch.utils.data.default_collate(samples)
        out = {k: _flatten_pairs(batch[k]) for k in ("tokens", "labels", "loss_mask", "position_ids")}
        out["index"] = batch["index"]
        if "reference" in batch:
            out["reference"] = batch["reference"]
        return out

    # ------------------------------------------------------------------ reference log-probs
    def setup(self, trainer: Any) -> None:
        """``precompute``: the reference log-probs of every training and validation pair, computed
        by the initial policy before the first step (files beside the run, read again on resume),
        then served with each sample."""
        if self.options.reference != "precompute":
            return
        sets = {"train": trainer.train_dataset, **{f"valid_{n}": d for n, d in trainer.valid_datasets.items()}}
        tables = {}
        for name, dataset in sets.items():
            path = Path(trainer.run_dir) / f"reference_logps_{name}.npy"
            if not path.is_file():
                if trainer.state.step > 0:
                    raise RuntimeError(f"{path} is missing: cannot resume DPO without its reference log-probs")
                self._precompute_reference(trainer, dataset, path)
            dist.barrier()
            tables[name] = np.load(path)
        trainer.train_dataset = WithReference(trainer.train_dataset, tables["train"])
        trainer.valid_datasets = {n: WithReference(d, tables[f"valid_{n}"]) for n, d in trainer.valid_datasets.items()}

    def _sequence_logps(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logps = token_logprobs(logits, batch["labels"])
        return sequence_logprob(logps, batch["loss_mask"], self.options.preference_average_log_probs)

    def _precompute_reference(self, trainer: Any, dataset: Any, path: Path) -> None:
        """Forward-only pass of the initial policy over every sample of ``dataset``; the last
        pipeline rank of each DP group holds its pairs' log-probs, rank 0 writes the table."""
        per_step = trainer.job.train.micro_batch_size * trainer.runtime.dp
        num_micro = len(dataset) // per_step
        if len(trainer.model) > 1:
            num_micro -= num_micro % trainer.runtime.pp

        def step(data_iterator: Any, model: torch.nn.Module):
            batch = next(data_iterator)
            output = model(batch["tokens"], batch["position_ids"], None)

            def collect(logits: torch.Tensor):
                seq = self._sequence_logps(logits, batch).detach().double()
                m = seq.numel() // 2
                table = torch.stack([batch["index"].double(), seq[:m], seq[m:]], dim=1)
                return torch.zeros(()), torch.tensor(1), {"reference": table}

            return output, collect

        for chunk in trainer.model:
            chunk.eval()
        with torch.no_grad():
            outputs = trainer.run_schedule(trainer.make_iterator(dataset, 0), num_micro, True, forward_step=step)
        for chunk in trainer.model:
            chunk.train()
        local = torch.cat([o["reference"] for o in outputs]) if outputs else torch.zeros(0, 3, dtype=torch.float64)
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, local.numpy())
        if dist.get_rank() == 0:
            rows = np.concatenate([g for g in gathered if len(g)])
            table = np.full((int(rows[:, 0].max()) + 1, 2), np.nan)
            table[rows[:, 0].astype(np.int64)] = rows[:, 1:]
            with atomic_open(path, "wb") as handle:
                np.save(handle, table)

    # ------------------------------------------------------------------ one micro-batch
    def forward_step(self, batch: dict[str, Any], model: torch.nn.Module):
        output = model(batch["tokens"], batch["position_ids"], None)
        reference = batch.get("reference")
        if reference is None and self.reference_model is not None and ps.is_pipeline_last_stage():
            with torch.no_grad():
                ref_logits = self.reference_model[0](batch["tokens"], batch["position_ids"], None)
                seq = self._sequence_logps(ref_logits, batch)
                m = seq.numel() // 2
                reference = torch.stack([seq[:m], seq[m:]], dim=1)
        return output, functools.partial(self._loss, batch=batch, reference=reference)

    def _loss(self, logits: torch.Tensor, batch: dict[str, Any], reference: torch.Tensor):
        opts = self.options
        logps = token_logprobs(logits, batch["labels"])
        mask = batch["loss_mask"]
        seq = sequence_logprob(logps, mask, opts.preference_average_log_probs)
        m = seq.numel() // 2
        reference = reference.to(seq.device, seq.dtype)
        weight = None
        if self._loss_name(self.job) == "wpo":
            terms = wpo_sequence_term(logps.detach() - log_sum_squared_probs(logits), mask)
            weight = wpo_pair_weight(terms[:m], terms[m:])
        x = PreferenceInputs(seq[:m], seq[m:], reference[:, 0], reference[:, 1], weight)
        losses = opts.preference_loss_weight * self.loss_fn(x, opts.ref_policy_kl_penalty, opts.label_smoothing)
        if opts.sft_loss_weight:
            chosen_nll = -sequence_logprob(logps[:m], mask[:m], opts.sft_average_log_probs)
            losses = losses + opts.sft_loss_weight * chosen_nll
        chosen, rejected = implicit_rewards(x, opts.ref_policy_kl_penalty)
        pairs = torch.tensor(float(m), device=seq.device)
        values = (
            losses.detach().sum(),
            chosen.sum(),
            rejected.sum(),
            (chosen - rejected).sum(),
            (chosen > rejected).float().sum(),
            weight.sum() if weight is not None else pairs,
        )
        report = {key: torch.stack([v.float(), pairs]) for key, v in zip(REPORT_KEYS, values, strict=True)}
        return losses.sum(), pairs.to(torch.int), report
