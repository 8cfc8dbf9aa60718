"""The one generation interface that evaluation, ``serve`` and GRPO rollouts use.

A backend (Megatron-Core inference on our model specs, or vLLM on GPU clusters) turns token-id
prompts into completions. Callers never assemble model configs, vocabulary padding or parallel
state: they get a backend from :func:`tower_megatron.generation.load_generator` and call
:meth:`GenerationBackend.generate`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field


@dataclass
class SamplingParams:
    """How to pick the next token. ``temperature == 0`` is greedy decoding."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    seed: int | None = None  # sampling with the same seed and prompts gives the same tokens
    stop_token_ids: list[int] = field(default_factory=list)  # besides the tokenizer's EOS
    stop_strings: list[str] = field(default_factory=list)
    return_logprobs: bool = False


@dataclass
class GenerationOutput:
    """One completion: the new token ids (prompt excluded, stop token included when one ended it),
    their decoded text (stop string cut off), the log-probability of each new token under the
    sampling distribution's model logits (temperature 1, before top-k/top-p) when asked for, and
    why it ended: ``"stop"`` (EOS, stop token or stop string) or ``"length"``."""

    token_ids: list[int]
    text: str
    logprobs: list[float] | None = None
    finish_reason: str = "length"


class GenerationBackend(ABC):
    """Generates for a batch of prompts of different lengths; every rank of the model's parallel
    group calls :meth:`generate` with the same arguments and gets the same outputs."""

    @property
    @abstractmethod
    def tokenizer(self):  # the tokenizer the prompts are encoded with (tower_megatron.data.tokenizer)
        ...

    @abstractmethod
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[GenerationOutput]:
        """One output per prompt, in order."""

    def generate_text(self, prompts: list[str], params: SamplingParams) -> list[GenerationOutput]:
        """Plain-text prompts (already rendered through the chat format if they are chats)."""
        return self.generate([self.tokenizer.tokenize(p) for p in prompts], params)

    def update_weights(self, model_chunks) -> None:  # noqa: B027 - optional for backends
        """Refreshes the backend's weights from training model chunks (GRPO after each update).
        Backends that share the training modules need not do anything."""
