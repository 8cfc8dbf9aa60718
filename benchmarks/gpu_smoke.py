#!/usr/bin/env python
"""One-GPU smoke test of the GPU paths the CPU suite cannot run; writes one JSON result.

    python benchmarks/gpu_smoke.py [--output gpu_smoke.json] [--wheelhouse DIR] [--cpu]

On a lent H100/H200 (torch preinstalled, no Megatron-Core), in under 10 minutes:

1. ``te_parity``: the Transformer Engine spec's logits against the local spec's, same weights
   (fp32, TF32 off; ≤ 1e-3 like tests/models/test_te_spec_gpu.py);
2. ``bf16_vs_fp8``: 50 steps of a small model in BF16 and in FP8 (hybrid, tensorwise): final
   loss (mean of the last 5 steps) within 1%;
3. ``throughput``: tokens/s and MFU on the Gemma 2 2B shape (seq 4096), BF16 and FP8;
4. ``memory``: the planner's predicted peak (``tower_megatron.planning``) against
   ``torch.cuda.max_memory_allocated`` for the throughput runs.

Setup: if ``megatron.core`` does not import, the script runs ``pip install -e .`` (from
``--wheelhouse DIR`` with ``--no-index`` when the machine has no package index; fill it here
with ``pip download -d DIR megatron-core omegaconf sentencepiece ...``), then tries
``pip install transformer-engine[pytorch]`` (bounded by ``--te-install-timeout``); parts that
need TE are reported as skipped, with the reason, when it is not importable.

``--cpu`` shrinks every shape and runs on the CPU runtime (TE/FP8 parts reported as skipped) so
the script itself is tested in the CPU suite (tests/planning/test_gpu_smoke_cpu.py) before any
GPU time is spent on it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PARITY_TOL = 1e-3
LOSS_RTOL = 0.01


def bootstrap(wheelhouse: str | None, te_timeout: int) -> dict[str, str]:
    """Installs what is missing before anything imports tower_megatron; returns notes."""
    notes: dict[str, str] = {}
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    if wheelhouse:
        pip += ["--no-index", "--find-links", wheelhouse]
    if importlib.util.find_spec("megatron") is None or importlib.util.find_spec("tower_megatron") is None:
        subprocess.run([*pip, "-e", str(REPO)], check=True)
        notes["install"] = "pip install -e ." + (f" from {wheelhouse}" if wheelhouse else "")
    if importlib.util.find_spec("transformer_engine") is None and te_timeout > 0:
        try:
            subprocess.run([*pip, "transformer-engine[pytorch]"], check=True, timeout=te_timeout)
            notes["transformer_engine"] = "installed"
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            notes["transformer_engine"] = f"not installable here: {exc}"
    sys.path.insert(0, str(REPO))
    return notes


# ----------------------------------------------------------------------------- shapes
def shapes(cpu: bool) -> dict[str, list[str]]:
    """Overrides (on top of testing.tiny.tiny_job) of each run."""
    if cpu:
        small = ["model.num_layers=2", "model.hidden_size=64", "model.num_attention_heads=4"]
        return {
            "parity": [*small, "model.num_query_groups=2"],
            "small": [*small, "train.train_steps=4", "train.seq_length=64"],
            "gemma": [
                "model.arch=gemma2",
                *small,
                "model.num_query_groups=2",
                "model.kv_channels=16",
                "train.train_steps=3",
                "train.seq_length=64",
                "train.micro_batch_size=1",
                "train.global_batch_size=2",
                "model.recompute_granularity=selective",
            ],
        }
    return {
        "parity": [
            "model.num_layers=4",
            "model.hidden_size=512",
            "model.num_attention_heads=8",
            "model.num_query_groups=4",
        ],
        "small": [
            "model.num_layers=8",
            "model.hidden_size=1024",
            "model.num_attention_heads=16",
            "model.num_query_groups=4",
            "model.max_position_embeddings=1024",
            "train.seq_length=1024",
            "train.micro_batch_size=4",
            "train.global_batch_size=16",
            "train.train_steps=50",
        ],
        "gemma": [
            # The Gemma 2 2B preset; tiny_job's explicit model sizes are set back to its values.
            "model.preset=gemma2-2b",
            "model.num_layers=26",
            "model.hidden_size=2304",
            "model.num_attention_heads=8",
            "model.max_position_embeddings=8192",
            "model.recompute_granularity=selective",
            "train.seq_length=4096",
            "train.micro_batch_size=1",
            "train.global_batch_size=8",
            "train.train_steps=8",
            "optimizer.lr=1e-5",
            "optimizer.min_lr=1e-6",
        ],
    }


FP8 = ["model.fp8.format=hybrid", "model.fp8.recipe=tensorwise", "model.transformer_impl=transformer_engine"]


# ----------------------------------------------------------------------------- workers
def _job(work_dir: str, name: str, overrides: list[str], cpu: bool):
    from tower_megatron.testing.tiny import build_tiny_assets, tiny_job

    assets = build_tiny_assets(Path(work_dir) / "assets")
    device = "run.device=cpu" if cpu else "run.device=cuda"
    return tiny_job(assets, Path(work_dir) / name, device, "logging.jsonl=false", *overrides)


def te_parity_worker(work_dir: str, overrides: list[str]) -> dict:
    import torch

    from tower_megatron.models import resolve_model_config
    from tower_megatron.runtime import init_runtime
    from tower_megatron.training.builder import build_model

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    runtime = init_runtime(device="cuda")
    logits = {}
    for impl in ("local", "transformer_engine"):
        job = _job(work_dir, f"parity-{impl}", [*overrides, f"model.transformer_impl={impl}"], cpu=False)
        model_cfg = resolve_model_config(job.model, 320)
        model = build_model(job, model_cfg, wrap_ddp=False, device=runtime.device).chunks[0].eval()
        ids = torch.randint(0, 320, (2, 128), generator=torch.Generator().manual_seed(0)).cuda()
        pos = torch.arange(128, device="cuda").unsqueeze(0).expand_as(ids)
        with torch.no_grad():
            logits[impl] = model(ids, pos, None, runtime_gather_output=True).float()
    diff = (logits["local"] - logits["transformer_engine"]).abs().max().item()
    return {
        "status": "ok" if diff <= PARITY_TOL else "failed",
        "max_abs_logit_diff": diff,
        "tolerance": PARITY_TOL,
    }


def train_worker(work_dir: str, name: str, overrides: list[str], cpu: bool) -> dict:
    """One training run with the memory probe; the planner's prediction of the same rank."""
    import torch

    from tower_megatron.models.family import use_transformer_engine
    from tower_megatron.planning.estimate import rank_memory
    from tower_megatron.planning.measure import MemoryProbe
    from tower_megatron.planning.planner import job_layout, resolved_model, workload
    from tower_megatron.training.entry import run_training

    job = _job(work_dir, name, overrides, cpu)
    probe = MemoryProbe()
    history = run_training(job, extra_callbacks=[probe])["history"]
    steps = [r for r in history if "train/loss" in r]
    timed = steps[2:] or steps  # the first steps include warm-up (allocator, kernels, autotune)
    impl = "te" if use_transformer_engine(job.model) else "local"  # what the run just built
    planned = rank_memory(resolved_model(job), job_layout(job, 1), workload(job, impl), 0, 0)
    out = {
        "losses": [r["train/loss"] for r in steps],
        "tokens_per_s": sum(r["train/tokens_per_s"] for r in timed) / len(timed),
        "mfu": (sum(r["train/mfu"] for r in timed) / len(timed)) if "train/mfu" in timed[0] else None,
        "measured": probe.records[-1],
        "planned": {
            "params": planned.params,
            "grads": planned.grads,
            "optimizer": planned.optimizer,
            "activations": planned.activations,
            "temporary": planned.temporary,
            "total": planned.total,
        },
    }
    if torch.cuda.is_available() and not cpu:
        out["device"] = torch.cuda.get_device_name()
    return out


