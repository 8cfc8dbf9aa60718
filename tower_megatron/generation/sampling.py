"""Next-token choice and stopping, shared by the Megatron backend's decode loop.

Everything works on a whole batch per step with tensor ops (no per-row Python on the hot path):
:func:`next_tokens` picks the tokens and their log-probabilities, :class:`StopTracker` records
which rows ended and why. Stop *strings* need text, so only they decode (the generated tail of
the rows still running, once per step, and only when stop strings were asked for).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tower_megatron.generation.base import GenerationOutput, SamplingParams


def check_params(params: SamplingParams) -> None:
    """One clear error for impossible sampling settings (before any forward pass)."""
    if params.max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {params.max_new_tokens}")
    if params.temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {params.temperature}")
    if not 0.0 < params.top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {params.top_p}")
    if params.top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 = off), got {params.top_k}")


def _filter_top_k_top_p(logits: Tensor, top_k: int, top_p: float) -> Tensor:
    """Logits with everything outside the top-k / nucleus set to -inf (the best token always stays)."""
    if top_k and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # Drop a token when the tokens before it already reach top_p (so the set is the smallest
        # prefix whose mass is >= top_p, as in HF's and vLLM's nucleus sampling).
        drop_sorted = (cumulative - sorted_logits.softmax(-1)) >= top_p
        drop_sorted[..., 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def row_generators(seed: int, indices: list[int], device: torch.device) -> list[torch.Generator]:
    """One generator per prompt, seeded from (call seed, prompt index): a prompt's samples do not
    depend on which other prompts share its forward batch, nor on how a call is split into
    batches (``max_batch_size``, equal-length grouping) — vLLM's per-request seeds behave alike."""
    generators = []
    for index in indices:
        gen = torch.Generator(device=device)
        gen.manual_seed((seed * 1_000_003 + index) % 2**63)
        generators.append(gen)
    return generators


def next_tokens(
    logits: Tensor, params: SamplingParams, generators: list[torch.Generator] | None
) -> tuple[Tensor, Tensor]:
    """``logits`` [b, V] (fp32, real vocabulary) → (token ids [b], their log-probabilities [b],
    zeros unless ``params.return_logprobs``).

    The log-probability is under the model's distribution (temperature 1, no top-k/top-p), which
    is what policy-gradient losses and teacher-forced scoring compare against.
    """
    logits = logits.float()
    if params.temperature == 0:
        tokens = logits.argmax(-1)
    else:
        filtered = _filter_top_k_top_p(logits / params.temperature, params.top_k, params.top_p)
        probs = filtered.softmax(-1)
        tokens = torch.cat(
            [torch.multinomial(p, 1, generator=g) for p, g in zip(probs, generators, strict=True)]
        )
    if not params.return_logprobs:
        return tokens, torch.zeros(tokens.shape, dtype=torch.float32, device=tokens.device)
    logprobs = logits.log_softmax(-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return tokens, logprobs


def decode(tokenizer: Any, ids: list[int]) -> str:
    """Text of ``ids``; ids the tokenizer does not know (a model's embedding is often larger than
    its tokenizer, and an untrained model may emit those rows) are left out of the text."""
    size = int(tokenizer.vocab_size)
    return tokenizer.detokenize([i for i in ids if 0 <= i < size])


class StopTracker:
    """Per-row state of a generation: tokens so far, log-probs, finished flags and reasons."""

    def __init__(self, batch: int, params: SamplingParams, eos_ids: list[int], tokenizer: Any) -> None:
        self.params = params
        self.tokenizer = tokenizer
        self.stop_ids = torch.tensor(sorted(set(eos_ids) | set(params.stop_token_ids)), dtype=torch.long)
        self.tokens = torch.zeros(batch, max(params.max_new_tokens, 1), dtype=torch.long)
        self.logprobs = torch.zeros(batch, max(params.max_new_tokens, 1), dtype=torch.float32)
        self.lengths = torch.zeros(batch, dtype=torch.long)  # generated tokens kept per row
        self.done = torch.zeros(batch, dtype=torch.bool)
        self.stopped = torch.zeros(batch, dtype=torch.bool)  # ended by a stop token/string
        self.cut_text: dict[int, str] = {}  # rows ended by a stop string: text before it
        self.step = 0

    def update(self, tokens: Tensor, logprobs: Tensor) -> None:
        """Records step ``self.step``'s tokens for the rows still running."""
        active = ~self.done
        self.tokens[:, self.step] = tokens
        self.logprobs[:, self.step] = logprobs
        self.lengths += active.long()
        self.step += 1
        hit = active & torch.isin(tokens, self.stop_ids)
        self.stopped |= hit
        self.done |= hit
        if self.params.stop_strings:
            self._check_stop_strings(active & ~hit)
        if self.step >= self.params.max_new_tokens:
            self.done[:] = True

    def _check_stop_strings(self, rows: Tensor) -> None:
        for row in rows.nonzero().flatten().tolist():
            text = decode(self.tokenizer, self.tokens[row, : self.lengths[row]].tolist())
            found = [i for i in (text.find(s) for s in self.params.stop_strings) if i >= 0]
            if found:
                self.cut_text[row] = text[: min(found)]
                self.stopped[row] = True
                self.done[row] = True

    @property
    def all_done(self) -> bool:
        return bool(self.done.all())

    def outputs(self) -> list[GenerationOutput]:
        outs = []
        for row in range(self.tokens.size(0)):
            n = int(self.lengths[row])
            ids = self.tokens[row, :n].tolist()
            if row in self.cut_text:
                text = self.cut_text[row]
            else:
                # A final stop token is part of token_ids but not of the text.
                ends_on_token = bool(self.stopped[row]) and n > 0
                text = decode(self.tokenizer, ids[:-1] if ends_on_token else ids)
            outs.append(
                GenerationOutput(
                    token_ids=ids,
                    text=text,
                    logprobs=self.logprobs[row, :n].tolist() if self.params.return_logprobs else None,
                    finish_reason="stop" if bool(self.stopped[row]) else "length",
                )
            )
        return outs
