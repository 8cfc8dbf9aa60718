"""Hugging Face safetensors checkpoints, read lazily (memory-mapped, tensor by tensor) and written
in size-bounded shards with the standard ``model.safetensors.index.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
SUPPORTED_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ConversionError(ValueError):
    """A checkpoint that cannot be converted; the message names the file or tensor at fault."""


class HFWeights:
    """The tensors of an HF checkpoint directory (sharded with an index, or a single file).

    Reads safetensors files directly (header JSON, then ``readinto`` one tensor's bytes) rather
    than memory-mapping them: a mapped 72B checkpoint would pin every page it touched in the
    process's resident memory until the end; here memory holds the tensors being converted only.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._entries: dict[str, tuple[str, int, dict[str, Any]]] = {}  # name → (file, data start, header)
        for file in self._files():
            data_start, header = _read_header(self.directory / file)
            for name, entry in header.items():
                if name != "__metadata__":
                    self._entries[name] = (file, data_start, entry)

    def _files(self) -> list[str]:
        index = self.directory / INDEX_FILE
        if index.is_file():
            weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
            files = sorted(set(weight_map.values()))
            missing = [f for f in files if not (self.directory / f).is_file()]
            if missing:
                raise ConversionError(
                    f"{index} lists shard(s) not found in {self.directory}: {', '.join(missing)}"
                )
            return files
        files = sorted(f.name for f in self.directory.glob("*.safetensors"))
        if not files:
            hint = " (PyTorch .bin checkpoints are not supported: save them with safe_serialization)"
            raise ConversionError(f"no safetensors weights in {self.directory}{hint}")
        return files

    def names(self) -> set[str]:
        return set(self._entries)

    def _entry(self, name: str) -> tuple[str, int, dict[str, Any]]:
        if name not in self._entries:
            raise ConversionError(f"tensor {name!r} is missing from the checkpoint in {self.directory}")
        return self._entries[name]

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._entry(name)[2]["shape"])

    def dtype(self, name: str) -> torch.dtype:
        raw = self._entry(name)[2]["dtype"]
        if raw not in _DTYPES:
            raise ConversionError(
                f"tensor {name!r} has dtype {raw}; only float32, bfloat16 and float16 checkpoints convert"
            )
        return _DTYPES[raw]

    def get(self, name: str, rows: tuple[int, int] | None = None) -> Tensor:
        """The tensor, or only its rows ``[start, stop)`` (contiguous bytes in row-major order)."""
        file, data_start, entry = self._entry(name)
        begin, end = entry["data_offsets"]
        shape = list(entry["shape"])
        if rows is not None:
            row_bytes = (end - begin) // shape[0] if shape[0] else 0
            begin, end = begin + rows[0] * row_bytes, begin + rows[1] * row_bytes
            shape[0] = rows[1] - rows[0]
        tensor = torch.empty(shape, dtype=self.dtype(name))
        with open(self.directory / file, "rb") as handle:
            handle.seek(data_start + begin)
            if end > begin and handle.readinto(tensor.view(-1).view(torch.uint8).numpy()) != end - begin:
                raise ConversionError(f"{file} is truncated (tensor {name!r})")
        return tensor

    def close(self) -> None:
        self._entries.clear()

    def __enter__(self) -> HFWeights:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _read_header(path: Path) -> tuple[int, dict[str, Any]]:
    """A safetensors file's JSON header and the offset where tensor data starts."""
    with open(path, "rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        try:
            header = json.loads(handle.read(size))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ConversionError(f"{path} is not a safetensors file") from None
    return 8 + size, header


class ShardedSafetensorsWriter:
    """Writes tensors, in a known order with known sizes, into shards of at most ``max_bytes``.

    The shard count must be known before the first file is named (``model-00001-of-0000N``), so
    the caller declares every tensor up front (:meth:`plan`), then adds them in that order.
    """

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._file_of: dict[str, str] = {}
        self._names_of: dict[str, list[str]] = {}
        self._pending: dict[str, Tensor] = {}
        self._sizes: dict[str, int] = {}
        self._files: list[list[str]] = []
        self.total_bytes = 0

    def plan(self, entries: list[tuple[str, tuple[int, ...], torch.dtype]]) -> None:
        current: list[str] = []
        used = 0
        for name, shape, dtype in entries:
            size = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
            if current and used + size > self.max_bytes:
                self._files.append(current)
                current, used = [], 0
            current.append(name)
            used += size
            self._sizes[name] = size
            self.total_bytes += size
        if current:
            self._files.append(current)
        count = len(self._files)
        for i, names in enumerate(self._files):
            file = SINGLE_FILE if count == 1 else f"model-{i + 1:05d}-of-{count:05d}.safetensors"
            self._names_of[file] = names
            for name in names:
                self._file_of[name] = file

    def add(self, name: str, tensor: Tensor) -> None:
        if name not in self._file_of:
            raise KeyError(f"{name} was not planned")
        self._pending[name] = tensor.contiguous()
        file = self._file_of[name]
        names = self._names_of[file]
        if all(n in self._pending for n in names):
            save_file(
                {n: self._pending.pop(n) for n in names},
                str(self.directory / file),
                metadata={"format": "pt"},
            )

    def finish(self) -> None:
        if self._pending:
            raise RuntimeError(f"tensors never completed a shard: {sorted(self._pending)[:5]}")
        if len(self._files) > 1:
            index = {
                "metadata": {"total_size": self.total_bytes},
                "weight_map": dict(sorted(self._file_of.items())),
            }
            (self.directory / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
