"""Sampling, log-probs, stops and model state on one process (a tiny converted Gemma 2).

* same seed → same tokens, another seed → other tokens, whatever the forward batching; top-k 1
  equals greedy;
* log-probs of sampled tokens equal a teacher-forced forward pass (log_softmax of the logits);
* stop tokens, stop strings and max_new_tokens end rows exactly where they should;
* generation leaves the modules as it found them: training mode, no inference flag, the same
  logits, and a training forward/backward (also through Megatron DDP via ``from_model``) works;
* the top-k / top-p filter equals ``transformers``' logits warpers.
"""

from __future__ import annotations

import pytest
import torch
from generation_cases import prompt_batch

from tower_megatron.generation.base import SamplingParams
from tower_megatron.testing import run_distributed

LENGTHS = (7, 12, 4)
SAMPLED = dict(max_new_tokens=12, temperature=1.5, seed=5, return_logprobs=True)


def _worker(hf_dir: str, prompts: list[list[int]]) -> dict:
    import os

    # One thread: the runtime would give this lone process every core, and on a loaded shared
    # machine oversubscribed threads make it ~40× slower.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
    from megatron.core.inference.utils import InferenceMode

    from tower_megatron.generation import MegatronGenerator, load_generator

    gen = load_generator(hf_dir, device="cpu")
    model = gen.chunks[0]
    out: dict = {"eos": gen.eos_ids}

    def ids(outputs):
        return [o.token_ids for o in outputs]

    ref_ids = torch.tensor([prompts[1]])
    ref_pos = torch.arange(ref_ids.size(1)).unsqueeze(0)
    model.train()
    with torch.no_grad():
        before = model(ref_ids, ref_pos, None)

    a = gen.generate(prompts, SamplingParams(**SAMPLED))
    out["sampled"] = ids(a)
    out["sampled_again"] = ids(gen.generate(prompts, SamplingParams(**SAMPLED)))
    out["other_seed"] = ids(gen.generate(prompts, SamplingParams(**{**SAMPLED, "seed": 6})))
    one_by_one = MegatronGenerator.from_model([model], gen.tokenizer, gen.model_cfg, max_batch_size=1)
    out["sampled_one_by_one"] = ids(one_by_one.generate(prompts, SamplingParams(**SAMPLED)))
    out["logprobs"] = [o.logprobs for o in a]
    # Teacher forcing: one row at a time, the prompt plus all generated tokens but the last.
    out["teacher_logprobs"] = []
    for prompt, o in zip(prompts, a, strict=True):
        logits = gen.forward_logits([prompt + o.token_ids[:-1]])[0].log_softmax(-1)
        pos = torch.arange(len(prompt) - 1, len(prompt) - 1 + len(o.token_ids))
        out["teacher_logprobs"].append(logits[pos, torch.tensor(o.token_ids)].tolist())

    out["greedy"] = ids(gen.generate(prompts, SamplingParams(max_new_tokens=12)))
    out["top_k_1"] = ids(
        gen.generate(prompts, SamplingParams(max_new_tokens=12, temperature=1.0, top_k=1, seed=3))
    )

    no_eos = MegatronGenerator.from_model([model], gen.tokenizer, gen.model_cfg, eos_ids=[])
    full = no_eos.generate(prompts, SamplingParams(max_new_tokens=8))
    out["full"] = ids(full)
    out["full_finish"] = [o.finish_reason for o in full]
    stop_token = full[0].token_ids[3]
    out["stop_token"] = stop_token
    stopped = no_eos.generate(prompts, SamplingParams(max_new_tokens=8, stop_token_ids=[stop_token]))
    out["stopped"] = [(o.token_ids, o.finish_reason, o.text) for o in stopped]
    out["full_text"] = [o.text for o in full]
    stop_string = full[0].text[3:5]
    out["stop_string"] = stop_string
    by_string = no_eos.generate(prompts, SamplingParams(max_new_tokens=8, stop_strings=[stop_string]))
    out["by_string"] = [(o.token_ids, o.finish_reason, o.text) for o in by_string]
    out["zero"] = [
        (o.token_ids, o.text, o.finish_reason)
        for o in gen.generate(prompts, SamplingParams(max_new_tokens=0))
    ]

    # Model state: as found (training mode, no inference flag, same logits), trainable.
    out["training_after"] = model.training
    out["inference_mode_after"] = InferenceMode.is_active()
    with torch.no_grad():
        after = model(ref_ids, ref_pos, None)
    out["logits_unchanged"] = bool(torch.equal(before, after))
    ddp = DistributedDataParallel(model.config, DistributedDataParallelConfig(), module=model)
    out["ddp_greedy"] = ids(
        MegatronGenerator.from_model([ddp], gen.tokenizer, gen.model_cfg).generate(
            prompts, SamplingParams(max_new_tokens=12)
        )
    )
    loss = ddp(ref_ids, ref_pos, None, labels=ref_ids).sum()
    loss.backward()
    out["grad_after_backward"] = any(
        float(p.main_grad.abs().sum()) > 0
        for p in model.parameters()
        if getattr(p, "main_grad", None) is not None
    )
    return out


