"""Build the Megatron objects a run trains: model chunks wrapped in Megatron DDP, Megatron's
optimizer and ``OptimizerParamScheduler``. Nothing here knows which stage is training."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from megatron.core import parallel_state as ps
from megatron.core.distributed import (
    DistributedDataParallel,
    DistributedDataParallelConfig,
    finalize_model_grads,
)
from megatron.core.optimizer import OptimizerConfig as MegatronOptimizerConfig
from megatron.core.optimizer import get_megatron_optimizer
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
from megatron.core.transformer.transformer_config import TransformerConfig

from tower_megatron.config.model import ModelConfig
from tower_megatron.config.schema import JobConfig
from tower_megatron.models import MODEL_FAMILIES, pad_vocab
from tower_megatron.runtime import runtime_device
from tower_megatron.training.init import layout_invariant_init


@dataclass
class BuiltModel:
    chunks: list[DistributedDataParallel]
    config: TransformerConfig
    model_cfg: ModelConfig  # resolved: every architecture field filled
    padded_vocab_size: int


def build_model(
    job: JobConfig,
    model_cfg: ModelConfig,
    wrap_ddp: bool = True,
    initialize: bool = True,
    device: torch.device | str | None = None,
) -> BuiltModel:
    """One chunk per virtual pipeline stage (one without VPP), wrapped in Megatron DDP.

    ``initialize=False`` skips every weight initialisation (Megatron's and the layout-invariant
    redraw): for runs whose weights come from a checkpoint, where drawing them first only wastes
    start-up time (each full weight drawn on every rank). The weights are then uninitialised
    memory until loaded. ``device``: the run's (``Runtime.device``; default the runtime's
    decision); a CPU device gets local layer specs and stays on CPU.
    """
    device = torch.device(device) if device is not None else runtime_device()
    family = MODEL_FAMILIES.get(model_cfg.arch)
    parallel = job.parallel
    config = family.transformer_config(
        model_cfg, parallel, job.train, device=device, perform_initialization=initialize
    )
    # Per-token loss: each micro-batch's loss is a sum and gradients are scaled once by the
    # global token count in finalize_model_grads, so any DP/micro-batch split gives equal grads.
    config.calculate_per_token_loss = True
    # Gloo matches point-to-point messages by posting order; batched p2p between a rank and
    # itself (PP=2 with VPP) pairs them wrongly (docs/cpu_runtime.md, "Traps"). Plain p2p is
    # right everywhere.
    config.batch_p2p_comm = torch.distributed.get_backend() != "gloo"
    padded_vocab = pad_vocab(
        model_cfg.vocab_size, model_cfg.make_vocab_size_divisible_by, parallel.tensor_model_parallel_size
    )
    vpp = parallel.virtual_pipeline_model_parallel_size
    chunks = []
    for vp_stage in range(vpp or 1):
        stage = vp_stage if vpp else None
        module = family.build(
            model_cfg,
            config,
            pre_process=ps.is_pipeline_first_stage(ignore_virtual=False, vp_stage=stage),
            post_process=ps.is_pipeline_last_stage(ignore_virtual=False, vp_stage=stage),
            vp_stage=stage,
            padded_vocab_size=padded_vocab,
            device=device,
        )
        chunks.append(module)
    if initialize:
        layout_invariant_init(
            chunks, seed=job.run.seed, std=model_cfg.init_method_std, num_layers=model_cfg.num_layers
        )
    if device.type == "cuda":
        chunks = [c.to(device) for c in chunks]
    if not wrap_ddp:
        return BuiltModel(chunks, config, model_cfg, padded_vocab)
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True,
        overlap_grad_reduce=parallel.overlap_grad_reduce,
        overlap_param_gather=parallel.overlap_param_gather,
        use_distributed_optimizer=parallel.use_distributed_optimizer,
        check_for_nan_in_grad=job.train.exit_on_nan,
    )
    wrapped = [
        DistributedDataParallel(config, ddp_config, module=chunk, disable_bucketing=i > 0)
        for i, chunk in enumerate(chunks)
    ]
    _wire_grad_sync(config, wrapped, parallel.overlap_grad_reduce, parallel.overlap_param_gather)
    return BuiltModel(wrapped, config, model_cfg, padded_vocab)


def _wire_grad_sync(config: TransformerConfig, chunks: list, overlap_grad: bool, overlap_param: bool) -> None:
    """What Megatron-LM's training loop sets on the config; without ``finalize_model_grads_func``
    data-parallel gradients are silently never all-reduced (docs/cpu_runtime.md, "Traps")."""
    config.finalize_model_grads_func = finalize_model_grads
    single = len(chunks) == 1
    config.no_sync_func = chunks[0].no_sync if single else [c.no_sync for c in chunks]
    if overlap_grad:
        config.grad_sync_func = chunks[0].start_grad_sync if single else [c.start_grad_sync for c in chunks]
    if overlap_param:
        config.param_sync_func = (
            chunks[0].start_param_sync if single else [c.start_param_sync for c in chunks]
        )


def build_optimizer(job: JobConfig, chunks: list) -> Any:
    opt = job.optimizer
    bf16 = job.train.precision == "bf16"
    config = MegatronOptimizerConfig(
        optimizer=opt.name,
        lr=opt.lr,
        min_lr=opt.min_lr,
        weight_decay=opt.weight_decay,
        adam_beta1=opt.adam_beta1,
        adam_beta2=opt.adam_beta2,
        adam_eps=opt.adam_eps,
        clip_grad=opt.clip_grad,
        bf16=bf16,
        fp16=False,
        params_dtype=torch.bfloat16 if bf16 else torch.float32,
        use_distributed_optimizer=job.parallel.use_distributed_optimizer,
        overlap_param_gather=job.parallel.overlap_param_gather,
    )
    return get_megatron_optimizer(config, chunks)


def build_scheduler(job: JobConfig, optimizer: Any) -> OptimizerParamScheduler:
    """Warmup then constant / linear / cosine / inverse-square-root / WSD, counted in steps."""
    sched, opt = job.scheduler, job.optimizer
    decay_steps = sched.decay_steps or job.train.train_steps
    return OptimizerParamScheduler(
        optimizer,
        init_lr=0.0 if sched.warmup_steps else opt.lr,
        max_lr=opt.lr,
        min_lr=opt.min_lr,
        lr_warmup_steps=sched.warmup_steps,
        lr_decay_steps=max(decay_steps, sched.warmup_steps + 1),
        lr_decay_style=sched.decay_style,
        start_wd=opt.weight_decay,
        end_wd=opt.weight_decay,
        wd_incr_steps=max(decay_steps, 1),
        wd_incr_style="constant",
        use_checkpoint_opt_param_scheduler=True,
        override_opt_param_scheduler=False,
        wsd_decay_steps=sched.wsd_decay_steps,
        lr_wsd_decay_style=sched.wsd_decay_style,
    )


def sync_params(chunks: list) -> None:
    """Makes every rank's model weights reflect the last optimizer step.

    With the distributed optimizer and ``overlap_param_gather``, each rank updates only its
    shard and the all-gather of the updated parameters is issued by the *next* forward pass
    (a forward pre-hook), so after the last step the weights a rank holds are partly one step
    stale. Anything that reads weights outside a forward pass (checkpoint saves, the end of
    training, export) calls this first, as Megatron-LM does around its checkpoint saves
    (``disable_forward_pre_hook`` forces the gather); the hooks are re-armed afterwards.
    """
    for chunk in chunks:
        if getattr(chunk, "use_forward_hook", False):
            chunk.disable_forward_pre_hook(param_sync=True)
            chunk.enable_forward_pre_hook()
