"""Stages: what training means for CPT, SFT, DPO/WPO and GRPO — each owns what differs.

A *stage* here is a training paradigm (OLMo-core calls it a ``TrainModule``), not a pipeline
stage; this codebase calls pipeline stages "pipeline ranks" and their pieces "model chunks".

The :class:`~tower_megatron.training.trainer.Trainer` owns the loop, parallelism, the optimizer,
checkpoints and callbacks. A stage owns:

- its config section (``config_section``) and its checks (:meth:`Stage.check_config`),
- its data (:meth:`prepare_data`, :meth:`build_datasets`, :meth:`collate`),
- extra models it needs, e.g. a frozen reference policy (:meth:`build_models`),
- what one micro-batch computes (:meth:`forward_step`) and the tensor shape it sends between
  pipeline ranks (:meth:`pipeline_shape`),
- its loss normalisation: the loss function returns ``(loss_sum, count, report)`` and gradients
  are divided by the global ``count`` — tokens for CPT/SFT, pairs for DPO, sequences or tokens for
  GRPO — so any DP/micro-batch split gives the same gradients,
- what one training step is (:meth:`train_step`; GRPO generates, scores and takes several
  optimizer steps), and the state a checkpoint must hold to resume it exactly
  (:meth:`state_dict`).

A new stage is a subclass registered by name and selected with ``train.stage=<name>``::

    @STAGES.register("sft")
    class SFTStage(Stage): ...
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from tower_megatron.config.schema import JobConfig
from tower_megatron.registry import Registry

if TYPE_CHECKING:
    from tower_megatron.runtime import Runtime
    from tower_megatron.training.models import ModelFactory
    from tower_megatron.training.trainer import Trainer

STAGES: Registry[type[Stage]] = Registry("stage")

LossFunc = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]]


@dataclass
class StepOutput:
    """What one :meth:`Stage.train_step` produced. ``losses`` are the per-micro-batch report
    dicts of the schedule (``{key: tensor([sum, count])}``); the trainer reduces them over the
    world in one collective. ``metrics`` are extra values the stage reduced itself (GRPO rewards).
    """

    losses: list[dict[str, torch.Tensor]]
    grad_norm: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    samples: int | None = None  # samples consumed (default: the global batch size)
    tokens: int | None = None  # tokens fed through the model (default: samples × tokens/sample)


class Stage:
    """Base class; CPT (:mod:`tower_megatron.training.cpt`) is the simplest subclass."""

    name = "base"
    # Keys of the loss_func's report dict; the first is the loss logged as train/loss.
    loss_keys: tuple[str, ...] = ("lm loss",)
    # The JobConfig field this stage reads its own options from (None: no section).
    config_section: str | None = None

    def __init__(self, job: JobConfig, tokenizer: Any, runtime: Runtime | None = None) -> None:
        self.job = job
        self.tokenizer = tokenizer
        self.runtime = runtime

    @property
    def options(self) -> Any:
        """This stage's config section (``job.<config_section>``)."""
        return getattr(self.job, self.config_section) if self.config_section else None

    # ------------------------------------------------------------------ config
    @classmethod
    def check_config(cls, job: JobConfig, world_size: int) -> list[str]:
        """Problems with the stage's own options (each naming its key); run before anything
        starts, by :func:`tower_megatron.config.validate.validate_job`."""
        return []

    @classmethod
    def check_data(cls, job: JobConfig, vocab_size: int | None) -> list[str]:
        """Problems with the data this stage reads (missing or foreign token files, ...). The
        default checks CPT's ``data.paths``/``data.mixture`` token files."""
        from tower_megatron.data.checks import check_data

        return check_data(job.data, vocab_size)

    # ------------------------------------------------------------------ data
    def prepare_data(self, run_dir: Any) -> None:
        """Work done once, on the main rank, before any rank builds datasets (CPT resolves its
        mixture and writes the report here)."""

    def num_train_samples(self) -> int:
        return self.job.train.train_steps * self.job.train.global_batch_size

    def dataset_sizes(self, cache_dir: str) -> dict[str, Any]:
        """The keyword arguments every dataset builder takes: sequence length, sample counts
        (training steps × global batch; ``eval_steps`` global batches per validation set), seed
        and index cache."""
        train = self.job.train
        return {
            "seq_length": train.seq_length,
            "train_samples": self.num_train_samples(),
            "valid_samples": max(1, train.eval_steps) * train.global_batch_size,
            "seed": self.job.run.seed,
            "cache_dir": cache_dir,
        }

    def build_datasets(self, cache_dir: str) -> tuple[Any, dict[str, Any]]:
        raise NotImplementedError

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return torch.utils.data.default_collate(samples)

    # ------------------------------------------------------------------ models
    def build_models(self, factory: ModelFactory) -> None:
        """Builds extra models the stage needs (e.g. a frozen reference policy) with the same
        layout as the trained one; called after the trained model exists."""

    def setup(self, trainer: Trainer) -> None:
        """Called once the trainer exists and any checkpoint is loaded, before the first step
        (e.g. DPO computes reference log-probabilities here)."""

    def teardown(self, trainer: Trainer) -> None:
        """Called after training ends, also after an error (GRPO stops its reward workers)."""

    # ------------------------------------------------------------------ one step
    def pipeline_shape(self) -> tuple[int, int]:
        """``(seq_length, micro_batch_size)`` of the activations sent between pipeline ranks: a
        preference stage runs chosen and rejected together, so its batch dimension doubles."""
        return self.job.train.seq_length, self.job.train.micro_batch_size

    def forward_step(self, batch: dict[str, torch.Tensor], model: torch.nn.Module) -> tuple[torch.Tensor, LossFunc]:
        """Megatron's ``(output_tensor, loss_func)`` pair for one micro-batch."""
        raise NotImplementedError

    def train_step(self, trainer: Trainer) -> StepOutput:
        """One step: a forward/backward over a global batch, then one optimizer step."""
        losses = trainer.forward_backward(trainer.train_iterator(), trainer.num_microbatches)
        return StepOutput(losses=losses, grad_norm=trainer.optimizer_step())

    def tokens_per_sample(self) -> int:
        """Tokens a sample feeds through the model (for throughput and MFU)."""
        return self.job.train.seq_length

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        """What an exact resume needs beyond weights, optimizer and train state (same on every
        rank; saved with the checkpoint's common state)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


# Modules whose import registers stages.
STAGE_MODULES = (
    "tower_megatron.training.cpt",
    "tower_megatron.alignment.sft",
    "tower_megatron.alignment.preference",
    "tower_megatron.alignment.grpo",
)


def load_stage_plugins() -> None:
    for module in STAGE_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # a stage that exists but fails to import is a real error
                raise


def stage_class(name: str) -> type[Stage]:
    load_stage_plugins()
    return STAGES.get(name)


def build_stage(job: JobConfig, tokenizer: Any, runtime: Runtime | None = None) -> Stage:
    return stage_class(job.train.stage)(job, tokenizer, runtime)


def masked_token_loss(per_token_loss: torch.Tensor, loss_mask: torch.Tensor, key: str = "lm loss"):
    """Sum of the per-token losses where ``loss_mask`` is 1, plus the token count."""
    losses = per_token_loss.float().view(-1)
    mask = loss_mask.float().view(-1)
    loss_sum = torch.sum(losses * mask)
    num_tokens = mask.sum().to(torch.int)
    report = torch.stack([loss_sum.detach(), num_tokens.detach().float()])
    return loss_sum, num_tokens, {key: report}
