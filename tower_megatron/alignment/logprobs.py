"""Per-token log-probabilities from vocabulary-parallel logits (tensor parallelism).

Megatron's output layer leaves each TP rank with its slice of the vocabulary; the full softmax
never exists on one rank. Log-probabilities of the labels come from Megatron's
``vocab_parallel_cross_entropy`` (which all-reduces the partition function across TP, with
gradients); WPO's ``log Σ_v π(v)²`` needs two more vocabulary-wide log-sum-exps, reduced the same
way. At TP=1 both are the plain computations.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from megatron.core import parallel_state as ps
from megatron.core.tensor_parallel import vocab_parallel_cross_entropy


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``log π(label)`` per position, ``[b, s]``, from this rank's ``[b, s, V/tp]`` logits."""
    # vocab_parallel_cross_entropy wants [s, b, V/tp] and subtracts the max from its input in
    # place: give it a copy so the caller's logits stay intact (WPO reads them again).
    seq_first = logits.float().transpose(0, 1).clone(memory_format=torch.contiguous_format)
    per_token_nll = vocab_parallel_cross_entropy(seq_first, labels.clamp(min=0).t().contiguous())
    return -per_token_nll.t()


def _parallel_logsumexp(x: torch.Tensor) -> torch.Tensor:
    """``logsumexp`` over the last (vocabulary-parallel) dimension, across the TP group."""
    group = ps.get_tensor_model_parallel_group()
    local_max = x.max(dim=-1, keepdim=True).values
    if ps.get_tensor_model_parallel_world_size() > 1:
        dist.all_reduce(local_max, op=dist.ReduceOp.MAX, group=group)
    total = torch.exp(x - local_max).sum(dim=-1, keepdim=True)
    if ps.get_tensor_model_parallel_world_size() > 1:
        dist.all_reduce(total, group=group)
    return (torch.log(total) + local_max).squeeze(-1)


@torch.no_grad()
def log_sum_squared_probs(logits: torch.Tensor) -> torch.Tensor:
    """``log Σ_v π(v)²`` per position (WPO, Eq. 2): ``lse(2z) - 2·lse(z)``; no gradient."""
    z = logits.float()
    return _parallel_logsumexp(2 * z) - 2 * _parallel_logsumexp(z)


def sequence_logprob(token_logps: torch.Tensor, mask: torch.Tensor, average: bool) -> torch.Tensor:
    """Sum (or mean) of the masked per-token log-probabilities along the last dimension."""
    mask = mask.float()
    total = (token_logps * mask).sum(-1)
    return total / mask.sum(-1).clamp(min=1) if average else total


@torch.no_grad()
def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the next-token distribution per position (logged by GRPO; no gradient):
    ``lse(z) - Σ_v softmax(z)_v·z_v`` with both vocabulary sums across the TP group."""
    z = logits.float()
    lse = _parallel_logsumexp(z)
    weighted = (torch.exp(z - lse.unsqueeze(-1)) * z).sum(-1)
    if ps.get_tensor_model_parallel_world_size() > 1:
        dist.all_reduce(weighted, group=ps.get_tensor_model_parallel_group())
    return lse - weighted
