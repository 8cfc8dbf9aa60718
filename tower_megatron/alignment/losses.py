"""Alignment losses as pure functions, registered by name.

Preference losses (``PREFERENCE_LOSSES``) take per-pair sequence log-probabilities of the policy
and the reference, chosen and rejected, and return per-pair losses. Every formula is written out
in ``docs/alignment.md`` with its paper:

- ``dpo``: Rafailov et al. 2023, Eq. 7, with conservative label smoothing (Mitchell 2023 "cDPO"):
  ``-(1-ε)·log σ(β·h) - ε·log σ(-β·h)`` where ``h = (π_c - r_c) - (π_r - r_r)``.
- ``ipo``: Azar et al. 2023, Eq. 17: ``(h - 1/(2β))²``.
- ``wpo``: Zhou et al. 2024, Eq. 2: the DPO loss times a per-pair weight (:func:`wpo_pair_weight`)
  that carries no gradient.
- ``rpo_sq``, ``rpo_fwd_kl``, ``rpo_bwd_kl``: NeMo-Aligner's reward-aware variants (Nvidia 2024,
  "Nemotron-4 340B", §3.2.3) need ground-truth reward gaps per pair, which the preference data
  formats here do not carry: they are not registered (asking for one lists the known losses).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tower_megatron.registry import Registry


@dataclass
class PreferenceInputs:
    """Per-pair log-probabilities ``[pairs]`` (summed or averaged over response tokens)."""

    policy_chosen: torch.Tensor
    policy_rejected: torch.Tensor
    reference_chosen: torch.Tensor
    reference_rejected: torch.Tensor
    weight: torch.Tensor | None = None  # WPO's per-pair weight (no gradient)

    def margin(self) -> torch.Tensor:
        """``h``: how much more the policy prefers chosen over rejected than the reference does."""
        return (self.policy_chosen - self.reference_chosen) - (self.policy_rejected - self.reference_rejected)


PreferenceLoss = Callable[[PreferenceInputs, float, float], torch.Tensor]
PREFERENCE_LOSSES: Registry[PreferenceLoss] = Registry("preference loss")


@PREFERENCE_LOSSES.register("dpo", "sigmoid")
def dpo_loss(x: PreferenceInputs, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    logits = beta * x.margin()
    return -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)


@PREFERENCE_LOSSES.register("ipo")
def ipo_loss(x: PreferenceInputs, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    return (x.margin() - 1 / (2 * beta)) ** 2


@PREFERENCE_LOSSES.register("wpo")
def wpo_loss(x: PreferenceInputs, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    if x.weight is None:
        raise ValueError("the wpo loss needs per-pair weights (wpo_pair_weight)")
    return dpo_loss(x, beta, label_smoothing) * x.weight.detach()


def implicit_rewards(x: PreferenceInputs, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """DPO's implicit rewards ``β·(π - r)`` of chosen and rejected (logged, no gradient)."""
    chosen = beta * (x.policy_chosen - x.reference_chosen).detach()
    rejected = beta * (x.policy_rejected - x.reference_rejected).detach()
    return chosen, rejected


# ------------------------------------------------------------------------------ WPO weights
def wpo_token_terms(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per token ``log π(y_t) - log Σ_v π(v)²`` from full-vocabulary logits ``[..., V]``
    (WPO Eq. 2's adjusted log-probability; no gradient). Tensor-parallel callers use
    :func:`tower_megatron.alignment.logprobs.wpo_token_terms_parallel`."""
    with torch.no_grad():
        # At least fp32 (bf16 logits would round the weights), float64 stays float64.
        logp = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
        token = logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
        return token - torch.logsumexp(2 * logp, dim=-1)


def wpo_sequence_term(token_terms: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``a_y``: the mean of the per-token terms over the response tokens (``mask`` = 1)."""
    mask = mask.float()
    return (token_terms * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def wpo_pair_weight(a_chosen: torch.Tensor, a_rejected: torch.Tensor) -> torch.Tensor:
    """``w = min(1, exp(a_chosen + a_rejected))`` — how likely the policy is to produce the pair."""
    return torch.exp(a_chosen + a_rejected).clamp(max=1.0).detach()


def wpo_weight(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """WPO's pair weight from ``[2, pairs, seq, V]`` logits (chosen first), labels and response
    masks ``[2, pairs, seq]``: the function to check alone against the paper's formula."""
    terms = wpo_sequence_term(wpo_token_terms(logits, labels), mask)
    return wpo_pair_weight(terms[0], terms[1])


# ------------------------------------------------------------------------------ GRPO
ADVANTAGE_ESTIMATORS: Registry[Callable[..., torch.Tensor]] = Registry("advantage estimator")


@ADVANTAGE_ESTIMATORS.register("group_mean")
def group_advantages(rewards: torch.Tensor, normalize: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """GRPO (Shao et al. 2024, §4.1.2): ``(r - mean(group)) / (std(group) + eps)`` for rewards
    ``[groups, samples]``; without ``normalize`` only the mean is subtracted. Unbiased std, as
    NeMo-RL and TRL compute it."""
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if not normalize:
        return centred
    return centred / (rewards.std(dim=1, keepdim=True) + eps)


@ADVANTAGE_ESTIMATORS.register("leave_one_out")
def leave_one_out_advantages(rewards: torch.Tensor, normalize: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """RLOO baseline (Ahmadian et al. 2024): each sample's reward minus the mean of the others'."""
    n = rewards.size(1)
    baseline = (rewards.sum(dim=1, keepdim=True) - rewards) / max(n - 1, 1)
    advantages = rewards - baseline
    if normalize:
        advantages = advantages / (rewards.std(dim=1, keepdim=True) + eps)
    return advantages


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(π‖π_ref) per token: ``exp(r - p) - (r - p) - 1`` (≥ 0, 0 when
    the policy equals the reference)."""
    diff = ref_logp - logp
    return torch.exp(diff) - diff - 1


def grpo_token_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    clip_min: float,
    clip_max: float,
    kl_penalty: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token clipped policy-gradient loss plus ``kl_penalty × k3``, for token log-probs
    ``[seqs, T]`` of the current policy, the policy that sampled them (``old_logp``) and the
    reference, and per-sequence ``advantages [seqs]``. Returns ``(loss, clipped, kl)`` per token;
    the caller masks and normalises (per token or per sequence)."""
    ratio = torch.exp(logp - old_logp)
    adv = advantages.unsqueeze(-1)
    unclipped = ratio * adv
    clipped_ratio = torch.clamp(ratio, 1 - clip_min, 1 + clip_max)
    loss = -torch.minimum(unclipped, clipped_ratio * adv)
    clipped = (clipped_ratio * adv < unclipped).float().detach()
    kl = k3_kl(logp, ref_logp) if ref_logp is not None else torch.zeros_like(logp)
    return loss + kl_penalty * kl, clipped, kl.detach()


def masked_normalise(
    per_token: torch.Tensor, mask: torch.Tensor, token_level: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum, count)`` for the trainer's loss reduction: token level gives the mean over every
    response token of the global batch (count = tokens); sequence level averages each sequence
    over its own tokens first (count = sequences), as GRPO's original formula does."""
    mask = mask.float()
    if token_level:
        return (per_token * mask).sum(), mask.sum()
    per_seq = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    has_tokens = (mask.sum(-1) > 0).float()
    return (per_seq * has_tokens).sum(), has_tokens.sum()
