"""GRPO prompt sets: JSONL records naming a conversation (or plain prompt) and its reward.

``{"messages": [{"role": "user", "content": "..."}], "reward": {"type": "math", "answer": "1/2"},
"lang": "pt"}`` — or ``"prompt": "..."`` for a single user turn. ``lang`` (optional) is the
language the answer should be in (rewards that check or count by language use it). Every record
is checked when the set is loaded: a problem is one line naming file, line and field.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tower_megatron.config.loader import ConfigError


@dataclass(frozen=True)
class Prompt:
    messages: tuple[dict, ...]
    reward: dict
    lang: str | None
    source: str  # file:line, for logs and sample dumps


def load_prompts(paths: list[str]) -> list[Prompt]:
    from tower_megatron.resources import resolve
    from tower_megatron.rewards.registry import validate_spec

    prompts: list[Prompt] = []
    for path in paths:
        file = Path(resolve(path))
        if not file.is_file():
            raise ConfigError(f"grpo.prompts: no such file: {path}")
        with file.open(encoding="utf-8-sig") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{number}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{where}: invalid JSON ({exc.msg})") from None
                if not isinstance(record, dict):
                    raise ConfigError(f"{where}: expected a JSON object, got {type(record).__name__}")
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
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or not messages:
            raise ConfigError(f"{where}: messages: expected a non-empty list of {{role, content}}")
        for i, msg in enumerate(messages):
            if not isinstance(msg, dict) or not isinstance(msg.get("content"), str):
                raise ConfigError(f"{where}: messages[{i}].content: expected a string")
            if msg.get("role") not in ("system", "user", "assistant"):
                raise ConfigError(f"{where}: messages[{i}].role: expected system, user or assistant, got {msg.get('role')!r}")
        if messages[-1]["role"] != "user":
            raise ConfigError(f"{where}: messages: the last message must be the user's (the model answers it)")
        return [{"role": m["role"], "content": m["content"]} for m in messages]
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


def encode_prompt(prompt: Prompt, tokenizer: Any, chat_format: str) -> list[int]:
    """Token ids of the conversation rendered with the generation prompt (BOS first if the format
    has one)."""
    from tower_megatron.data.chat_format import format_for

    fmt = format_for(chat_format)
    ids = tokenizer.tokenize(fmt.render(list(prompt.messages), add_generation_prompt=True).text)
    bos = getattr(tokenizer, "bos", None) if fmt.bos_token else None
    return ([int(bos)] if bos is not None else []) + list(ids)
