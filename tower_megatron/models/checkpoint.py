"""Model checkpoints in Megatron-Core's ``torch_dist`` format: streamed writing, chunked reading,
and the loader the trainer calls for ``checkpoint.load``.

A ``torch_dist`` checkpoint is a PyTorch Distributed Checkpoint (``.metadata`` + ``*.distcp``)
plus Megatron's ``metadata.json``; every tensor is stored whole under its ``ShardedTensor`` key
(per-layer tensors stacked on a leading layer axis), so any TP/PP layout can load it.

Streaming: :func:`save_streaming` plans the checkpoint from shapes alone and produces each tensor
chunk only when the DCP writer asks for it (``SavePlanner.resolve_data``, called one item at a
time), writes it and drops it. Peak memory is one chunk (for Qwen 2.5 72B, one layer's
``linear_fc1``: ~1 GB in bf16) plus the source tensors it is made of — never the model.
:class:`CheckpointReader` reads arbitrary chunks the same way (DCP's resharding reads), without a
process group.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from megatron.core import dist_checkpointing
from megatron.core.dist_checkpointing.core import CheckpointingConfig, save_config
from megatron.core.dist_checkpointing.mapping import ShardedObject
from megatron.core.dist_checkpointing.serialization import load_common_state_dict
from megatron.core.dist_checkpointing.validation import StrictHandling
from torch import Tensor
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner, DefaultSavePlanner
from torch.distributed.checkpoint.metadata import (
    ChunkStorageMetadata,
    MetadataIndex,
    TensorProperties,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.planner import (
    LoadPlan,
    SavePlan,
    TensorWriteData,
    WriteItem,
    WriteItemType,
)
from torch.distributed.checkpoint.planner_helpers import create_read_items_for_chunk_list

# Keys of the checkpoint's common (non-tensor) state written by the converter.
MODEL_CONFIG_KEY = "tower_model_config"  # dataclasses.asdict(resolved ModelConfig)
HF_CONFIG_KEY = "hf_config"  # the source config.json, so an export round-trips it
_COMMON_STATE = ShardedObject("common_state", None, (1,), (0,)).unique_key
TRAINER_META = "tower_meta.json"  # written by the trainer's checkpoints (its "model" entry)


@dataclasses.dataclass(frozen=True)
class Chunk:
    """One piece of a global tensor, produced on demand by ``load``."""

    key: str
    global_shape: tuple[int, ...]
    offset: tuple[int, ...]
    shape: tuple[int, ...]
    dtype: torch.dtype
    load: Callable[[], Tensor]


class _StreamingSavePlanner(DefaultSavePlanner):
    """Plans from :class:`Chunk` shapes; materialises each chunk when the writer reaches it."""

    def __init__(self, chunks: list[Chunk], objects: dict[str, Any]) -> None:
        super().__init__(flatten_state_dict=False, flatten_sharded_tensors=False)
        self._chunks = {(c.key, c.offset): c for c in chunks}
        if len(self._chunks) != len(chunks):
            raise ValueError("two chunks share a key and offset")
        self._objects = {}
        for unique_key, data in objects.items():
            buffer = io.BytesIO()
            torch.save([data], buffer)  # Megatron stores ShardedObject data as a one-item list
            self._objects[unique_key] = buffer.getvalue()

    def create_local_plan(self) -> SavePlan:
        items = [WriteItem(index=MetadataIndex(key), type=WriteItemType.BYTE_IO) for key in self._objects]
        for c in self._chunks.values():
            items.append(
                WriteItem(
                    index=MetadataIndex(c.key, torch.Size(c.offset)),
                    type=WriteItemType.SHARD,
                    tensor_data=TensorWriteData(
                        chunk=ChunkStorageMetadata(offsets=torch.Size(c.offset), sizes=torch.Size(c.shape)),
                        properties=TensorProperties(dtype=c.dtype),
                        size=torch.Size(c.global_shape),
                    ),
                )
            )
        self.plan = SavePlan(items)
        return self.plan

    def resolve_data(self, write_item: WriteItem) -> Tensor | io.BytesIO:
        if write_item.type == WriteItemType.BYTE_IO:
            return io.BytesIO(self._objects[write_item.index.fqn])
        chunk = self._chunks[(write_item.index.fqn, tuple(write_item.index.offset))]
        tensor = chunk.load()
        if tuple(tensor.shape) != chunk.shape:
            raise ValueError(f"{chunk.key}: produced shape {tuple(tensor.shape)}, planned {chunk.shape}")
        return tensor.to(chunk.dtype).contiguous()


def save_streaming(
    path: str | Path,
    chunks: Iterable[Chunk],
    common: dict[str, Any],
    objects: Iterable[ShardedObject] = (),
) -> None:
    """Writes a ``torch_dist`` checkpoint into the (new or empty) directory ``path``.

    ``common`` is Megatron's common state (what ``dist_checkpointing.load`` returns besides the
    tensors); ``objects`` are further ``ShardedObject`` s. Keep both to plain Python values (they are
    read back with ``weights_only=True``).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    stored = {_COMMON_STATE: common, **{obj.unique_key: obj.data for obj in objects}}
    writer = dcp.FileSystemWriter(str(path), single_file_per_rank=True, sync_files=True, thread_count=1)
    dcp.save({}, storage_writer=writer, planner=_StreamingSavePlanner(list(chunks), stored), no_dist=True)
    save_config(CheckpointingConfig("torch_dist", 1), str(path))


