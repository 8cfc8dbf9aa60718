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
from tower_megatron.utils.atomic import atomic_open, write_text


@dataclass
class GenerateConfig:
    checkpoint: Optional[str] = None  # trainer run / checkpoints dir / iter_N, converted checkpoint, HF dir
    tokenizer: Optional[str] = None  # default: found beside the checkpoint
    backend: str = "megatron"  # megatron | vllm
    tensor_model_parallel_size: int = 1
    pipeline_model_parallel_size: int = 1
    device: str = "auto"  # auto | cpu | cuda
    precision: Optional[str] = None  # fp32 | bf16; default: bf16 on GPU, fp32 on CPU
    input: Optional[str] = None  # JSONL of {"prompt": ...} or {"messages": [...]}
    output_dir: str = "runs/generate"
    chat_format: Optional[str] = None  # gemma | chatml; default: the model family's
    batch_size: int = 16  # prompts per generate() call
    progress_bar: bool = True
    sampling: SamplingParams = field(default_factory=SamplingParams)


def read_requests(path: str) -> list[dict[str, Any]]:
    """The input lines; a bad line raises :class:`ConfigError` naming file, line and field."""
    from tower_megatron.data.chat_format import CHAT_ROLES

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"input: no such file: {file}")
    requests = []
    with file.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{file}, line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{where}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict) or ("prompt" in record) == ("messages" in record):
                raise ConfigError(
                    f"{where}: needs exactly one of the fields 'prompt' (text) or 'messages' (chat)"
                )
            if "prompt" in record and not isinstance(record["prompt"], str):
                raise ConfigError(f"{where}: field 'prompt' must be a string")
            if "messages" in record:
                messages = record["messages"]
                ok = (
                    isinstance(messages, list)
                    and messages
                    and all(
                        isinstance(m, dict)
                        and m.get("role") in CHAT_ROLES
                        and isinstance(m.get("content"), str)
                        for m in messages
                    )
                )
                if not ok:
                    raise ConfigError(
                        f"{where}: field 'messages' must be a non-empty list of "
                        f"{{'role': {'|'.join(CHAT_ROLES)}, 'content': str}}"
                    )
            requests.append(record)
    if not requests:
        raise ConfigError(f"input: {file} holds no requests")
    return requests


def encode_requests(
    requests: list[dict[str, Any]], tokenizer: Any, chat_format: str, where: str
) -> list[list[int]]:
    """Token ids per request: plain prompts as they are, chats rendered with the generation prompt."""
    from tower_megatron.data.chat_format import ChatFormatError, format_for

    fmt = format_for(chat_format)
    bos = getattr(tokenizer, "bos", None) if fmt.bos_token else None
    encoded = []
    for index, record in enumerate(requests):
        if "prompt" in record:
            encoded.append(tokenizer.tokenize(record["prompt"]))
            continue
        try:
            text = fmt.render(record["messages"], add_generation_prompt=True).text
        except ChatFormatError as exc:
            raise ConfigError(f"{where}, request {index + 1}: messages[{exc.index}]: {exc}") from None
        ids = tokenizer.tokenize(text)
        encoded.append(([int(bos)] if bos is not None else []) + ids)
    return encoded


def _default_chat_format(arch: str) -> str:
    from tower_megatron.data.chat_format import FAMILY_FORMATS

    return FAMILY_FORMATS.get(arch, "gemma")  # plain GPT runs train on the data pipeline's default


def generate_main(config_path: str, overrides: list[str]) -> int:
    cfg = load_config(GenerateConfig, config_path, overrides)
    for key in ("checkpoint", "input"):
        if not getattr(cfg, key):
            raise ConfigError(f"{key} is not set ({config_path})")
    if cfg.batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {cfg.batch_size}")
    requests = read_requests(cfg.input)  # bad input fails before any model is loaded

    from tower_megatron.generation import load_generator
    from tower_megatron.generation.sampling import check_params

    try:
        check_params(cfg.sampling)
    except ValueError as exc:
        raise ConfigError(f"sampling: {exc}") from None
    kwargs = {"precision": cfg.precision} if cfg.backend == "megatron" and cfg.precision else {}
    backend = load_generator(
        cfg.checkpoint,
        tp=cfg.tensor_model_parallel_size,
        pp=cfg.pipeline_model_parallel_size,
        device=cfg.device,
        tokenizer=cfg.tokenizer,
        backend=cfg.backend,
        **kwargs,
    )
    arch = getattr(getattr(backend, "model_cfg", None), "arch", "gpt")
    chat_format = cfg.chat_format or _default_chat_format(arch)
    prompts = encode_requests(requests, backend.tokenizer, chat_format, cfg.input)
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
