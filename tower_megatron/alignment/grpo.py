"""GRPO with verifiable rewards (Shao et al. 2024): a stage on the same trainer core.

One trainer step is one rollout batch:

1. ``grpo.num_prompts_per_step`` prompts (each data-parallel replica takes its share) are sampled
   ``num_generations_per_prompt`` times each from the current policy — the live training modules
   through :class:`~tower_megatron.generation.megatron_backend.MegatronGenerator`, so the weights
   are always the latest;
2. programs score the responses (:mod:`tower_megatron.rewards`, in a worker pool on the first
   rank of each model-parallel group, broadcast to the others);
3. group-normalised advantages (or a leave-one-out baseline);
4. forward-only passes give the log-probs of the sampling policy and of the frozen reference;
5. ``grpo.updates_per_rollout`` optimizer steps on the clipped policy-ratio loss plus the k3 KL
   (``loss_fn`` section, NeMo-RL's names), normalised per token or per sequence.

``train.global_batch_size`` is the number of sequences per rollout
(``num_prompts_per_step × num_generations_per_prompt``).
"""

from __future__ import annotations

import functools
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from megatron.core import parallel_state as ps

from tower_megatron.alignment.logprobs import token_entropy, token_logprobs
from tower_megatron.alignment.losses import ADVANTAGE_ESTIMATORS, grpo_token_loss, masked_normalise
from tower_megatron.alignment.prompts import PromptSampler, load_prompts
from tower_megatron.data.chat_format import encode_chat, family_format
from tower_megatron.training.stage import STAGES, Stage, StepOutput

LOSS_KEYS = ("policy loss", "kl", "clip fraction", "entropy")


