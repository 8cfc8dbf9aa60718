"""Logging callbacks on a real CPU run: console, ``metrics.jsonl``, TensorBoard, W&B (offline) and
the profiler, read back with each tool's own reader.

One spawned process trains 4 steps with every logger on (plus per-language validation every 2
steps and a profiler window), then resumes the same run directory to step 6; the tests below
check what those two runs left behind.
"""

from __future__ import annotations

import contextlib
import io
import json
import struct
from pathlib import Path

import pytest

from tower_megatron.testing import run_distributed
from tower_megatron.testing.tiny import build_tiny_assets, tiny_job

FIRST, TOTAL = 4, 6  # steps of the first run; the resumed run continues to TOTAL
TRAIN_KEYS = ("train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s", "train/tflops_per_s")


def _train_twice(assets_dir: str, run_dir: str) -> dict[str, str]:
    """Runs in a fresh process (the CPU shim and process group stay out of pytest's)."""
    import torch

    from tower_megatron.training.entry import run_training

    # One intra-op thread: with torch's default (one per core) steps took 2-7 s instead of
    # ~0.05 s while other test processes loaded the 2 cores (OpenMP threads spin and preempt).
    torch.set_num_threads(1)
    assets = build_tiny_assets(assets_dir)
    common = [
        "logging.console=true",
        "logging.progress_bar=true",
        "logging.tensorboard=true",
        "logging.wandb.project=tower-tests",
        "logging.wandb.mode=offline",
        f"data.valid_paths.en={assets.prefixes['en']}",
        f"data.valid_paths.pt={assets.prefixes['pt']}",
        "train.eval_interval=2",
        "train.eval_steps=1",
        "checkpoint.save_at_end=true",
    ]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        first = tiny_job(
            assets,
            run_dir,
            *common,
            f"train.train_steps={FIRST}",
            "profiling.enabled=true",
            "profiling.start_step=2",
            "profiling.end_step=3",
        )
        run_training(first)
        run_training(tiny_job(assets, run_dir, *common, f"train.train_steps={TOTAL}"))
    return {"stdout": out.getvalue(), "stderr": err.getvalue()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    assets = tmp_path_factory.mktemp("assets")
    run_dir = tmp_path_factory.mktemp("runs") / "logged"
    [console] = run_distributed(_train_twice, world_size=1, assets_dir=str(assets), run_dir=str(run_dir))
    return run_dir, console


def _jsonl(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _train_records(run_dir: Path) -> list[dict]:
    return [r for r in _jsonl(run_dir) if "train/loss" in r]


def test_jsonl_has_one_record_per_step(trained):
    run_dir, _ = trained
    records = _train_records(run_dir)
    # The resumed run appends to the same file and continues the step count.
    assert [r["step"] for r in records] == list(range(1, TOTAL + 1))
    for record in records:
        for key in TRAIN_KEYS:
            assert isinstance(record[key], float) and record[key] == record[key], (key, record)
        # 8 × 64 tokens a step; Megatron-LM's FLOPs of tiny_job's model (2 layers, h=64, 4 heads,
        # SwiGLU ffn 256, vocab 320 padded to 384, seq 64) by hand: 6 · (2 · (64·192 + 64·64 +
        # 64·64 + 3·64·256) + 64·384) = 983 040 per token.
        assert record["train/tokens_per_s"] == pytest.approx(512 / record["train/step_time_s"], rel=1e-9)
        assert record["train/tflops_per_s"] == pytest.approx(983_040 * record["train/tokens_per_s"] / 1e12)
    assert records[0]["train/lr"] != records[-1]["train/lr"]  # the schedule moved


def test_jsonl_has_per_language_validation(trained):
    run_dir, _ = trained
    evals = [r for r in _jsonl(run_dir) if "valid/loss" in r]
    assert [r["step"] for r in evals] == [2, 4, 6]
    for record in evals:
        assert {"valid/loss/en", "valid/loss/pt", "valid/ppl"} <= record.keys()
        per_language = (record["valid/loss/en"], record["valid/loss/pt"])
        assert min(per_language) <= record["valid/loss"] <= max(per_language)
    assert evals[-1]["valid/loss"] < evals[0]["valid/loss"]


def test_console_prints_progress_and_metrics(trained):
    _, console = trained
    assert "step 4 | loss " in console["stdout"] and "TFLOP/s" in console["stdout"]
    assert "valid/loss/en" in console["stdout"]
    assert "resumed from" in console["stdout"]
    assert f"{TOTAL}/{TOTAL}" in console["stderr"]  # tqdm's bar reached the last step


def test_tensorboard_loss_series_equals_jsonl(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = trained
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    assert {"train/loss", "train/grad_norm", "valid/loss/en", "valid/loss/pt"} <= set(
        events.Tags()["scalars"]
    )
    board = {e.step: e.value for e in events.Scalars("train/loss")}
    jsonl = {r["step"]: r["train/loss"] for r in _train_records(run_dir)}
    assert board.keys() == jsonl.keys()
    for step, loss in jsonl.items():
        assert board[step] == pytest.approx(loss, rel=1e-6)  # TensorBoard stores float32


def _wandb_records(path: Path) -> list:
    """Records of an offline ``.wandb`` file: W&B's LevelDB-style log of protobuf ``Record``s
    (the installed W&B has no Python reader, its ``wandb.proto`` messages are enough)."""
    from wandb.proto import wandb_internal_pb2

    block, data = 32 * 1024, path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), "unknown .wandb file format"
    records, pos, pending = [], 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk  # FULL/FIRST start, MIDDLE/LAST add
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def _wandb_history(run_file: Path) -> dict[int, dict]:
    rows: dict[int, dict] = {}
    for record in _wandb_records(run_file):
        if record.WhichOneof("record_type") == "history":
            row = {
                item.key or "/".join(item.nested_key): json.loads(item.value_json)
                for item in record.history.item
            }
            rows.setdefault(int(row["_step"]), {}).update(row)
    return rows


def test_wandb_offline_runs_hold_the_loss_series_and_share_the_run_id(trained):
    run_dir, _ = trained
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 2, runs  # the first run and the resumed one
    run_id = (run_dir / "wandb_run_id").read_text().strip()
    assert all(r.name.endswith(f"-{run_id}") for r in runs)
    history: dict[int, dict] = {}
    for run in runs:
        [run_file] = run.glob(f"run-{run_id}.wandb")
        history.update(_wandb_history(run_file))
    jsonl = {r["step"]: r for r in _train_records(run_dir)}
    assert sorted(history) == list(range(1, TOTAL + 1))
    for step, row in history.items():
        assert row["train/loss"] == pytest.approx(jsonl[step]["train/loss"], rel=1e-12)
    assert "valid/loss/pt" in history[4]


def test_profiler_writes_a_chrome_trace(trained):
    run_dir, _ = trained
    trace = json.loads((run_dir / "profile" / "trace_rank0.json").read_text())
    names = {event.get("name", "") for event in trace["traceEvents"]}
    assert any(name.startswith("aten::") for name in names)
    assert any("mm" in name for name in names)  # the model's matmuls were recorded
