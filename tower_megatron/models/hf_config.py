"""Reading and writing Hugging Face ``config.json`` files (no ``transformers`` needed to read)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Where a converted Megatron checkpoint keeps the HF side files (config, tokenizer, templates), so
# ``model.hf_config=<checkpoint>`` and ``data.tokenizer.path=<checkpoint>/hf`` just work.
HF_SUBDIR = "hf"


def hf_config_path(path: str | Path) -> Path:
    """``config.json`` itself, a directory holding one, or a converted checkpoint (``hf/config.json``)."""
    path = Path(path)
    if path.is_file():
        return path
    for candidate in (path / "config.json", path / HF_SUBDIR / "config.json"):
        if candidate.is_file():
            return candidate
    if not path.exists():
        raise FileNotFoundError(f"model.hf_config: no such file or directory: {path}")
    raise FileNotFoundError(f"model.hf_config: no config.json in {path}")


def read_hf_config(path: str | Path) -> dict[str, Any]:
    file = hf_config_path(path)
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise ValueError(f"{file}: not an HF model config (no 'model_type')")
    # Multimodal wrappers nest the language model's config; only plain LMs are supported.
    return config


def rope_theta(hf: dict[str, Any], default: float) -> float:
    """RoPE base from either layout (``rope_theta`` ≤ 4.x, ``rope_parameters`` ≥ 5.x); refuses
    RoPE scaling (YaRN, linear, llama3…), which the Megatron side does not reproduce."""
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    for spec in (params, scaling):
        kind = spec.get("rope_type", spec.get("type", "default"))
        if kind not in (None, "default"):
            raise ValueError(f"RoPE scaling {kind!r} in the HF config is not supported")
    return float(params.get("rope_theta", hf.get("rope_theta", default)))


def layer_pattern(layer_types: list[str] | None, num_layers: int) -> list[int] | None:
    """HF ``layer_types`` → one 0/1 per layer (1 = sliding window)."""
    if not layer_types:
        return None
    if len(layer_types) != num_layers:
        raise ValueError(f"layer_types has {len(layer_types)} entries for {num_layers} layers")
    unknown = set(layer_types) - {"sliding_attention", "full_attention"}
    if unknown:
        raise ValueError(f"unsupported HF layer types {sorted(unknown)}")
    return [int(kind == "sliding_attention") for kind in layer_types]


def layer_types(pattern: list[int] | None, num_layers: int) -> list[str]:
    pattern = pattern or [0] * num_layers
    return ["sliding_attention" if p else "full_attention" for p in pattern]


def build_hf_config(model_type: str, fields: dict[str, Any]) -> dict[str, Any]:
    """The ``config.json`` dict ``transformers`` itself would write for these fields."""
    from transformers import AutoConfig

    config = AutoConfig.for_model(model_type, **fields)
    out = config.to_dict()
    # transformers ≥ 5 writes ``rope_parameters``; readers on 4.x (and vLLM builds pinned to it)
    # look for ``rope_theta``. Writing both keeps the export loadable by either.
    rope = out.get("rope_parameters") or {}
    if "rope_theta" in rope:
        out["rope_theta"] = rope["rope_theta"]
    return out
