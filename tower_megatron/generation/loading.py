"""``load_generator``: any checkpoint → a ready :class:`GenerationBackend`, at any TP/PP layout.

Accepted paths (the caller never supplies a model config, vocabulary padding or parallel state):

* a Megatron ``torch_dist`` checkpoint written by the trainer (``<run>/checkpoints/iter_N``), the
  ``checkpoints`` directory or the run directory (both meaning its newest complete checkpoint) —
  the architecture comes from ``tower_meta.json``, the tokenizer from the run's ``config.yaml``;
* a checkpoint from ``tower-megatron convert`` (architecture in its common state, tokenizer and
  ``generation_config.json`` in its ``hf/`` side directory);
* a Hugging Face directory (``config.json`` + safetensors): converted on the fly into a temporary
  ``torch_dist`` checkpoint (the tested converter, streamed tensor by tensor), loaded, removed.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from tower_megatron.config.data import TokenizerConfig
from tower_megatron.config.loader import ConfigError
from tower_megatron.config.model import FP8Config, ModelConfig
from tower_megatron.generation.base import GenerationBackend
from tower_megatron.registry import Registry

GENERATION_BACKENDS: Registry[Any] = Registry("generation backend")


class CheckpointSource:
    """What a path points at: ``kind`` is ``hf`` or ``megatron``; ``path`` the resolved directory."""

    def __init__(self, path: str | Path) -> None:
        from tower_megatron.training.checkpointing import resolve_load_path

        path = Path(path)
        if (path / "config.json").is_file() and not (path / "metadata.json").is_file():
            self.kind, self.path = "hf", path
            return
        if (path / "checkpoints").is_dir() and not (path / "metadata.json").is_file():
            path = path / "checkpoints"  # a run directory
        self.kind, self.path = "megatron", resolve_load_path(path)

    @property
    def hf_side(self) -> Path | None:
        """The directory holding tokenizer / generation config files, if any."""
        side = self.path if self.kind == "hf" else self.path / "hf"
        return side if side.is_dir() else None

    def model_config(self, fallback: ModelConfig | None = None) -> ModelConfig:
        from tower_megatron.models import MODEL_FAMILIES, resolve_model_config
        from tower_megatron.models.checkpoint import stored_model_config

        if self.kind == "hf":
            return resolve_model_config(ModelConfig(hf_config=str(self.path)))
        stored = stored_model_config(self.path)
        if stored is None:
            if fallback is None:
                raise ConfigError(
                    f"{self.path} does not record its architecture: pass model=ModelConfig(preset=...) "
                    "or model.preset=... in the generate config"
                )
            return resolve_model_config(fallback)
        names = {f.name for f in dataclasses.fields(ModelConfig)}
        # Stored configs are already resolved; their preset / hf_config source may be gone.
        values = {k: v for k, v in stored.items() if k in names and k not in ("preset", "hf_config")}
        if isinstance(values.get("fp8"), dict):
            values["fp8"] = FP8Config(**values["fp8"])
        model = ModelConfig(**values)
        return MODEL_FAMILIES.get(model.arch).resolve(model)

    def tokenizer_config(self) -> TokenizerConfig | None:
        """sentencepiece ``tokenizer.model`` first (its ids are the model's), else HF files; for
        trainer checkpoints the run's ``data.tokenizer``."""
        side = self.hf_side
        if side is not None:
            if (side / "tokenizer.model").is_file():
                return TokenizerConfig(type="sentencepiece", path=str(side / "tokenizer.model"))
            if (side / "tokenizer.json").is_file():
                return TokenizerConfig(type="huggingface", path=str(side))
        run_config = self.path.parent.parent / "config.yaml"  # <run>/checkpoints/iter_N
        if self.kind == "megatron" and run_config.is_file():
            import yaml

            tok = (yaml.safe_load(run_config.read_text()) or {}).get("data", {}).get("tokenizer") or {}
            if tok.get("path"):
                return TokenizerConfig(type=tok.get("type", "sentencepiece"), path=tok["path"])
        return None

    def generation_eos_ids(self) -> list[int]:
        """``eos_token_id`` of ``generation_config.json`` (Gemma IT: ``[1, 107]``), if present."""
        side = self.hf_side
        if side is None or not (side / "generation_config.json").is_file():
            return []
        eos = json.loads((side / "generation_config.json").read_text()).get("eos_token_id")
        if eos is None:
            return []
        return [int(e) for e in (eos if isinstance(eos, list) else [eos])]


def build_generation_tokenizer(tokenizer: Any, source: CheckpointSource) -> Any:
    """``tokenizer``: a tokenizer object, a path (file or directory), a ``TokenizerConfig`` or None
    (found beside the checkpoint)."""
    from tower_megatron.data.tokenizer import build_tokenizer

    if tokenizer is None:
        cfg = source.tokenizer_config()
        if cfg is None:
            raise ConfigError(
                f"no tokenizer found for {source.path} (no tokenizer files, no run config.yaml): pass tokenizer=PATH"
            )
        return build_tokenizer(cfg)
    if isinstance(tokenizer, TokenizerConfig):
        return build_tokenizer(tokenizer)
    if isinstance(tokenizer, str | Path):
        path = Path(tokenizer)
        is_sp = path.suffix == ".model" or (path.is_dir() and (path / "tokenizer.model").is_file())
        if is_sp and path.is_dir():
            path = path / "tokenizer.model"
        return build_tokenizer(
            TokenizerConfig(type="sentencepiece" if is_sp else "huggingface", path=str(path))
        )
    return tokenizer


def ensure_runtime(tp: int, pp: int, device: str) -> torch.device:
    """Initialises torch.distributed and Megatron's parallel state unless this layout is up."""
    import torch.distributed as dist
    from megatron.core import parallel_state as ps

    from tower_megatron.runtime import init_runtime
    from tower_megatron.runtime.distributed import resolve_device

    kind = resolve_device(device)
    if (
        dist.is_initialized()
        and ps.model_parallel_is_initialized()
        and ps.get_tensor_model_parallel_world_size() == tp
        and ps.get_pipeline_model_parallel_world_size() == pp
    ):
        if kind == "cpu":
            from tower_megatron.runtime import cpu_shim

            cpu_shim.install()
        return torch.device("cuda", torch.cuda.current_device()) if kind == "cuda" else torch.device("cpu")
    return init_runtime(tp=tp, pp=pp, device=device).device


def _load_hf_weights(model: torch.nn.Module, hf_dir: Path) -> None:
    """Converts into a temporary checkpoint on rank 0 (beside the system temp dir), loads it on
    every rank, removes it. Multi-node runs need a temp dir all nodes see (``TMPDIR``)."""
    import torch.distributed as dist

    from tower_megatron.models import load_model_checkpoint
    from tower_megatron.models.convert import hf_to_megatron

    holder = [None]
    if dist.get_rank() == 0:
        holder[0] = tempfile.mkdtemp(prefix="tower_generate_")
        hf_to_megatron(hf_dir, Path(holder[0]) / "ckpt", log=lambda _: None)
    dist.broadcast_object_list(holder, src=0)
    try:
        load_model_checkpoint([model], Path(holder[0]) / "ckpt")
        dist.barrier()
    finally:
        if dist.get_rank() == 0:
            shutil.rmtree(holder[0], ignore_errors=True)


@GENERATION_BACKENDS.register("megatron")
def load_megatron_generator(
    path: str | Path,
    *,
    tp: int = 1,
    pp: int = 1,
    device: str = "auto",
    tokenizer: Any = None,
    precision: str | None = None,
    model: ModelConfig | None = None,
    eos_ids: list[int] | None = None,
    max_batch_size: int = 64,
) -> GenerationBackend:
    """The Megatron-Core backend on this rank's share of the model (every rank calls it)."""
    from megatron.core import parallel_state as ps

    from tower_megatron.config.schema import ParallelConfig, TrainConfig
    from tower_megatron.generation.megatron_backend import MegatronGenerator
    from tower_megatron.models import MODEL_FAMILIES, load_model_checkpoint, pad_vocab

    source = CheckpointSource(path)
    model_cfg = source.model_config(model)
    tok = build_generation_tokenizer(tokenizer, source)
    dev = ensure_runtime(tp, pp, device)
    precision = precision or ("bf16" if dev.type == "cuda" else "fp32")
    family = MODEL_FAMILIES.get(model_cfg.arch)
    parallel = ParallelConfig(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp)
    config = family.transformer_config(model_cfg, parallel, TrainConfig(precision=precision))
    padded = pad_vocab(model_cfg.vocab_size, model_cfg.make_vocab_size_divisible_by, tp)
    module = family.build(
        model_cfg, config, ps.is_pipeline_first_stage(), ps.is_pipeline_last_stage(), None, padded
    )
    if dev.type == "cuda":
        module = module.cuda(dev)
    if source.kind == "hf":
        _load_hf_weights(module, source.path)
    else:
        load_model_checkpoint([module], source.path)
    if eos_ids is None:
        eos_ids = sorted({int(tok.eod), *source.generation_eos_ids()})
    return MegatronGenerator([module.eval()], tok, model_cfg, eos_ids=eos_ids, max_batch_size=max_batch_size)


def load_generator(
    path: str | Path,
    *,
    tp: int = 1,
    pp: int = 1,
    device: str = "auto",
    tokenizer: Any = None,
    backend: str = "megatron",
    **kwargs: Any,
) -> GenerationBackend:
    """A generation backend for any checkpoint (see the module docstring for accepted paths).

    ``tp``/``pp``: the layout to generate at (the runtime is initialised if needed; every rank of
    the world calls this). ``tokenizer``: an object, a path or None (found beside the checkpoint).
    ``backend``: ``megatron`` or ``vllm``; further keywords go to the backend (Megatron:
    ``precision``, ``model`` for checkpoints that do not record their architecture, ``eos_ids``,
    ``max_batch_size``).
    """
    from tower_megatron.generation import vllm_backend  # noqa: F401  (registers itself; imports vLLM lazily)

    loader = GENERATION_BACKENDS.get(backend)
    return loader(path, tp=tp, pp=pp, device=device, tokenizer=tokenizer, **kwargs)
