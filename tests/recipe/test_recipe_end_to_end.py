"""The tiny recipe end to end (shrunk by overrides), its rerun, and kill -9 + resume.

One uninterrupted run is the reference: it must leave the Pareto report, plots, summary.md and
every stage's metrics.jsonl, with every reported number equal to the eval JSON field it links
to. Rerunning it does nothing. Runs killed (kill -9 of the recipe's process group) during CPT and
during WPO, then rerun, must resume the killed stage from its checkpoint and end with exactly
the reference's final losses, rewards and eval scores. (A killed run starts from a copy of the
reference's finished stages before the killed one, which keeps the test to the stages it checks.)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tower_megatron.eval.report import pointer_get

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "configs" / "recipes" / "tiny-cpu.yaml"
TRAIN_STAGES = ("cpt", "sft", "wpo", "grpo")
DATA_STAGES = ("data-cpt", "data-sft", "data-preference")
# The tiny recipe with few steps, small batches and short evaluations; a checkpoint every 2 steps
# so a kill always finds one to resume from.
SHRINK = [
    "train_overrides=[logging.progress_bar=false,train.eval_interval=0,train.micro_batch_size=2,"
    "train.global_batch_size=4,train.seq_length=128,logging.log_interval=1,logging.tensorboard=false]",
    "stage_overrides.cpt=[train.train_steps=6,checkpoint.save_interval=2]",
    "stage_overrides.sft=[train.train_steps=4,checkpoint.save_interval=2]",
    "stage_overrides.wpo=[train.train_steps=6,checkpoint.save_interval=2]",
    "stage_overrides.grpo=[train.train_steps=2,checkpoint.save_interval=1,grpo.num_prompts_per_step=2,"
    "grpo.num_generations_per_prompt=2,grpo.max_new_tokens=12,grpo.reward_workers=1]",
    "eval.overrides=[progress_bar=false,translation.limit=3,ifeval.limit=3,ifmt.limit=2,chat.limit=1,"
    "generation.max_new_tokens=12]",
]


def _cmd(out: Path) -> list[str]:
    return [sys.executable, "-m", "tower_megatron", "recipe", str(RECIPE), f"output_dir={out}", *SHRINK]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


def _run(out: Path, cwd: Path) -> str:
    proc = subprocess.run(_cmd(out), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """The working directory of every run: token files go to its outputs/ (as the configs say)."""
    return tmp_path_factory.mktemp("recipe_ws")


@pytest.fixture(scope="module")
def reference(workspace) -> tuple[Path, str]:
    out = workspace / "reference"
    return out / "tiny-cpu", _run(out, workspace)


def _final(root: Path) -> dict:
    """Last logged values of every train stage and every eval summary."""
    final = {}
    for stage in TRAIN_STAGES:
        lines = (root / stage / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        last = json.loads(lines[-1])
        keep = ("step", "train/loss", "train/grad_norm", "train/lr", "grpo/reward_mean")
        final[stage] = {k: last[k] for k in keep if k in last}
        results = json.loads((root / "eval" / stage / "results.json").read_text(encoding="utf-8"))
        final[f"eval/{stage}"] = results["summary"]
    return final


def test_reference_run_leaves_report_plots_summary_and_metrics(reference):
    root, log = reference
    for i, stage in enumerate([*DATA_STAGES, *TRAIN_STAGES]):
        assert f"stage {i + 1}/7 '{stage}'" in log
    for stage in TRAIN_STAGES:
        steps = [json.loads(x)["step"] for x in (root / stage / "metrics.jsonl").read_text().splitlines()]
        assert steps == list(range(1, steps[-1] + 1)) and steps[-1] in (6, 4, 2)
    for name in ("report/pareto.md", "report/pareto.json", "report/pareto.png", "plots/loss.png",
                 "plots/reward.png", "plots/scores.png", "summary.md"):  # fmt: skip
        assert (root / name).is_file(), name
    # Every number of the report is the eval JSON field its source names.
    report = json.loads((root / "report" / "pareto.json").read_text())
    assert [r["label"] for r in report["rows"]] == list(TRAIN_STAGES)
    for row in report["rows"]:
        for cell in row["values"].values():
            path, _, pointer = cell["source"].partition("#")
            assert Path(path) == (root / "eval" / row["label"] / "results.json").resolve()
            assert pointer_get(json.loads(Path(path).read_text()), pointer) == cell["value"]
    # summary.md: one row per stage, its scores linking to the same fields.
    summary = (root / "summary.md").read_text()
    for stage in TRAIN_STAGES:
        results = json.loads((root / "eval" / stage / "results.json").read_text())["summary"]
        link = f"[{results['translation_score']:.2f}](eval/{stage}/results.json#/summary/translation_score)"
        assert f"| {stage} | {link} |" in summary


def test_rerun_of_a_finished_recipe_does_nothing(reference, workspace):
    root, _ = reference
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    log = _run(root.parent, workspace)
    assert log.strip().splitlines()[-1].endswith("nothing to do")
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("stage", ["cpt", "wpo"])
def test_kill_during_a_stage_then_rerun_resumes_it_and_ends_as_the_reference(reference, workspace, stage):
    ref_root, _ = reference
    out = workspace / f"killed-{stage}"
    root = out / "tiny-cpu"
    # Start from the reference's state before `stage`: the token files exist (same workspace), so
    # the data stages and the train stages before `stage` (run directories, evals) are copied.
    before = [*DATA_STAGES, *TRAIN_STAGES[: TRAIN_STAGES.index(stage)]]
    for name in TRAIN_STAGES[: TRAIN_STAGES.index(stage)]:
        shutil.copytree(ref_root / name, root / name)
        shutil.copytree(ref_root / "eval" / name, root / "eval" / name)
    shutil.copytree(ref_root / "markers", root / "markers", ignore=lambda d, names: [
        n for n in names if n.removesuffix(".json").removesuffix(".eval") not in before])  # fmt: skip
    proc = subprocess.Popen(_cmd(out), cwd=workspace, env=_env(), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    ckpt = root / stage / "checkpoints" / "iter_0000002"
    deadline = time.monotonic() + 600
    while not ckpt.is_dir() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ckpt.is_dir(), proc.stdout.read()[-3000:]
    assert not (root / "markers" / f"{stage}.json").exists(), "the stage finished before the kill"
    log = _run(out, workspace)
    assert f"'{stage}' (train): train" in log and ", resuming from iter_" in log
    assert _final(root) == _final(ref_root)
