"""GPUs the planner knows: dense peak throughput, memory and interconnect, from vendor data sheets
(SXM parts, no sparsity). Bandwidths are per GPU and per direction."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tower_megatron.registry import Registry

GiB = 1024**3


@dataclass(frozen=True)
class GPU:
    name: str
    bf16_tflops: float
    fp8_tflops: float | None  # None: no FP8 tensor cores
    memory_bytes: int
    nvlink_gbps: float  # GB/s per GPU per direction inside a node
    ib_gbps: float  # GB/s per GPU per direction between nodes (one NIC per GPU)
    sm: tuple[int, int]  # compute capability

    def peak_tflops(self, fp8: bool) -> float:
        return self.fp8_tflops if fp8 and self.fp8_tflops else self.bf16_tflops


GPUS: Registry[GPU] = Registry("GPU")
for _gpu in (
    # A100 SXM 80 GB: 312 TFLOP/s BF16, NVLink 3 600 GB/s bidirectional, HDR 200 Gb/s NICs.
    GPU("a100", 312.0, None, 80 * GiB, 300.0, 25.0, (8, 0)),
    # H100 SXM: 989 BF16 / 1979 FP8, 80 GB HBM3, NVLink 4 900 GB/s bidirectional, NDR 400 Gb/s.
    GPU("h100", 989.0, 1979.0, 80 * GiB, 450.0, 50.0, (9, 0)),
    # H200 SXM: H100 compute with 141 GB HBM3e.
    GPU("h200", 989.0, 1979.0, 141 * 10**9, 450.0, 50.0, (9, 0)),
    # B200 (DGX B200): 2250 BF16 / 4500 FP8, 180 GB, NVLink 5 1.8 TB/s bidirectional, 400 Gb/s.
    GPU("b200", 2250.0, 4500.0, 180 * 10**9, 900.0, 50.0, (10, 0)),
):
    GPUS.register(_gpu.name)(_gpu)

_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]i?b?)?\s*$", re.IGNORECASE)
_UNITS = {
    "": GiB,
    "k": 10**3,
    "m": 10**6,
    "g": 10**9,
    "t": 10**12,
    "ki": 2**10,
    "mi": 2**20,
    "gi": 2**30,
    "ti": 2**40,
}


def parse_bytes(text: str | int | float) -> int:
    """``80GiB``, ``141GB``, ``80`` (GiB) → bytes."""
    if isinstance(text, (int, float)):
        return int(text * GiB)
    match = _SIZE.match(str(text))
    if not match:
        raise ValueError(f"cannot read {text!r} as a memory size (e.g. 80GiB, 141GB)")
    unit = (match.group(2) or "").lower().rstrip("b")
    return int(float(match.group(1)) * _UNITS[unit])


def gpu_for_device_name(name: str) -> GPU | None:
    """The table entry for a ``torch.cuda.get_device_name()`` string (``NVIDIA H100 80GB HBM3``)."""
    lowered = name.lower()
    for key in GPUS.names():
        if key in lowered:
            return GPUS.get(key)
    return None
