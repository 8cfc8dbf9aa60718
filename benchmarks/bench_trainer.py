"""Step time of our trainer versus a plain hand-written Megatron-Core loop, in one process.

    .venv/bin/python benchmarks/bench_trainer.py [--steps 30] [--warmup 5]
    torchrun --nproc-per-node=2 benchmarks/bench_trainer.py --tp 2

Our side is the whole user path: ``run_training`` → ``Trainer.fit`` → ``train_step`` through the
CPT stage plugin, with the default callbacks (throughput, preemption check, checkpoint cadence,
``metrics.jsonl``, history). The plain side is what one writes by hand from Megatron-Core's
documentation around the same model modules as ours (``family.build``: the same
``TransformerConfig``, layer spec and model class, so the ratio is the trainer's overhead only) +
Megatron DDP + ``get_megatron_optimizer`` +
``OptimizerParamScheduler`` + ``get_forward_backward_func``, over the same ``GPTDataset``, with the
same batch sizes, starting from the same weights, and reducing the loss for reporting as
Megatron-LM does.

The two loops alternate step by step (a callback runs one plain step after each trainer step and
times both), so load from other processes hits both alike. After warm-up, the median step time of
each is printed with their ratio (target ≤ 1.02×). The loss of each step is compared as a check
that both loops compute the same thing. It prints; it does not assert.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from tower_megatron.training.callbacks.base import Callback


def _sync() -> None:
    from tower_megatron.runtime import runtime_device

    if runtime_device().type == "cuda":
        torch.cuda.synchronize()


class PlainLoop:
    """Megatron-Core by hand, as in its documentation and Megatron-LM's ``pretrain_gpt``."""

    def __init__(self, trainer: Any) -> None:
        from megatron.core import parallel_state as ps
        from megatron.core.distributed import (
            DistributedDataParallel,
            DistributedDataParallelConfig,
            finalize_model_grads,
        )
        from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
        from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
        from megatron.core.pipeline_parallel import get_forward_backward_func

        from tower_megatron.config.model import FP8Config, ModelConfig
        from tower_megatron.models import MODEL_FAMILIES

        job, m = trainer.job, trainer.model_config
        ours = trainer.model[0].module
        self.device = trainer.runtime.device
        bf16 = job.train.precision == "bf16"
        dtype = torch.bfloat16 if bf16 else torch.float32
        # The same modules as ours (the family's TransformerConfig, spec and model class, built
        # through family.build), so the ratio measures the trainer around them, nothing else.
        model_cfg = ModelConfig(**{**m, "fp8": FP8Config(**m["fp8"])})
        family = MODEL_FAMILIES.get(model_cfg.arch)
        config = family.transformer_config(model_cfg, job.parallel, job.train, device=self.device)
        config.calculate_per_token_loss = True
        config.batch_p2p_comm = dist.get_backend() != "gloo"
        model = family.build(model_cfg, config, True, True, None, ours.vocab_size, device=self.device)
        model.load_state_dict(ours.state_dict())  # same start, so losses must match step by step
        model = model.to(self.device)
        ddp_config = DistributedDataParallelConfig(grad_reduce_in_fp32=True)
        self.model = DistributedDataParallel(config, ddp_config, module=model)
        config.finalize_model_grads_func = finalize_model_grads
        config.no_sync_func = self.model.no_sync
        opt = job.optimizer
        self.optimizer = get_megatron_optimizer(
            OptimizerConfig(
                optimizer="adam",
                lr=opt.lr,
                min_lr=opt.min_lr,
                weight_decay=opt.weight_decay,
                adam_beta1=opt.adam_beta1,
                adam_beta2=opt.adam_beta2,
                adam_eps=opt.adam_eps,
                clip_grad=opt.clip_grad,
                bf16=bf16,
                params_dtype=dtype,
            ),
            [self.model],
        )
        sched, steps = job.scheduler, job.train.train_steps
        self.scheduler = OptimizerParamScheduler(
            self.optimizer,
            init_lr=0.0 if sched.warmup_steps else opt.lr,
            max_lr=opt.lr,
            min_lr=opt.min_lr,
            lr_warmup_steps=sched.warmup_steps,
            lr_decay_steps=max(steps, sched.warmup_steps + 1),
            lr_decay_style=sched.decay_style,
            start_wd=opt.weight_decay,
            end_wd=opt.weight_decay,
            wd_incr_steps=steps,
            wd_incr_style="constant",
        )
        self.fb = get_forward_backward_func()
        self.mbs, self.seq = job.train.micro_batch_size, job.train.seq_length
        dp, rank = ps.get_data_parallel_world_size(), ps.get_data_parallel_rank()
        self.num_micro = job.train.global_batch_size // (self.mbs * dp)
        # Megatron-LM's pretraining order: each group of mbs×dp samples, rank r takes slice r.
        group = self.mbs * dp
        batches = [
            list(range(base + rank * self.mbs, base + (rank + 1) * self.mbs))
            for base in range(0, len(trainer.train_dataset) - group + 1, group)
        ]
        loader = torch.utils.data.DataLoader(trainer.train_dataset, batch_sampler=batches)
        self.data = iter(loader)

    @staticmethod
    def loss_func(loss_mask: torch.Tensor, output: torch.Tensor):
        mask = loss_mask.view(-1).float()
        loss = torch.sum(output.view(-1).float() * mask)
        num_tokens = mask.sum().to(torch.int)
        report = torch.cat([loss.detach().view(1), num_tokens.detach().view(1).float()])
        return loss, num_tokens, {"lm loss": report}

    def forward_step(self, data_iterator, model):
        batch = next(data_iterator)
        if self.device.type == "cuda":
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        output = model(batch["tokens"], batch["position_ids"], None, labels=batch["labels"])
        return output, functools.partial(self.loss_func, batch["loss_mask"])

    def step(self) -> float:
        self.model.zero_grad_buffer()
        self.optimizer.zero_grad()
        losses = self.fb(
            forward_step_func=self.forward_step,
            data_iterator=self.data,
            model=self.model,
            num_microbatches=self.num_micro,
            seq_length=self.seq,
            micro_batch_size=self.mbs,
            forward_only=False,
        )
        updated, _, _ = self.optimizer.step()
        if updated:
            self.scheduler.step(increment=1)
        # Reported loss: per-token mean over the global batch (Megatron-LM reduces it too).
        total = torch.zeros(2, device=self.device)
        for item in losses:
            total += item["lm loss"]
        dist.all_reduce(total)
        return float(total[0] / total[1])