@pytest.fixture(scope="module")
def results(tiny_hf_dirs):
    prompts = prompt_batch(128, LENGTHS, seed=3)
    (res,) = run_distributed(_worker, world_size=1, hf_dir=tiny_hf_dirs["gemma2_gqa_window"], prompts=prompts)
    return res, prompts


def test_same_seed_same_tokens(results):
    res, _ = results
    assert res["sampled"] == res["sampled_again"]
    assert res["sampled"] != res["other_seed"]


def test_a_prompts_samples_do_not_depend_on_its_batch(results):
    """Each prompt has its own generator (seed, index): forward batches of one give the same."""
    res, _ = results
    assert res["sampled_one_by_one"] == res["sampled"]


def test_top_k_1_is_greedy(results):
    res, _ = results
    assert res["top_k_1"] == res["greedy"]


def test_logprobs_equal_teacher_forced_forward(results):
    res, _ = results
    for got, ref in zip(res["logprobs"], res["teacher_logprobs"], strict=True):
        assert len(got) == len(ref)
        assert torch.allclose(torch.tensor(got), torch.tensor(ref), atol=1e-5)


def test_max_new_tokens_exact(results):
    res, _ = results
    assert [len(t) for t in res["full"]] == [8, 8, 8]
    assert res["full_finish"] == ["length"] * 3
    assert res["zero"] == [([], "", "length")] * 3


def test_stop_token_ends_row_after_it(results):
    res, _ = results
    tok = res["stop_token"]
    for full, (ids, reason, _) in zip(res["full"], res["stopped"], strict=True):
        if tok in full:
            assert ids == full[: full.index(tok) + 1] and reason == "stop"
        else:
            assert ids == full and reason == "length"


def test_stop_string_cuts_text_and_tokens(results, tiny_hf_dirs):
    import sentencepiece as spm

    res, _ = results
    sp = spm.SentencePieceProcessor(model_file=f"{tiny_hf_dirs['gemma2_gqa_window']}/tokenizer.model")
    stop = res["stop_string"]
    assert len(stop) == 2
    for full, (ids, reason, text) in zip(res["full"], res["by_string"], strict=True):
        decoded = [sp.decode([i for i in full[:k] if i < sp.get_piece_size()]) for k in range(len(full) + 1)]
        first = next((k for k, t in enumerate(decoded) if stop in t), None)
        if first is None:
            assert (ids, reason) == (full, "length")
        else:
            assert ids == full[:first] and reason == "stop"
            assert text == decoded[first][: decoded[first].index(stop)]


def test_model_state_is_restored_and_trainable(results):
    res, _ = results
    assert res["training_after"] is True
    assert res["inference_mode_after"] is False
    assert res["logits_unchanged"]
    assert res["ddp_greedy"] == res["greedy"]
    assert res["grad_after_backward"]


@pytest.mark.parametrize("top_k,top_p", [(0, 0.9), (20, 1.0), (15, 0.7), (0, 0.3)])
def test_top_k_top_p_filter_equals_transformers(top_k, top_p):
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    from tower_megatron.generation.sampling import _filter_top_k_top_p

    logits = torch.randn(6, 150, generator=torch.Generator().manual_seed(top_k + int(top_p * 10))) * 3
    ref = logits.clone()
    if top_k:
        ref = TopKLogitsWarper(top_k)(None, ref)
    if top_p < 1.0:
        ref = TopPLogitsWarper(top_p)(None, ref)
    got = _filter_top_k_top_p(logits, top_k, top_p)
    assert torch.equal(torch.isinf(got), torch.isinf(ref))
    assert torch.equal(got[~torch.isinf(got)], logits[~torch.isinf(got)])
