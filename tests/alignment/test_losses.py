"""Preference and GRPO losses against the published formulas, computed here independently from
full-vocabulary logits with plain torch (no code under test), values and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from tower_megatron.alignment.losses import (
    ADVANTAGE_ESTIMATORS,
    PREFERENCE_LOSSES,
    PreferenceInputs,
    grpo_token_loss,
    k3_kl,
    masked_normalise,
    wpo_weight,
)
from tower_megatron.registry import UnknownNameError

PAIRS, SEQ, VOCAB = 3, 5, 7


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, PAIRS, SEQ, VOCAB, generator=g, dtype=torch.float64)
    labels = torch.randint(0, VOCAB, (2, PAIRS, SEQ), generator=g)
    mask = torch.ones(2, PAIRS, SEQ, dtype=torch.float64)
    mask[..., :2] = 0  # the prompt
    mask[1, 0, -1] = 0  # a shorter rejected response
    ref = torch.randn(2, PAIRS, generator=g, dtype=torch.float64) - 5
    return logits, labels, mask, ref


def _reference_sequence_logps(logits, labels, mask):
    """Σ_t log softmax(logits)[y_t] over the response, the obvious way (loops)."""
    out = torch.zeros(labels.shape[:-1], dtype=torch.float64)
    for side in range(2):
        for p in range(PAIRS):
            total = 0.0
            for t in range(SEQ):
                if mask[side, p, t]:
                    row = logits[side, p, t]
                    total = total + row[labels[side, p, t]] - torch.log(torch.exp(row).sum())
            out[side, p] = total
    return out


def _inputs(logits, labels, mask, ref, weight=None):
    seq = (torch.log_softmax(logits, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1) * mask).sum(-1)
    return PreferenceInputs(seq[0], seq[1], ref[0], ref[1], weight)


@pytest.mark.parametrize("beta,smoothing", [(0.1, 0.0), (0.5, 0.2)])
def test_dpo_loss_and_gradient_match_paper(beta, smoothing):
    logits, labels, mask, ref = _batch()
    mine_logits = logits.clone().requires_grad_(True)
    mine = PREFERENCE_LOSSES.get("dpo")(_inputs(mine_logits, labels, mask, ref), beta, smoothing).sum()
    mine.backward()

    paper_logits = logits.clone().requires_grad_(True)
    seq = _reference_sequence_logps(paper_logits, labels, mask)
    h = (seq[0] - ref[0]) - (seq[1] - ref[1])
    sig = 1 / (1 + torch.exp(-beta * h))
    paper = (-(1 - smoothing) * torch.log(sig) - smoothing * torch.log(1 - sig)).sum()
    paper.backward()
    assert mine.item() == pytest.approx(paper.item(), rel=1e-12)
    torch.testing.assert_close(mine_logits.grad, paper_logits.grad, rtol=1e-10, atol=1e-12)


def test_dpo_loss_is_log2_when_policy_equals_reference():
    logits, labels, mask, _ = _batch()
    x = _inputs(logits, labels, mask, torch.zeros(2, PAIRS))
    x.reference_chosen, x.reference_rejected = x.policy_chosen.clone(), x.policy_rejected.clone()
    assert PREFERENCE_LOSSES.get("dpo")(x, 0.1).tolist() == pytest.approx([math.log(2)] * PAIRS)


def test_ipo_loss_matches_paper():
    logits, labels, mask, ref = _batch(1)
    beta = 0.3
    seq = _reference_sequence_logps(logits, labels, mask)
    h = (seq[0] - ref[0]) - (seq[1] - ref[1])
    want = (h - 1 / (2 * beta)) ** 2
    got = PREFERENCE_LOSSES.get("ipo")(_inputs(logits, labels, mask, ref), beta)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)


def test_wpo_weight_matches_equation_2():
    logits, labels, mask, _ = _batch(2)
    weights = []
    for p in range(PAIRS):
        a = []
        for side in range(2):
            terms = []
            for t in range(SEQ):
                if mask[side, p, t]:
                    probs = torch.softmax(logits[side, p, t], -1)
                    terms.append(math.log(probs[labels[side, p, t]]) - math.log(float((probs**2).sum())))
            a.append(sum(terms) / len(terms))
        weights.append(min(1.0, math.exp(a[0] + a[1])))
    got = wpo_weight(logits, labels, mask)
    assert got.tolist() == pytest.approx(weights, rel=1e-12)
    assert not got.requires_grad


def test_wpo_loss_is_weighted_dpo_without_gradient_through_weight():
    logits, labels, mask, ref = _batch(3)
    leaf = logits.clone().requires_grad_(True)
    weight = wpo_weight(leaf, labels, mask)
    wpo = PREFERENCE_LOSSES.get("wpo")(_inputs(leaf, labels, mask, ref, weight), 0.1).sum()
    wpo.backward()
    leaf2 = logits.clone().requires_grad_(True)
    dpo = PREFERENCE_LOSSES.get("dpo")(_inputs(leaf2, labels, mask, ref), 0.1)
    (dpo * weight).sum().backward()
    assert wpo.item() == pytest.approx((dpo * weight).sum().item(), rel=1e-12)
    torch.testing.assert_close(leaf.grad, leaf2.grad)


def test_unknown_loss_lists_known():
    with pytest.raises(UnknownNameError, match="Known: dpo, ipo, sigmoid, wpo"):
        PREFERENCE_LOSSES.get("rpo_sq")


# ------------------------------------------------------------------------------ GRPO
REWARDS = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5], [0.0, 0.25, 1.0, 0.0]])


def test_group_advantages_match_hand_computed_values():
    adv = ADVANTAGE_ESTIMATORS.get("group_mean")(REWARDS, normalize=True, eps=0.0)
    std0 = math.sqrt(((0.5**2) * 4) / 3)  # unbiased std of [1,0,0,1]
    assert adv[0].tolist() == pytest.approx([0.5 / std0, -0.5 / std0, -0.5 / std0, 0.5 / std0])
    assert torch.isnan(adv[1]).all()  # zero variance without eps: 0/0 (filtered upstream)
    adv = ADVANTAGE_ESTIMATORS.get("group_mean")(REWARDS, normalize=False)
    assert adv[2].tolist() == pytest.approx([-0.3125, -0.0625, 0.6875, -0.3125])


def test_leave_one_out_advantages():
    adv = ADVANTAGE_ESTIMATORS.get("leave_one_out")(REWARDS, normalize=False)
    # sample 0 of group 2: 0 - mean(0.25, 1, 0)
    assert adv[2, 0].item() == pytest.approx(-1.25 / 3)
    assert adv[0].tolist() == pytest.approx([2 / 3, -2 / 3, -2 / 3, 2 / 3])


def test_kl_is_zero_when_policy_equals_reference_and_positive_otherwise():
    logp = torch.log(torch.tensor([0.2, 0.5, 0.9]))
    assert k3_kl(logp, logp).tolist() == [0.0, 0.0, 0.0]
    ref = torch.log(torch.tensor([0.4, 0.5, 0.3]))
    want = [(0.4 / 0.2) - math.log(0.4 / 0.2) - 1, 0.0, (0.3 / 0.9) - math.log(0.3 / 0.9) - 1]
    assert k3_kl(logp, ref).tolist() == pytest.approx(want)


def test_grpo_loss_token_and_sequence_level():
    logp = torch.log(torch.tensor([[0.5, 0.5, 0.2], [0.3, 0.6, 0.9]]))
    old = torch.log(torch.tensor([[0.25, 0.5, 0.2], [0.3, 0.9, 0.9]]))
    adv = torch.tensor([1.0, -2.0])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    loss, clipped, kl = grpo_token_loss(logp, old, None, adv, 0.2, 0.2, kl_penalty=0.0)
    # ratios: [2, 1, 1] and [1, 2/3, 1]; A=1 clips ratio 2 at 1.2; A=-2 clips 2/3 at 0.8.
    # seq 0: -min(2*1, 1.2*1) = -1.2; -1; -1.   seq 1: -min(-2, -2) = 2; -min(-4/3, -1.6) = 1.6; 2
    torch.testing.assert_close(loss, torch.tensor([[-1.2, -1.0, -1.0], [2.0, 1.6, 2.0]]))
    assert clipped.tolist() == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    assert kl.abs().sum() == 0
    total, count = masked_normalise(loss, mask, token_level=True)
    assert (total.item(), count.item()) == pytest.approx((-1.2 - 1.0 + 2.0 + 1.6 + 2.0, 5.0))
    total, count = masked_normalise(loss, mask, token_level=False)
    assert (total.item(), count.item()) == pytest.approx((-1.1 + 5.6 / 3, 2.0))
