"""Start-up time saved by skipping weight initialisation when the weights come from a checkpoint.

    .venv/bin/python benchmarks/bench_model_init.py [--preset gemma2-2b] [--precision bf16]

Builds the real model of a preset (world of one, CPU runtime, local specs, no DDP so no gradient
buffers) twice in the same run with :func:`tower_megatron.training.builder.build_model`:

* ``initialize=True`` (a fresh run): Megatron draws every weight at full size on CPU
  (``use_cpu_initialization``), then the layout-invariant init redraws each one;
* ``initialize=False`` (loading or resuming): both draws are skipped, parameters are allocated
  only, and the checkpoint load fills them.

Prints both times, the ratio and the seconds saved. At TP×PP = N every rank pays the full-size
draws of its tensors (each weight is drawn whole, then sliced), so the saving per rank does not
shrink with N. It prints; it does not assert.
"""

from __future__ import annotations

import argparse
import gc
import time


def _build_seconds(job, model_cfg, initialize: bool) -> tuple[float, int]:
    from tower_megatron.training.builder import build_model

    gc.collect()
    start = time.perf_counter()
    built = build_model(job, model_cfg, wrap_ddp=False, initialize=initialize, device="cpu")
    seconds = time.perf_counter() - start
    params = sum(p.numel() for c in built.chunks for p in c.parameters())
    del built
    gc.collect()
    return seconds, params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="gemma2-2b")
    parser.add_argument("--precision", default="bf16", choices=("bf16", "fp32"))
    args = parser.parse_args()

    from tower_megatron.config import JobConfig, load_config
    from tower_megatron.models import resolve_model_config
    from tower_megatron.runtime import init_runtime, shutdown_runtime

    job = load_config(
        JobConfig,
        None,
        [f"model.preset={args.preset}", f"train.precision={args.precision}", "run.device=cpu"],
    )
    model_cfg = resolve_model_config(job.model)
    init_runtime(device="cpu", seed=job.run.seed)
    try:
        skipped, params = _build_seconds(job, model_cfg, initialize=False)
        full, _ = _build_seconds(job, model_cfg, initialize=True)
    finally:
        shutdown_runtime()
    print(f"preset {args.preset} ({params / 1e9:.2f}B parameters, {args.precision}, CPU, 1 rank)")
    print(
        f"  build_model(initialize=True):  {full:8.1f} s  (fresh run: Megatron init + layout-invariant redraw)"
    )
    print(f"  build_model(initialize=False): {skipped:8.1f} s  (loading/resuming: allocation only)")
    print(
        f"  saved {full - skipped:.1f} s per rank; initialize=True / initialize=False = {full / skipped:.1f}x"
    )


if __name__ == "__main__":
    main()
