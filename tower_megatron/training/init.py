"""Layout-invariant initialisation: every weight is drawn from a generator keyed by its global
checkpoint name, then sliced to this rank's shard. The same seed therefore gives the same model
at any TP/PP/VPP/DP layout (Megatron's own init draws pipeline stages from one RNG stream, so
PP=2 would start from other weights than PP=1 — docs/cpu_runtime.md, "Traps").

Distributions follow Megatron's defaults: N(0, σ) for matrices, N(0, σ/√(2L)) for the output
projections of attention and MLP (``linear_proj``, ``linear_fc2``); vectors (norm weights,
biases) keep their deterministic constructor values.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator

import torch
from megatron.core.dist_checkpointing.mapping import ShardedTensor, ShardedTensorFactory

_SCALED_SUFFIXES = ("linear_proj.weight", "linear_fc2.weight")


def sharded_tensors(obj) -> Iterator[ShardedTensor]:
    """Every ShardedTensor in a (nested) sharded state dict, factories built."""
    if isinstance(obj, dict):
        for value in obj.values():
            yield from sharded_tensors(value)
    elif isinstance(obj, list | tuple):
        for value in obj:
            yield from sharded_tensors(value)
    elif isinstance(obj, ShardedTensorFactory):
        yield from sharded_tensors(obj.build())
    elif isinstance(obj, ShardedTensor):
        yield obj


def _generator(seed: int, key: str, prefix_offsets: tuple[int, ...]) -> torch.Generator:
    tag = f"{seed}|{key}|{','.join(map(str, prefix_offsets))}".encode()
    return torch.Generator(device="cpu").manual_seed(zlib.crc32(tag) + (seed << 32))


@torch.no_grad()
def layout_invariant_init(chunks: list[torch.nn.Module], seed: int, std: float, num_layers: int) -> None:
    """Re-draws every ≥2-D weight of ``chunks`` from its name-keyed generator (in place)."""
    scaled_std = std / math.sqrt(2.0 * num_layers)
    for chunk in chunks:
        for sh in sharded_tensors(chunk.sharded_state_dict()):
            data = sh.data
            if data is None or data.dim() < 2 or not data.is_floating_point():
                continue
            p = sh.prepend_axis_num
            sigma = scaled_std if sh.key.endswith(_SCALED_SUFFIXES) else std
            full = torch.empty(sh.global_shape[p:], dtype=torch.float32)
            full.normal_(0.0, sigma, generator=_generator(seed, sh.key, sh.global_offset[:p]))
            index = tuple(
                slice(off, off + size) for off, size in zip(sh.global_offset[p:], data.shape, strict=True)
            )
            data.copy_(full[index].to(device=data.device, dtype=data.dtype))
