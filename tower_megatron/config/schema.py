"""The training job's typed configuration. Every YAML recipe and ``key=value`` override is
checked against these dataclasses (names follow Megatron/NeMo where users know them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from tower_megatron.alignment.config import DPOConfig, GRPOConfig, LossFnConfig
from tower_megatron.config.data import DataConfig
from tower_megatron.config.model import ModelConfig


@dataclass
class RunConfig:
    name: str = "tower"
    output_dir: str = "runs"  # the run directory is <output_dir>/<name>
    seed: int = 1234
    device: str = "auto"  # auto | cpu | cuda
    distributed_timeout_minutes: int = 30
    # A rank whose peer stops heartbeating for this long exits naming it (runtime/watchdog.py),
    # instead of waiting out the process-group timeout; 0: off.
    peer_failure_timeout_s: float = 120.0


@dataclass
class ParallelConfig:
    tensor_model_parallel_size: int = 1
    pipeline_model_parallel_size: int = 1
    virtual_pipeline_model_parallel_size: Optional[int] = None
    context_parallel_size: int = 1
    sequence_parallel: bool = False
    use_distributed_optimizer: bool = False
    overlap_grad_reduce: bool = False
    overlap_param_gather: bool = False


@dataclass
class OptimizerConfig:
    name: str = "adam"  # adam | sgd (Megatron's get_megatron_optimizer)
    lr: float = 3.0e-4
    min_lr: float = 3.0e-5
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_eps: float = 1.0e-8
    clip_grad: float = 1.0


@dataclass
class SchedulerConfig:
    warmup_steps: int = 0
    decay_style: str = "cosine"  # constant | linear | cosine | inverse-square-root | WSD
    decay_steps: Optional[int] = None  # default: train.train_steps
    wsd_decay_steps: Optional[int] = None  # WSD: steps of the final decay
    wsd_decay_style: str = "linear"  # linear | cosine | exponential | minus_sqrt


@dataclass
class TrainConfig:
    stage: str = "cpt"  # a registered stage plugin: cpt | sft | dpo | wpo | grpo
    train_steps: int = 10
    micro_batch_size: int = 1
    global_batch_size: int = 8
    seq_length: int = 128
    precision: str = "bf16"  # fp32 | bf16
    eval_interval: int = 0  # 0: no periodic validation
    eval_steps: int = 2
    exit_on_nan: bool = True


@dataclass
class CheckpointConfig:
    save_interval: int = 0  # 0: save only at the end (and on a preemption signal)
    keep_last: int = 3
    save_at_end: bool = True
    load: Optional[str] = None  # initial weights: a dist checkpoint (e.g. converted from HF)
    load_optimizer: bool = True  # with load: also restore optimizer, scheduler and step
    resume: bool = True  # resume from the latest complete checkpoint in the run directory
    save_on_signal: bool = True  # SIGTERM / SIGUSR1 → save, then exit
    fully_reshardable: bool = True  # optimizer state resharding across TP/PP/DP on load


@dataclass
class WandbConfig:
    project: Optional[str] = None  # None disables W&B
    entity: Optional[str] = None
    name: Optional[str] = None  # default: run.name
    mode: str = "online"  # online | offline | disabled
    tags: list[str] = field(default_factory=list)


@dataclass
class LoggingConfig:
    log_interval: int = 1
    console: bool = True
    progress_bar: bool = True
    jsonl: bool = True
    tensorboard: bool = True
    wandb: WandbConfig = field(default_factory=WandbConfig)
    peak_tflops: Optional[float] = None  # per device; default from the GPU model


@dataclass
class ProfilingConfig:
    enabled: bool = False
    start_step: int = 2
    end_step: int = 4
    memory: bool = False


@dataclass
class JobConfig:
    """Everything ``tower-megatron train`` reads."""

    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    profiling: ProfilingConfig = field(default_factory=ProfilingConfig)
    # Stage sections: each read only by its stage (Stage.config_section).
    dpo: DPOConfig = field(default_factory=DPOConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    loss_fn: LossFnConfig = field(default_factory=LossFnConfig)
