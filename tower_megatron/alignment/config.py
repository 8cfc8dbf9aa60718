"""Config sections of the alignment stages (``dpo:``, ``grpo:``, ``loss_fn:``; SFT's options are
about its data and live in ``data.sft``).

Field names follow NeMo-Aligner (DPO) and NeMo-RL (GRPO, ``loss_fn``) where a field maps one
to one, so a team coming from those recipes keeps its keys; ``docs/alignment.md`` lists each
mapping. Light on purpose (no torch import): the job schema includes these dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class DPOConfig:
    """``train.stage=dpo`` (also ``wpo``, ``ipo``): preference optimisation (NeMo-Aligner names)."""

    preference_loss: str = "dpo"  # a name in PREFERENCE_LOSSES: dpo | ipo | wpo | rpo_sq | ...
    ref_policy_kl_penalty: float = 0.1  # beta
    label_smoothing: float = 0.0  # conservative DPO (cDPO): assumed share of flipped labels
    preference_loss_weight: float = 1.0
    sft_loss_weight: float = 0.0  # NLL on the chosen response, added to the preference loss
    preference_average_log_probs: bool = False  # per-token mean instead of the sum (IPO's default)
    sft_average_log_probs: bool = True
    # Reference log-probs: "precompute" runs the frozen initial model once over the data before
    # the first step and stores them beside the run; "model" keeps a frozen copy resident.
    reference: str = "precompute"  # precompute | model
    reference_checkpoint: Optional[str] = None  # default: checkpoint.load (else the initial weights)


@dataclass
class GRPOConfig:
    """``train.stage=grpo``: group-relative policy optimisation with verifiable rewards
    (NeMo-RL names)."""

    prompts: list[str] = field(default_factory=list)  # JSONL prompt sets (alignment/prompts.py)
    chat_format: Optional[str] = None  # default: the model family's (gemma for plain GPT)
    num_prompts_per_step: int = 8
    num_generations_per_prompt: int = 4
    normalize_rewards: bool = True  # divide advantages by the group's reward std
    use_leave_one_out_baseline: bool = False
    updates_per_rollout: int = 1  # optimizer steps on each rollout batch
    filter_zero_variance_groups: bool = False  # drop groups whose samples all scored the same
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    reward_workers: int = 2  # processes scoring responses
    reward_timeout_s: float = 10.0  # per response; a verifier that takes longer scores 0
    allow_unsandboxed_code: bool = False  # code rewards without a working sandbox: unsafe
    sample_log_interval: int = 10  # write sample completions every N steps (0: never)


@dataclass
class LossFnConfig:
    """NeMo-RL's ``loss_fn:`` section (GRPO's clipped policy-gradient loss)."""

    reference_policy_kl_penalty: float = 0.01
    reference_policy_kl_type: str = "k3"
    ratio_clip_min: float = 0.2
    ratio_clip_max: float = 0.2
    token_level_loss: bool = True  # mean over all tokens of the batch; false: per sequence first