@STAGES.register("grpo")
class GRPOStage(Stage):
    name = "grpo"
    config_section = "grpo"
    loss_keys = LOSS_KEYS

    @classmethod
    def check_data(cls, job: Any, vocab_size: int | None) -> list[str]:
        """Every prompt record is read and its reward spec checked (file:line:field)."""
        from tower_megatron.config.loader import ConfigError

        if not job.grpo.prompts:
            return []  # reported by check_config
        try:
            load_prompts(job.grpo.prompts)
        except ConfigError as exc:
            return [str(exc)]
        return []

    @classmethod
    def check_config(cls, job: Any, world_size: int) -> list[str]:
        g, lf, train, par = job.grpo, job.loss_fn, job.train, job.parallel
        errors = []
        if not g.prompts:
            errors.append("grpo.prompts: no prompt files (JSONL with messages/prompt and reward)")
        if g.num_generations_per_prompt < 2:
            errors.append("grpo.num_generations_per_prompt must be ≥ 2 (advantages compare samples of a prompt)")
        sequences = g.num_prompts_per_step * g.num_generations_per_prompt
        if train.global_batch_size != sequences:
            errors.append(
                f"train.global_batch_size={train.global_batch_size} must equal grpo.num_prompts_per_step × "
                f"num_generations_per_prompt = {sequences} (sequences per rollout)"
            )
        model_parallel = par.tensor_model_parallel_size * par.pipeline_model_parallel_size * par.context_parallel_size
        dp = world_size // model_parallel if model_parallel and world_size % model_parallel == 0 else 1
        if g.num_prompts_per_step % dp:
            errors.append(f"grpo.num_prompts_per_step={g.num_prompts_per_step} is not divisible by the data-parallel size {dp}")
        if not 0 < g.max_new_tokens < train.seq_length:
            errors.append(f"grpo.max_new_tokens={g.max_new_tokens} must be within (0, train.seq_length={train.seq_length})")
        if g.updates_per_rollout < 1:
            errors.append(f"grpo.updates_per_rollout={g.updates_per_rollout} must be ≥ 1")
        if lf.reference_policy_kl_type != "k3":
            errors.append(f"loss_fn.reference_policy_kl_type={lf.reference_policy_kl_type!r}: only k3 is implemented")
        if lf.ratio_clip_min < 0 or lf.ratio_clip_max < 0 or lf.reference_policy_kl_penalty < 0:
            errors.append("loss_fn.ratio_clip_min/max and reference_policy_kl_penalty must be ≥ 0")
        if g.temperature <= 0:
            errors.append(f"grpo.temperature={g.temperature} must be > 0 (GRPO samples)")
        if par.context_parallel_size > 1:
            errors.append("train.stage=grpo does not support parallel.context_parallel_size > 1")
        return errors

    def __init__(self, job: Any, tokenizer: Any, runtime: Any = None) -> None:
        super().__init__(job, tokenizer, runtime)
        self.sampler = PromptSampler(0, job.run.seed)
        self.reference: list[torch.nn.Module] | None = None
        self.pool: Any = None
        self.generator: Any = None
        self.prompts: list = []

    # ------------------------------------------------------------------ setup
    def build_datasets(self, cache_dir: str) -> tuple[Any, dict[str, Any]]:
        self.prompts = load_prompts(self.options.prompts)
        self.sampler.count = len(self.prompts)
        return self.prompts, {}

    def build_models(self, factory: Any) -> None:
        if self.job.loss_fn.reference_policy_kl_penalty > 0:
            self.reference = factory.build_frozen(self.job.checkpoint.load)

    def setup(self, trainer: Any) -> None:
        from tower_megatron.generation.megatron_backend import MegatronGenerator

        self.generator = MegatronGenerator.from_model(trainer.model, self.tokenizer, trainer.model_config)
        if _scores_here():
            from tower_megatron.rewards.pool import RewardPool

            opts = self.options
            self.pool = RewardPool(opts.reward_workers, opts.reward_timeout_s, allow_unsandboxed=opts.allow_unsandboxed_code)

    def teardown(self, trainer: Any) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def state_dict(self) -> dict[str, Any]:
        return {"prompts_consumed": self.sampler.consumed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.consumed = int(state.get("prompts_consumed", 0))

    def tokens_per_sample(self) -> int:
        return self.job.train.seq_length

    # ------------------------------------------------------------------ one rollout step
    def train_step(self, trainer: Any) -> StepOutput:
        from tower_megatron.generation.base import SamplingParams
        from tower_megatron.training.builder import sync_params

        opts, times = self.options, {}
        start = time.perf_counter()
        sync_params(trainer.model)  # generation reads the weights the last update produced
        dp, dp_rank = trainer.runtime.dp, ps.get_data_parallel_rank()
        chosen = self.sampler.take(opts.num_prompts_per_step)
        share = len(chosen) // dp
        local = [self.prompts[i] for i in chosen[dp_rank * share : (dp_rank + 1) * share]]
        fmt = opts.chat_format or family_format(self.job.model.arch)
        budget = self.job.train.seq_length - opts.max_new_tokens
        encoded = [encode_chat(list(p.messages), self.tokenizer, fmt)[-budget:] for p in local]
        group = opts.num_generations_per_prompt
        params = SamplingParams(
            max_new_tokens=opts.max_new_tokens,
            temperature=opts.temperature,
            top_p=opts.top_p,
            top_k=opts.top_k,
            seed=hash((self.job.run.seed, trainer.state.step, dp_rank)) % (2**31),
        )
        outputs = self.generator.generate([ids for ids in encoded for _ in range(group)], params)
        times["rollout"] = time.perf_counter() - start

        start = time.perf_counter()
        specs = [p.reward for p in local for _ in range(group)]
        langs = [p.lang for p in local for _ in range(group)]
        rewards, counts = self._score([o.text for o in outputs], specs, langs)
        times["reward"] = time.perf_counter() - start

        start = time.perf_counter()
        table = torch.tensor(rewards, dtype=torch.float64).view(len(local), group)
        estimator = "leave_one_out" if opts.use_leave_one_out_baseline else "group_mean"
        advantages = ADVANTAGE_ESTIMATORS.get(estimator)(table, normalize=opts.normalize_rewards)
        zero_var = table.std(dim=1) == 0
        keep = ~zero_var if opts.filter_zero_variance_groups else torch.ones_like(zero_var)
        samples = self._samples(encoded, outputs, advantages.view(-1).float(), keep.repeat_interleave(group))
        self._attach_logprobs(trainer, samples, "old_logps", trainer.model)
        self._attach_logprobs(trainer, samples, "ref_logps", self.reference)
        losses, grad_norm = [], None
        for _ in range(opts.updates_per_rollout):
            losses = trainer.forward_backward(self._iterator(trainer, samples), trainer.num_microbatches)
            grad_norm = trainer.optimizer_step()
        times["update"] = time.perf_counter() - start

        metrics = self._metrics(local, group, rewards, outputs, zero_var, counts, times)
        if opts.sample_log_interval and (trainer.state.step + 1) % opts.sample_log_interval == 0:
            self._write_samples(trainer, local, group, outputs, rewards)
        tokens = sum(len(e) for e in encoded) * group + sum(len(o.token_ids) for o in outputs)
        return StepOutput(losses=losses, grad_norm=grad_norm, metrics=metrics, tokens=tokens * dp)

    # ------------------------------------------------------------------ pieces
    def _score(self, responses: list[str], specs: list[dict], langs: list) -> tuple[list[float], dict]:
        """Rewards on the first rank of the model-parallel group, broadcast to the rest (a
        verifier timing out on one rank only must not split the group)."""
        payload: list[Any] = [None]
        if self.pool is not None:
            batch = self.pool.score_batch(responses, specs, langs)
            payload = [(list(batch.values), dict(batch.counts))]
        group = ps.get_model_parallel_group()
        if dist.get_world_size(group) > 1:
            dist.broadcast_object_list(payload, src=dist.get_global_rank(group, 0), group=group)
        return payload[0]

    def _samples(self, prompts: list[list[int]], outputs: list, advantages: torch.Tensor, keep: torch.Tensor) -> list[dict]:
        seq = self.job.train.seq_length
        group = self.options.num_generations_per_prompt
        samples = []
        for i, out in enumerate(outputs):
            prompt = prompts[i // group]
            ids = (prompt + list(out.token_ids))[: seq + 1]
            tokens = torch.zeros(seq, dtype=torch.long)
            labels = torch.zeros(seq, dtype=torch.long)
            mask = torch.zeros(seq)
            tokens[: min(len(ids), seq)] = torch.tensor(ids[:seq])
            labels[: len(ids) - 1] = torch.tensor(ids[1:])
            mask[len(prompt) - 1 : len(ids) - 1] = float(keep[i])  # labels that are response tokens
            samples.append(
                {"tokens": tokens, "labels": labels, "loss_mask": mask, "position_ids": torch.arange(seq),
                 "advantages": advantages[i]}
            )
        return samples

    def _iterator(self, trainer: Any, samples: list[dict]) -> Any:
        mbs = self.job.train.micro_batch_size
        batches = [torch.utils.data.default_collate(samples[i : i + mbs]) for i in range(0, len(samples), mbs)]
        return [iter(batches) for _ in trainer.model] if len(trainer.model) > 1 else iter(batches)

    def _attach_logprobs(self, trainer: Any, samples: list[dict], key: str, chunks: list | None) -> None:
        """Per-token log-probs of ``chunks`` (forward only) stored in each sample under ``key``;
        zeros without chunks or off the last pipeline rank (where no loss is computed)."""
        seq = self.job.train.seq_length
        for sample in samples:
            sample[key] = torch.zeros(seq)
        if chunks is None:
            return

        def step(data_iterator: Any, model: torch.nn.Module):
            batch = next(data_iterator)
            output = model(batch["tokens"], batch["position_ids"], None)
            return output, lambda logits: (
                torch.zeros(()), torch.tensor(1), {"logps": token_logprobs(logits, batch["labels"]).detach()}
            )

        for chunk in chunks:
            chunk.eval()
        with torch.no_grad():
            outputs = trainer.run_schedule(self._iterator(trainer, samples), trainer.num_microbatches, True,
                                           forward_step=step, model=chunks)
        if chunks is trainer.model:
            for chunk in chunks:
                chunk.train()
        rows = [row for out in outputs for row in out["logps"]]
        for sample, row in zip(samples, rows, strict=False):
            sample[key] = row.float()

    def forward_step(self, batch: dict[str, Any], model: torch.nn.Module):
        output = model(batch["tokens"], batch["position_ids"], None)
        return output, functools.partial(self._loss, batch=batch)

    def _loss(self, logits: torch.Tensor, batch: dict[str, Any]):
        lf = self.job.loss_fn
        logps = token_logprobs(logits, batch["labels"])
        ref = batch["ref_logps"] if self.reference is not None else None
        per_token, clipped, kl = grpo_token_loss(
            logps, batch["old_logps"], ref, batch["advantages"], lf.ratio_clip_min, lf.ratio_clip_max,
            lf.reference_policy_kl_penalty,
        )
        mask = batch["loss_mask"]
        loss_sum, count = masked_normalise(per_token, mask, lf.token_level_loss)
        tokens = mask.sum()
        entropy = token_entropy(logits)
        report = {
            "policy loss": torch.stack([loss_sum.detach(), count]),
            "kl": torch.stack([(kl * mask).sum(), tokens]),
            "clip fraction": torch.stack([(clipped * mask).sum(), tokens]),
            "entropy": torch.stack([(entropy * mask).sum(), tokens]),
        }
        return loss_sum, count.to(torch.int), report

    def _metrics(self, local, group, rewards, outputs, zero_var, counts, times) -> dict[str, float]:
        """Reward mean/max per reward type and language, response length, zero-variance share and
        the time split, over every data-parallel replica."""
        stats: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, float("-inf")])
        for i, value in enumerate(rewards):
            prompt = local[i // group]
            for key in ("all", f"type/{prompt.reward['type']}", f"lang/{prompt.lang or 'none'}"):
                s = stats[key]
                s[0], s[1], s[2] = s[0] + value, s[1] + 1, max(s[2], value)
        lengths = [len(o.token_ids) for o in outputs]
        extra = {"length": [float(sum(lengths)), float(len(lengths))], "zero_var": [float(zero_var.sum()), float(len(zero_var))]}
        # Ranks of one model-parallel group hold the same rollout: count the group's first only.
        mine = (dict(stats), extra, counts or {}) if _scores_here() else None
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, mine)
        merged: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, float("-inf")])
        totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        failures: dict[str, float] = defaultdict(float)
        for rank_stats, rank_extra, rank_counts in filter(None, gathered):
            for key, (s, c, m) in rank_stats.items():
                merged[key] = [merged[key][0] + s, merged[key][1] + c, max(merged[key][2], m)]
            for key, (s, c) in rank_extra.items():
                totals[key] = [totals[key][0] + s, totals[key][1] + c]
            for key, value in rank_counts.items():
                failures[key] += value
        metrics = {}
        for key, (s, c, m) in merged.items():
            name = "grpo/reward" if key == "all" else f"grpo/reward/{key}"
            metrics[f"{name}_mean"], metrics[f"{name}_max"] = s / c, m
        metrics["grpo/response_length"] = totals["length"][0] / max(totals["length"][1], 1)
        metrics["grpo/zero_variance_groups"] = totals["zero_var"][0] / max(totals["zero_var"][1], 1)
        metrics.update({f"grpo/reward_pool/{k}": v for k, v in failures.items()})
        metrics.update({f"grpo/time/{k}_s": v for k, v in times.items()})
        return metrics

    def _write_samples(self, trainer: Any, local, group, outputs, rewards) -> None:
        if not trainer.runtime.is_main:
            return
        from tower_megatron.utils.atomic import write_text

        rows = [
            {"source": local[i // group].source, "prompt": local[i // group].messages[-1]["content"],
             "response": out.text, "reward": rewards[i]}
            for i, out in enumerate(outputs)
        ]
        path = Path(trainer.run_dir) / "samples" / f"step_{trainer.state.step + 1:07d}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _scores_here() -> bool:
    group = ps.get_model_parallel_group()
    return dist.get_rank(group) == 0
