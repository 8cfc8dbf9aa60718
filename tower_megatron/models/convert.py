"""``tower-megatron convert``: HF safetensors ⇄ Megatron-Core ``torch_dist`` checkpoints.

* ``hf_to_megatron``: reads ``config.json`` (family from ``model_type``), checks every tensor's
  presence, shape and dtype before writing anything, then streams tensor by tensor into a
  checkpoint any TP/PP can load (:mod:`tower_megatron.models.checkpoint`). The resolved model
  config and the source ``config.json`` go into the checkpoint's common state; config, tokenizer
  and generation files into ``<output>/hf``.
* ``megatron_to_hf``: reads a converted or trainer checkpoint (any TP/PP it was saved at) chunk
  by chunk and writes size-bounded safetensors shards, ``config.json`` and the tokenizer files
  that ``transformers.AutoModelForCausalLM/AutoTokenizer.from_pretrained`` load directly.

Outputs appear atomically (written beside the target, renamed when complete).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from megatron.core.dist_checkpointing.mapping import ShardedObject

from tower_megatron.config.loader import ConfigError, load_config
from tower_megatron.config.model import FP8Config, ModelConfig
from tower_megatron.models.checkpoint import (
    HF_CONFIG_KEY,
    MODEL_CONFIG_KEY,
    CheckpointReader,
    Chunk,
    save_streaming,
    stored_model_config,
)
from tower_megatron.models.family import MODEL_FAMILIES, ModelFamily, family_for_hf_config
from tower_megatron.models.hf_config import HF_SUBDIR, read_hf_config
from tower_megatron.models.hf_weights import (
    SUPPORTED_DTYPES,
    ConversionError,
    HFWeights,
    ShardedSafetensorsWriter,
)
from tower_megatron.models.mapping import IGNORED_HF_SUFFIXES, MappingContext, TensorMap
from tower_megatron.models.tokenizers import (
    copy_tokenizer_files,
    ensure_chat_template,
    has_tokenizer,
    resolve_chat_template,
)
from tower_megatron.utils.atomic import atomic_path

DIRECTIONS = ("hf_to_megatron", "megatron_to_hf")
CHUNK_BYTES = 256 * 2**20  # row blocks of whole (non-layer) tensors when importing
EXTRA_STATE_MODULES = (
    "self_attention.linear_qkv",
    "self_attention.linear_proj",
    "mlp.linear_fc1",
    "mlp.linear_fc2",
)
Log = Callable[[str], None]


@dataclass
class ConvertConfig:
    """What ``tower-megatron convert CONFIG [key=value ...]`` reads."""

    direction: str = "hf_to_megatron"  # hf_to_megatron | megatron_to_hf
    input: Optional[str] = None  # HF model directory, or a Megatron checkpoint directory
    output: Optional[str] = None  # directory to create
    dtype: str = "auto"  # auto (keep the source's) | float32 | bfloat16 | float16
    tokenizer: Optional[str] = None  # directory of tokenizer files; default: the input's
    chat_template: Optional[str] = None  # registered name or .jinja file; default: source's, else family's
    max_shard_size_gb: float = 5.0  # megatron_to_hf: safetensors shard size
    overwrite: bool = False
    # megatron_to_hf from a checkpoint that does not record its architecture: describe it here
    # (model.preset / model.hf_config / model.* as in a training config).
    model: ModelConfig = field(default_factory=ModelConfig)


def convert_main(config_path: str, overrides: list[str]) -> int:
    cfg = load_config(ConvertConfig, config_path, overrides)
    problems = []
    if cfg.direction not in DIRECTIONS:
        problems.append(f"direction={cfg.direction!r} is not one of {', '.join(DIRECTIONS)}")
    if cfg.dtype != "auto" and cfg.dtype not in SUPPORTED_DTYPES:
        problems.append(f"dtype={cfg.dtype!r} is not one of auto, {', '.join(SUPPORTED_DTYPES)}")
    for key in ("input", "output"):
        if not getattr(cfg, key):
            problems.append(f"{key} is required")
    if problems:
        raise ConfigError("; ".join(problems))
    try:
        if cfg.direction == "hf_to_megatron":
            hf_to_megatron(cfg.input, cfg.output, cfg.dtype, cfg.tokenizer, cfg.chat_template, cfg.overwrite)
        else:
            megatron_to_hf(
                cfg.input,
                cfg.output,
                cfg.dtype,
                cfg.tokenizer,
                cfg.chat_template,
                cfg.overwrite,
                max_shard_bytes=int(cfg.max_shard_size_gb * 1e9),
                model=cfg.model
                if (cfg.model.preset or cfg.model.hf_config or cfg.model.num_layers)
                else None,
            )
    except (ValueError, KeyError, FileNotFoundError, FileExistsError, NotImplementedError) as exc:
        # Expected failures (bad input, unknown architecture, missing/mismatched tensors): one
        # line naming the culprit instead of a traceback.
        print(f"tower-megatron convert: error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


def _target_dtype(name: str, source: torch.dtype) -> torch.dtype:
    return source if name == "auto" else SUPPORTED_DTYPES[name]


def _check_output(output: Path, overwrite: bool) -> None:
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists (set overwrite=true to replace it)")


# ------------------------------------------------------------------------------ HF → Megatron
def _check_hf_tensors(
    weights: HFWeights, maps: list[TensorMap], model: ModelConfig, family: ModelFamily
) -> None:
    """Every expected tensor present with the expected shape and a float dtype; nothing unknown."""
    used: set[str] = set()
    for tm in maps:
        for layer in range(model.num_layers) if tm.per_layer else [None]:
            for name, shape in zip(tm.hf_names(layer), tm.hf_shapes, strict=True):
                found = weights.shape(name)  # raises, naming the tensor, when it is missing
                if found != shape:
                    raise ConversionError(
                        f"tensor {name!r} has shape {list(found)}, expected {list(shape)} from config.json"
                    )
                weights.dtype(name)  # raises on int/fp8 tensors
                used.add(name)
    leftover = sorted(
        n
        for n in weights.names() - used
        if not n.endswith(IGNORED_HF_SUFFIXES)
        and not (n == "lm_head.weight" and not model.untie_embeddings_and_output_weights)
    )
    if leftover:
        raise ConversionError(
            f"{len(leftover)} tensor(s) have no place in a {family.name} model "
            f"(e.g. {', '.join(leftover[:5])}); is config.json the right one for these weights?"
        )


def hf_chunks(weights: HFWeights, model: ModelConfig, family: ModelFamily, dtype: torch.dtype) -> list[Chunk]:
    """Lazily loaded :class:`Chunk` s: one per layer of each stacked tensor; whole tensors in row
    blocks of at most ``CHUNK_BYTES`` (a 72B model's embedding is 2.5 GB)."""
    ctx = MappingContext(model)
    chunks = []
    for tm in family.tensor_maps(model):
        shape = tm.mcore_shape
        if tm.per_layer:
            for layer in range(model.num_layers):
                names = tm.hf_names(layer)

                def load(tm=tm, names=names) -> torch.Tensor:
                    return ctx.to_mcore(tm, [weights.get(n) for n in names]).unsqueeze(0)

                offset = (layer,) + (0,) * len(shape)
                chunks.append(Chunk(tm.mcore, (model.num_layers, *shape), offset, (1, *shape), dtype, load))
            continue
        if tm.kind != "copy":
            raise NotImplementedError(f"{tm.mcore}: only copied tensors can live outside the layers")
        (name,) = tm.hf_names()
        row_bytes = max(1, torch.Size(shape[1:]).numel() * dtype.itemsize)
        step = max(1, CHUNK_BYTES // row_bytes)
        for start in range(0, shape[0], step):
            stop = min(start + step, shape[0])

            def load(name=name, rows=(start, stop)) -> torch.Tensor:
                return weights.get(name, rows)

            offset = (start,) + (0,) * (len(shape) - 1)
            chunks.append(Chunk(tm.mcore, shape, offset, (stop - start, *shape[1:]), dtype, load))
    return chunks


def extra_state_objects(num_layers: int) -> list[ShardedObject]:
    """Empty ``_extra_state`` entries of the layers' linear modules, as a Megatron save writes
    them, so that a plain ``dist_checkpointing.load`` of the local spec's state dict finds every
    key. (Transformer Engine keeps FP8 metadata there; :func:`load_model_checkpoint` tolerates its
    absence, a plain load does not.)"""
    return [
        ShardedObject(f"decoder.layers.{module}._extra_state", None, (num_layers,), (layer,))
        for module in EXTRA_STATE_MODULES
        for layer in range(num_layers)
    ]


def hf_to_megatron(
    input_dir: str | Path,
    output: str | Path,
    dtype: str = "auto",
    tokenizer: str | Path | None = None,
    chat_template: str | None = None,
    overwrite: bool = False,
    log: Log = print,
) -> ModelConfig:
    """Converts an HF checkpoint directory; returns the resolved model config it was written with."""
    input_dir, output = Path(input_dir), Path(output)
    _check_output(output, overwrite)
    hf = read_hf_config(input_dir)
    family = family_for_hf_config(hf)
    model = family.resolve(ModelConfig(arch=family.name, hf_config=str(input_dir)))
    maps = family.tensor_maps(model)
    with HFWeights(input_dir) as weights:
        _check_hf_tensors(weights, maps, model, family)
        target = _target_dtype(dtype, weights.dtype(maps[0].hf_names()[0]))
        chunks = hf_chunks(weights, model, family, target)
        common = {MODEL_CONFIG_KEY: dataclasses.asdict(model), HF_CONFIG_KEY: hf}
        with atomic_path(output) as tmp:
            save_streaming(tmp, chunks, common, extra_state_objects(model.num_layers))
            side = tmp / HF_SUBDIR
            side.mkdir()
            (side / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
            _carry_tokenizer(
                Path(tokenizer) if tokenizer else input_dir, side, model.arch, chat_template, log
            )
    log(f"converted {family.name} ({model.num_layers} layers, {len(chunks)} chunks, {target}) → {output}")
    return model


def _carry_tokenizer(source: Path, target: Path, arch: str, chat_template: str | None, log: Log) -> None:
    if not has_tokenizer(source):
        log(f"warning: no tokenizer files in {source}; the output has none")
        copy_tokenizer_files(source, target)  # generation_config.json, if any
        return
    copy_tokenizer_files(source, target)
    template = resolve_chat_template(chat_template, arch)
    if ensure_chat_template(target, template, override=chat_template is not None):
        log(f"chat template: {'as requested' if chat_template else f'the {arch} default'}")


# ------------------------------------------------------------------------------ Megatron → HF
def _model_from_dict(values: dict[str, Any]) -> ModelConfig:
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    values = {k: v for k, v in values.items() if k in names}
    if isinstance(values.get("fp8"), dict):
        values["fp8"] = FP8Config(**values["fp8"])
    return ModelConfig(**values)


def checkpoint_model_config(path: Path, fallback: ModelConfig | None) -> ModelConfig:
    stored = stored_model_config(path)
    if stored is not None:
        model = _model_from_dict(stored)
        return MODEL_FAMILIES.get(model.arch).resolve(model)
    if fallback is None:
        raise ConversionError(
            f"{path} does not record its architecture: set model.preset=… or model.hf_config=… in the convert config"
        )
    return MODEL_FAMILIES.get(fallback.arch).resolve(fallback)


def _export_plan(
    reader: CheckpointReader, model: ModelConfig, maps: list[TensorMap]
) -> list[tuple[TensorMap, int | None]]:
    """Checks the checkpoint holds every tensor with the right shape; returns the read order."""
    vocab_keys = ("embedding.word_embeddings.weight", "output_layer.weight")
    plan: list[tuple[TensorMap, int | None]] = []
    for tm in maps:
        if not reader.has(tm.mcore):
            raise ConversionError(f"tensor {tm.mcore!r} is missing from checkpoint {reader.path}")
        found = reader.shape(tm.mcore)
        expected = (model.num_layers, *tm.mcore_shape) if tm.per_layer else tm.mcore_shape
        if tm.mcore in vocab_keys:  # trainer checkpoints hold the padded vocabulary
            ok = found[1:] == expected[1:] and found[0] >= expected[0]
        else:
            ok = found == expected
        if not ok:
            raise ConversionError(
                f"tensor {tm.mcore!r} has shape {list(found)} in the checkpoint, expected {list(expected)}"
            )
        plan += [(tm, layer) for layer in range(model.num_layers)] if tm.per_layer else [(tm, None)]
    return plan


def megatron_to_hf(
    input_dir: str | Path,
    output: str | Path,
    dtype: str = "auto",
    tokenizer: str | Path | None = None,
    chat_template: str | None = None,
    overwrite: bool = False,
    max_shard_bytes: int = 5_000_000_000,
    model: ModelConfig | None = None,
    log: Log = print,
) -> Path:
    """Exports a Megatron checkpoint (saved at any TP/PP) as an HF model directory."""
    input_dir, output = Path(input_dir), Path(output)
    _check_output(output, overwrite)
    reader = CheckpointReader(input_dir)
    model = checkpoint_model_config(input_dir, model)
    family = MODEL_FAMILIES.get(model.arch)
    maps = family.tensor_maps(model)
    plan = _export_plan(reader, model, maps)
    target = _target_dtype(dtype, reader.dtype(maps[0].mcore))
    ctx = MappingContext(model)

    entries = []
    for tm, layer in plan:
        entries += [
            (name, shape, target) for name, shape in zip(tm.hf_names(layer), tm.hf_shapes, strict=True)
        ]
    common = reader.common_state()
    source_hf = common.get(HF_CONFIG_KEY) or _source_hf_config(model)
    with atomic_path(output) as tmp:
        tmp.mkdir()
        writer = ShardedSafetensorsWriter(tmp, max_shard_bytes)
        writer.plan(entries)
        for tm, layer in plan:
            if layer is None:  # the whole tensor (embedding rows past the HF vocab are dropped)
                (tensor,) = reader.read([(tm.mcore, (0,) * len(tm.mcore_shape), tm.mcore_shape)])
            else:
                offset = (layer,) + (0,) * len(tm.mcore_shape)
                (tensor,) = reader.read([(tm.mcore, offset, (1, *tm.mcore_shape))])
                tensor = tensor[0]
            for name, part in zip(tm.hf_names(layer), ctx.to_hf(tm, tensor), strict=True):
                writer.add(name, part.to(target))
        writer.finish()
        hf_config = family.to_hf_config(model, source_hf)
        hf_config["torch_dtype"] = hf_config["dtype"] = str(target).removeprefix("torch.")
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
        source = Path(tokenizer) if tokenizer else input_dir / HF_SUBDIR
        _carry_tokenizer(source, tmp, model.arch, chat_template, log)
    log(f"exported {family.name} ({writer.total_bytes / 1e9:.2f} GB, {target}) → {output}")
    return output


def _source_hf_config(model: ModelConfig) -> dict[str, Any] | None:
    """The original ``config.json`` when the model was defined by one (token ids etc.)."""
    if model.hf_config:
        try:
            return read_hf_config(model.hf_config)
        except (FileNotFoundError, ValueError):
            return None
    return None