class Alternate(Callback):
    """Runs last in every hook: times the trainer's step (from the end of the previous one,
    so the loop and every other callback count), then runs and times one plain step."""

    priority = 1_000

    def __init__(self) -> None:
        self.plain: PlainLoop | None = None
        self.ours: list[float] = []
        self.theirs: list[float] = []
        self.loss_diff: list[float] = []
        self._mark = 0.0

    def on_train_start(self, trainer: Any) -> None:
        self.plain = PlainLoop(trainer)
        _sync()
        self._mark = time.perf_counter()

    def on_step_end(self, trainer: Any, metrics: dict[str, float]) -> None:
        _sync()
        start = time.perf_counter()
        self.ours.append(start - self._mark)
        loss = self.plain.step()
        _sync()
        self.theirs.append(time.perf_counter() - start)
        self.loss_diff.append(abs(loss - metrics["train/loss"]) / abs(metrics["train/loss"]))
        self._mark = time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=30, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--mbs", type=int, default=2)
    parser.add_argument("--gbs", type=int, default=8)
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    parser.add_argument("overrides", nargs="*", help="extra key=value for our job (e.g. logging.jsonl=false)")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "tower_megatron_bench"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from tower_megatron.testing.tiny import build_tiny_assets, tiny_job
    from tower_megatron.training.entry import run_training

    # Ranks of one torchrun share MASTER_PORT, so they agree on a fresh run directory.
    run_dir = Path(args.workdir) / f"run-{os.environ.get('MASTER_PORT', os.getpid())}"
    assets = build_tiny_assets(Path(args.workdir) / "assets")
    job = tiny_job(
        assets,
        run_dir,
        f"run.device={'auto' if torch.cuda.is_available() else 'cpu'}",
        f"train.train_steps={args.warmup + args.steps}",
        f"model.num_layers={args.layers}",
        f"model.hidden_size={args.hidden}",
        f"model.max_position_embeddings={max(256, args.seq)}",
        f"train.seq_length={args.seq}",
        f"train.micro_batch_size={args.mbs}",
        f"train.global_batch_size={args.gbs}",
        f"train.precision={args.precision}",
        f"parallel.tensor_model_parallel_size={args.tp}",
        "logging.jsonl=true",
        "checkpoint.resume=false",
        *args.overrides,
    )
    timer = Alternate()
    run_training(job, extra_callbacks=[timer])
    if dist.get_rank() == 0:
        ours, theirs = timer.ours[args.warmup :], timer.theirs[args.warmup :]
        med_ours, med_theirs = statistics.median(ours), statistics.median(theirs)
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
        print(
            f"\ntiny GPT {args.layers}L h{args.hidden} seq {args.seq} mbs {args.mbs} gbs {args.gbs} "
            f"TP {args.tp} {args.precision}, world {dist.get_world_size()}, {device}, "
            f"{torch.get_num_threads()} threads; {args.warmup} warm-up + {args.steps} timed steps"
        )
        print(
            f"  plain Megatron-Core loop  median {med_theirs * 1e3:8.2f} ms   min {min(theirs) * 1e3:8.2f} ms"
        )
        print(f"  tower-megatron Trainer    median {med_ours * 1e3:8.2f} ms   min {min(ours) * 1e3:8.2f} ms")
        print(f"  ratio (median)            {med_ours / med_theirs:.3f}×   (target ≤ 1.02×)")
        print(f"  ratio (min)               {min(ours) / min(theirs):.3f}×")
        paired = statistics.median(o / t for o, t in zip(ours, theirs, strict=True))
        print(f"  ratio (median of pairs)   {paired:.3f}×   (each trainer step / the plain step after it)")
        print(f"  max relative loss difference over all steps: {max(timer.loss_diff):.2e}")
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