class _ChunkLoadPlanner(DefaultLoadPlanner):
    """Reads requested chunks of global tensors into preallocated destinations."""

    def __init__(self, destinations: dict[tuple[str, tuple[int, ...]], Tensor]) -> None:
        super().__init__(flatten_state_dict=False, flatten_sharded_tensors=False)
        self._destinations = destinations

    def create_local_plan(self) -> LoadPlan:
        items = []
        for (key, offset), dest in self._destinations.items():
            stored = self.metadata.state_dict_metadata[key]
            chunk = ChunkStorageMetadata(offsets=torch.Size(offset), sizes=dest.shape)
            items += create_read_items_for_chunk_list(key, stored, [chunk])
        self.plan = LoadPlan(items)
        return self.plan

    def lookup_tensor(self, index: MetadataIndex) -> Tensor:
        return self._destinations[(index.fqn, tuple(index.offset))]


class CheckpointReader:
    """Random access to the tensors of a ``torch_dist`` checkpoint, chunk by chunk."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not (self.path / "metadata.json").is_file() or not (self.path / ".metadata").is_file():
            raise FileNotFoundError(
                f"{self.path} is not a Megatron torch_dist checkpoint (no metadata.json/.metadata)"
            )
        self._reader = dcp.FileSystemReader(str(self.path))
        self.metadata = self._reader.read_metadata()

    def tensor_keys(self) -> list[str]:
        md = self.metadata.state_dict_metadata
        return sorted(k for k, v in md.items() if isinstance(v, TensorStorageMetadata))

    def has(self, key: str) -> bool:
        return isinstance(self.metadata.state_dict_metadata.get(key), TensorStorageMetadata)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._tensor_md(key).size)

    def dtype(self, key: str) -> torch.dtype:
        return self._tensor_md(key).properties.dtype

    def _tensor_md(self, key: str) -> TensorStorageMetadata:
        md = self.metadata.state_dict_metadata.get(key)
        if not isinstance(md, TensorStorageMetadata):
            raise KeyError(f"tensor {key!r} is not in checkpoint {self.path}")
        return md

    def read(self, requests: list[tuple[str, tuple[int, ...], tuple[int, ...]]]) -> list[Tensor]:
        """``[(key, offset, shape)]`` → the tensors, in the checkpoint's dtype."""
        destinations = {}
        for key, offset, shape in requests:
            destinations[(key, tuple(offset))] = torch.empty(shape, dtype=self.dtype(key))
        dcp.load({}, storage_reader=self._reader, planner=_ChunkLoadPlanner(destinations), no_dist=True)
        return [destinations[(key, tuple(offset))] for key, offset, _ in requests]

    def common_state(self) -> dict[str, Any]:
        return load_common_state_dict(str(self.path))


def stored_model_config(path: str | Path) -> dict[str, Any] | None:
    """The resolved ``ModelConfig`` (as a dict) a checkpoint was written with, if it says.

    Converted checkpoints keep it in the common state, trainer checkpoints in ``tower_meta.json``.
    """
    path = Path(path)
    meta = path / TRAINER_META
    if meta.is_file():
        model = json.loads(meta.read_text()).get("model")
        if model:
            return model
    try:
        return CheckpointReader(path).common_state().get(MODEL_CONFIG_KEY)
    except (KeyError, RuntimeError, FileNotFoundError):
        return None


# ---------------------------------------------------------------------------- the trainer's loader
def load_model_checkpoint(model_chunks: list[torch.nn.Module], path: str | Path) -> dict[str, Any]:
    """Loads model weights (only) from a ``torch_dist`` checkpoint into this rank's chunks.

    Works at any TP/PP/VPP (one chunk per virtual stage, DDP-wrapped or not) for checkpoints from
    ``tower-megatron convert`` or from the trainer. Every weight of the model must be in the
    checkpoint (a missing one raises, naming it); ``_extra_state`` entries the checkpoint lacks
    (converted checkpoints have none; TE's FP8 metadata) are left at their initial values. Extra
    checkpoint entries (optimizer state…) are ignored. Collective: every rank calls it.
    Returns the checkpoint's common state.
    """
    modules = [getattr(chunk, "module", chunk) for chunk in model_chunks]
    keys = ["model"] if len(modules) == 1 else [f"model{i}" for i in range(len(modules))]
    stored = set(CheckpointReader(path).metadata.state_dict_metadata)
    sharded: dict[str, dict[str, Any]] = {}
    skipped: dict[str, list[str]] = {}
    for key, module in zip(keys, modules, strict=True):
        sharded[key], skipped[key] = {}, []
        for name, value in module.sharded_state_dict().items():
            if isinstance(value, ShardedObject) and value.unique_key not in stored:
                skipped[key].append(name)
            else:
                sharded[key][name] = value
    loaded = dist_checkpointing.load(sharded, str(path), strict=StrictHandling.RAISE_UNEXPECTED)
    for key, module in zip(keys, modules, strict=True):
        state = dict(loaded[key])
        state.update({name: None for name in skipped[key]})  # set_extra_state(None) keeps the current
        module.load_state_dict(state, strict=True)
    return {k: v for k, v in loaded.items() if k not in keys}
