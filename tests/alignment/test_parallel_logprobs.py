"""Log-probabilities and WPO's ``log Σ π²`` from vocabulary-parallel logits (TP=2 on two gloo
processes) equal the full-vocabulary computation, gradients included."""

from __future__ import annotations

import torch

from tower_megatron.testing import run_distributed


def _full(logits: torch.Tensor, labels: torch.Tensor):
    logp = torch.log_softmax(logits, -1)
    return logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1), torch.logsumexp(2 * logp, -1)


def _sharded(tp: int) -> dict:
    from megatron.core import parallel_state as ps

    from tower_megatron.alignment.logprobs import log_sum_squared_probs, token_logprobs
    from tower_megatron.runtime import init_runtime

    init_runtime(tp=tp, device="cpu")
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 10, generator=g)
    labels = torch.randint(0, 10, (3, 4), generator=g)
    rank, width = ps.get_tensor_model_parallel_rank(), 10 // tp
    shard = logits[..., rank * width : (rank + 1) * width].clone().requires_grad_(True)
    logps = token_logprobs(shard, labels)
    (logps * torch.arange(12.0).view(3, 4)).sum().backward()
    return {"logps": logps.detach(), "lssp": log_sum_squared_probs(shard), "grad": shard.grad, "rank": rank}


def test_tp2_equals_full_vocabulary():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 10, generator=g).requires_grad_(True)
    labels = torch.randint(0, 10, (3, 4), generator=g)
    want_logps, want_lssp = _full(logits, labels)
    (want_logps * torch.arange(12.0).view(3, 4)).sum().backward()
    for result in run_distributed(_sharded, world_size=2, tp=2):
        torch.testing.assert_close(result["logps"], want_logps.detach(), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(result["lssp"], want_lssp.detach(), rtol=1e-6, atol=1e-6)
        r = result["rank"]
        torch.testing.assert_close(result["grad"], logits.grad[..., r * 5 : (r + 1) * 5], rtol=1e-6, atol=1e-6)
