"""``tower-megatron generate CONFIG [key=value ...]``: prompts (or chats) from JSONL → completions.

Input: one JSON object per line with ``"prompt"`` (text, used as is) or ``"messages"`` (a chat,
rendered through the model family's chat format with the generation prompt appended, BOS id
first when the format has one); any other fields (``id``, ``reference``…) are copied to the output.
Output directory: ``generations.jsonl`` (one line per input, in order: the input fields plus
``completion``, ``token_ids``, ``finish_reason`` and, when asked for, ``logprobs``),
``metrics.jsonl`` and the resolved ``config.yaml``; each file appears atomically.
Every rank of a TP/PP layout runs this under torchrun; rank 0 writes.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from tower_megatron.config.loader import ConfigError, load_config, to_yaml
from tower_megatron.generation.base import SamplingParams
from tower_megatron.generation.config import CheckpointSection
from tower_megatron.utils.atomic import atomic_open, write_text


@dataclass
class GenerateConfig:
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)  # as eval's and serve's
    input: Optional[str] = None  # JSONL of {"prompt": ...} or {"messages": [...]}
    output_dir: str = "runs/generate"
    chat_format: Optional[str] = None  # gemma | chatml; default: the model family's
    batch_size: int = 16  # prompts per generate() call
    progress_bar: bool = True
    sampling: SamplingParams = field(default_factory=SamplingParams)


def read_requests(path: str) -> list[dict[str, Any]]:
    """The input lines; a bad line raises :class:`ConfigError` naming file, line and field."""
    from tower_megatron.data.chat_format import ChatFormatError, check_messages
    from tower_megatron.utils.jsonl import iter_jsonl

    requests = []
    for number, record in iter_jsonl(path, "input"):
        where = f"{path}:{number}"
        if ("prompt" in record) == ("messages" in record):
            raise ConfigError(
                f"{where}: needs exactly one of the fields 'prompt' (text) or 'messages' (chat)"
            )
        if "prompt" in record and not isinstance(record["prompt"], str):
            raise ConfigError(f"{where}: field 'prompt' must be a string")
        if "messages" in record:
            try:
                check_messages(record["messages"])
            except ChatFormatError as exc:
                raise ConfigError(
                    f"{where}: field 'messages' must be a non-empty list of {{'role': system|user|assistant, "
                    f"'content': str}} in chat order; {exc.where('messages')}: {exc}"
                ) from None
        requests.append(record)
    if not requests:
        raise ConfigError(f"input: {path} holds no requests")
    return requests


def encode_requests(requests: list[dict[str, Any]], tokenizer: Any, chat_format: str) -> list[list[int]]:
    """Token ids per request: plain prompts as they are, chats rendered with the generation prompt
    (BOS first when the format has one)."""
    from tower_megatron.data.chat_format import encode_chat

    return [
        tokenizer.tokenize(r["prompt"])
        if "prompt" in r
        else encode_chat(r["messages"], tokenizer, chat_format)
        for r in requests
    ]


def generate_main(config_path: str, overrides: list[str]) -> int:
    cfg = load_config(GenerateConfig, config_path, overrides)
    for key, value in (("checkpoint.path", cfg.checkpoint.path), ("input", cfg.input)):
        if not value:
            raise ConfigError(f"{key} is not set ({config_path})")
    if cfg.batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {cfg.batch_size}")
    requests = read_requests(cfg.input)  # bad input fails before any model is loaded

    from tower_megatron.data.chat_format import family_format
    from tower_megatron.generation.sampling import check_params

    try:
        check_params(cfg.sampling)
    except ValueError as exc:
        raise ConfigError(f"sampling: {exc}") from None
    backend = cfg.checkpoint.load()
    arch = getattr(getattr(backend, "model_cfg", None), "arch", "gpt")
    chat_format = cfg.chat_format or family_format(arch)
    prompts = encode_requests(requests, backend.tokenizer, chat_format)
    is_main = int(os.environ.get("RANK", "0")) == 0
    outputs = []
    start = time.perf_counter()
    batches = range(0, len(prompts), cfg.batch_size)
    if cfg.progress_bar and is_main:
        from tqdm import tqdm

        batches = tqdm(batches, desc="generate", unit="batch")
    for first in batches:
        outputs += backend.generate(prompts[first : first + cfg.batch_size], cfg.sampling)
    seconds = time.perf_counter() - start
    if is_main:
        out_dir = Path(cfg.output_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_open(out_dir / "generations.jsonl", "w", encoding="utf-8") as handle:
            for record, out in zip(requests, outputs, strict=True):
                row = {
                    **record,
                    "completion": out.text,
                    "token_ids": out.token_ids,
                    "finish_reason": out.finish_reason,
                }
                if out.logprobs is not None:
                    row["logprobs"] = out.logprobs
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        new_tokens = sum(len(o.token_ids) for o in outputs)
        metrics = {
            "prompts": len(prompts),
            "prompt_tokens": sum(len(p) for p in prompts),
            "new_tokens": new_tokens,
            "seconds": round(seconds, 4),
            "new_tokens_per_s": round(new_tokens / seconds, 2) if seconds > 0 else None,
            "finished_by_stop": sum(o.finish_reason == "stop" for o in outputs),
        }
        write_text(out_dir / "metrics.jsonl", json.dumps(metrics) + "\n")
        write_text(out_dir / "config.yaml", to_yaml(cfg))
        print(
            f"generate: {len(outputs)} completions, {new_tokens} new tokens → {out_dir / 'generations.jsonl'}"
        )
    return 0
