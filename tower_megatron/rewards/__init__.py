"""Verifiable rewards for GRPO: ``math``, ``ifeval``, ``translation``, ``code`` (sandboxed) and
``combined``, in one registry. See docs/rewards.md."""

from tower_megatron.rewards import code_exec, ifeval, math_answer, translation  # noqa: F401 - register
from tower_megatron.rewards.ifeval import InstructionVerdict, check_instructions
from tower_megatron.rewards.pool import RewardBatch, RewardPool
from tower_megatron.rewards.registry import (
    REWARDS,
    InvalidRewardSpecError,
    Reward,
    RewardResult,
    score,
    validate_spec,
)
from tower_megatron.rewards.sandbox import SandboxLimits, SandboxUnavailableError

__all__ = [
    "REWARDS",
    "InstructionVerdict",
    "InvalidRewardSpecError",
    "Reward",
    "RewardBatch",
    "RewardPool",
    "RewardResult",
    "SandboxLimits",
    "SandboxUnavailableError",
    "check_instructions",
    "score",
    "validate_spec",
]