def train_many_worker(work_dir: str, plan: dict[str, list[str]], cpu: bool) -> dict:
    out = {}
    for name, overrides in plan.items():
        try:
            out[name] = train_worker(work_dir, name, overrides, cpu)
        except Exception:
            out[name] = {"status": "failed", "error": traceback.format_exc()[-2000:]}
    return out


# ----------------------------------------------------------------------------- parts
def _run(func, **kwargs) -> dict:
    from tower_megatron.testing import run_distributed

    start = time.perf_counter()
    try:
        [result] = run_distributed(func, world_size=1, timeout=540, **kwargs)
    except Exception as exc:  # one part failing must not hide the others
        result = {"status": "failed", "error": str(exc)[-2000:]}
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def _skip(reason: str) -> dict:
    return {"status": "skipped", "reason": reason}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--output", default="gpu_smoke.json")
    parser.add_argument(
        "--cpu", action="store_true", help="shrunk shapes on the CPU runtime (for the test suite)"
    )
    parser.add_argument("--wheelhouse", help="install missing packages from this directory (no index)")
    parser.add_argument("--te-install-timeout", type=int, default=240, help="seconds; 0: do not try")
    parser.add_argument("--work-dir", default=None, help="scratch directory (default: next to --output)")
    args = parser.parse_args(argv)

    notes = bootstrap(args.wheelhouse, 0 if args.cpu else args.te_install_timeout)
    import torch

    os.environ.setdefault("WANDB_MODE", "disabled")
    work = Path(args.work_dir or Path(args.output).resolve().parent / "gpu_smoke_work")
    work.mkdir(parents=True, exist_ok=True)
    cpu = args.cpu or not torch.cuda.is_available()
    has_te = importlib.util.find_spec("transformer_engine") is not None
    capability = torch.cuda.get_device_capability() if not cpu else None
    fp8_ok = has_te and capability is not None and capability >= (8, 9)
    why_no_te = (
        "--cpu: no GPU" if cpu else (notes.get("transformer_engine") or "transformer_engine does not import")
    )
    why_no_fp8 = why_no_te if not has_te or cpu else f"compute capability {capability} < (8, 9)"
    shp = shapes(cpu)
    result: dict = {
        "mode": "cpu" if cpu else "gpu",
        "device": "cpu" if cpu else torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "setup": notes,
        "parts": {},
    }
    parts = result["parts"]
    parts["te_parity"] = (
        _run(te_parity_worker, work_dir=str(work), overrides=shp["parity"])
        if has_te and not cpu
        else _skip(why_no_te)
    )

    # The CPU runtime has no fast bf16 matmuls: the baseline there is fp32.
    base, base_override = ("fp32", "train.precision=fp32") if cpu else ("bf16", "train.precision=bf16")
    plan = {f"small-{base}": [*shp["small"], base_override], f"gemma-{base}": [*shp["gemma"], base_override]}
    if fp8_ok:
        plan.update({k.replace(base, "fp8"): [*v, *FP8] for k, v in list(plan.items())})
    # One process runs every training run (one start-up instead of four); each run's failure is
    # its own entry.
    done = _run(train_many_worker, work_dir=str(work), plan=plan, cpu=cpu)
    results = {name: done.get(name, done) for name in plan}
    runs = {k.split("-", 1)[1]: v for k, v in results.items() if k.startswith("small-")}
    gemma = {k.split("-", 1)[1]: v for k, v in results.items() if k.startswith("gemma-")}
    part: dict = {"runs": runs}
    if "losses" in runs.get("fp8", {}) and "losses" in runs[base]:
        a, b = (sum(runs[k]["losses"][-5:]) / len(runs[k]["losses"][-5:]) for k in (base, "fp8"))
        part.update(final_loss_bf16=a, final_loss_fp8=b, relative_diff=abs(b - a) / a)
        part["status"] = "ok" if abs(b - a) / a <= LOSS_RTOL else "failed"
    else:
        part["status"] = "failed" if "losses" not in runs[base] else "partial"
        part["runs"]["fp8"] = runs.get("fp8") or _skip(why_no_fp8)
    parts["bf16_vs_fp8"] = part

    parts["throughput"] = {
        k: {"tokens_per_s": v.get("tokens_per_s"), "mfu": v.get("mfu"), "status": v.get("status", "ok")}
        for k, v in gemma.items()
    }
    if not fp8_ok:
        parts["throughput"]["fp8"] = _skip(why_no_fp8)

    memory = {}
    for name, run in results.items():
        if "measured" not in run:
            continue
        measured, planned = run["measured"], run["planned"]
        entry = {"planned": planned, "measured": measured}
        if "max_memory_allocated" in measured:
            entry["planned_over_measured_peak"] = planned["total"] / measured["max_memory_allocated"]
        else:  # CPU: no allocator peak; compare what the probe sees
            entry["state_equal"] = all(planned[k] == measured[k] for k in ("params", "grads", "optimizer"))
            entry["activations_ratio"] = planned["activations"] / measured["activations"]
        memory[name] = entry
    parts["memory"] = memory
    for key, value in list(parts.items()):
        if isinstance(value, dict) and "error" in value:
            print(f"{key} failed:\n{value['error']}", file=sys.stderr)

    from tower_megatron.utils.atomic import write_json

    write_json(args.output, result)
    print(json.dumps(result, indent=2))
    failed = [k for k, v in parts.items() if isinstance(v, dict) and v.get("status") == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:
        traceback.print_exc()
        sys.exit(2)
