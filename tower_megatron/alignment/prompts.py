"""GRPO prompt sets: JSONL records naming a conversation (or plain prompt) and its reward.

``{"messages": [{"role": "user", "content": "..."}], "reward": {"type": "math", "answer": "1/2"},
"lang": "pt"}`` — or ``"prompt": "..."`` for a single user turn. ``lang`` (optional) is the
language the answer should be in (rewards that check or count by language use it). Every record
is checked when the set is loaded: a problem is one line naming file, line and field.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tower_megatron.config.loader import ConfigError


@dataclass(frozen=True)
class Prompt:
    messages: tuple[dict, ...]
    reward: dict
    lang: str | None
    source: str  # file:line, for logs and sample dumps


def load_prompts(paths: list[str]) -> list[Prompt]:
    from tower_megatron.rewards.registry import validate_spec
    from tower_megatron.utils.jsonl import iter_jsonl

    prompts: list[Prompt] = []
    for path in paths:
        for number, record in iter_jsonl(path, "grpo.prompts"):
            where = f"{path}:{number}"
            messages = _messages(record, where)
            problem = validate_spec(record.get("reward"), "reward")
            if problem:
                raise ConfigError(f"{where}: {problem}")
            lang = record.get("lang")
            if lang is not None and not isinstance(lang, str):
                raise ConfigError(f"{where}: lang: expected a string, got {lang!r}")
            prompts.append(Prompt(tuple(messages), record["reward"], lang, where))
    if not prompts:
        raise ConfigError(f"grpo.prompts: no prompts in {', '.join(paths) or '(no files)'}")
    return prompts


def _messages(record: dict, where: str) -> list[dict]:
    from tower_megatron.data.chat_format import ChatFormatError, check_messages

    if "messages" in record:
        try:
            messages = check_messages(record["messages"])
        except ChatFormatError as exc:
            raise ConfigError(f"{where}: {exc.where('messages')}: {exc}") from None
        if messages[-1]["role"] != "user":
            raise ConfigError(f"{where}: messages: the last message must be the user's (the model answers it)")
        return messages
    prompt = record.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise ConfigError(f"{where}: prompt: expected a non-empty string (or give messages)")
    return [{"role": "user", "content": prompt}]


class PromptSampler:
    """Prompts in a seeded order, a new permutation per epoch; its position is all a resume needs."""

    def __init__(self, count: int, seed: int, consumed: int = 0) -> None:
        self.count, self.seed, self.consumed = count, seed, consumed

    def _order(self, epoch: int) -> list[int]:
        order = list(range(self.count))
        random.Random(f"{self.seed}:{epoch}").shuffle(order)
        return order

    def take(self, n: int) -> list[int]:
        out = []
        for _ in range(n):
            epoch, offset = divmod(self.consumed, self.count)
            out.append(self._order(epoch)[offset])
            self.consumed += 1
        return out
