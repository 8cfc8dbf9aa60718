"""Every alignment recipe in configs/{sft,dpo,grpo} loads against the schema and passes the job's
full validation (``validate_job``: layout, model, the stage's own checks, its data) at the world
size it is written for; the large-model recipes keep their CPT recipe's parallel layout.

Token files that only exist on a cluster are swapped for empty stand-ins (validation checks that
they exist, as tests/config/test_recipes.py does for CPT); prompt sets for the embedded ones.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tower_megatron.config import JobConfig, load_config
from tower_megatron.config.validate import validate_job
from tower_megatron.models import resolve_model_config
from tower_megatron.resources import DEMO_TOKENIZER

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
EMBEDDED_PROMPTS = (
    "[" + ",".join(f"resource:corpus/grpo/{n}.jsonl" for n in ("math", "ifeval", "translation")) + "]"
)

# recipe -> (GPUs it is written for, the CPT recipe whose layout it keeps, stage, seq_length)
LARGE = {
    "sft/gemma2_2b.yaml": (32, "cpt_gemma2_2b.yaml", "sft", 8192),
    "sft/gemma2_9b.yaml": (64, "cpt_gemma2_9b.yaml", "sft", 8192),
    "sft/qwen2.5_72b.yaml": (32, "cpt_qwen2.5_72b_fp8.yaml", "sft", 4096),
    "dpo/gemma2_2b.yaml": (32, "cpt_gemma2_2b.yaml", "wpo", 4096),
    "dpo/gemma2_9b.yaml": (64, "cpt_gemma2_9b.yaml", "wpo", 4096),
    "dpo/qwen2.5_72b.yaml": (32, "cpt_qwen2.5_72b_fp8.yaml", "wpo", 4096),
    "grpo/gemma2_2b.yaml": (32, "cpt_gemma2_2b.yaml", "grpo", 4096),
    "grpo/gemma2_9b.yaml": (64, "cpt_gemma2_9b.yaml", "grpo", 4096),
    "grpo/qwen2.5_72b.yaml": (32, "cpt_qwen2.5_72b_fp8.yaml", "grpo", 4096),
}
TINY = {  # recipe -> stage
    "sft/tiny_cpu.yaml": "sft",
    "dpo/tiny_cpu.yaml": "dpo",
    "dpo/wpo_tiny_cpu.yaml": "wpo",
    "grpo/tiny_cpu.yaml": "grpo",
}


def test_every_alignment_recipe_is_checked_here():
    on_disk = {
        str(p.relative_to(CONFIGS)) for d in ("sft", "dpo", "grpo") for p in (CONFIGS / d).glob("*.yaml")
    }
    assert on_disk == set(LARGE) | set(TINY)


def _touch_chat_prefix(prefix: Path, parts: tuple[str, ...]) -> None:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    for part in parts:
        for kind in ("text", "mask"):
            for ext in (".bin", ".idx"):
                Path(f"{prefix}{part}_{kind}_document{ext}").touch()


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory) -> Path:
    """Empty token files where the demo recipes expect them (relative to the working directory)
    and one sft and one preference prefix for the large recipes."""
    root = tmp_path_factory.mktemp("alignment_data")
    sft, pref = ("",), ("_chosen", "_rejected")
    for split in ("train", "valid"):
        _touch_chat_prefix(root / f"outputs/data/demo_sft/translation_chat/en.{split}", sft)
        _touch_chat_prefix(root / f"outputs/data/demo_sft/chat/en.{split}", sft)
        _touch_chat_prefix(root / f"outputs/data/demo_preference/translation_preference/en.{split}", pref)
    _touch_chat_prefix(root / "cluster/sft/en.train", sft)
    _touch_chat_prefix(root / "cluster/pref/en.train", pref)
    return root


def _large_overrides(stage: str, root: Path) -> list[str]:
    data = {"sft": root / "cluster/sft/en.train", "wpo": root / "cluster/pref/en.train"}
    overrides = [f"data.tokenizer.path={DEMO_TOKENIZER}", "data.tokenizer.type=sentencepiece",
                 "checkpoint.load=null", "run.device=auto"]  # fmt: skip
    if stage == "grpo":
        return [*overrides, f"grpo.prompts={EMBEDDED_PROMPTS}"]
    return [*overrides, f"data.paths=[{data[stage]}]"]


@pytest.mark.parametrize("name", sorted(LARGE))
def test_large_recipe_validates_at_its_scale_with_its_cpt_layout(name, stand_ins):
    world, cpt, stage, seq = LARGE[name]
    job = load_config(JobConfig, CONFIGS / name, _large_overrides(stage, stand_ins))
    job.data.valid_paths = {}  # a merge cannot empty a mapping; the cluster files are not here
    validate_job(job, world_size=world, cuda_available=True)
    assert (job.train.stage, job.train.seq_length, job.train.precision) == (stage, seq, "bf16")
    cpt_job = load_config(JobConfig, CONFIGS / cpt)
    assert dataclasses.asdict(job.parallel) == dataclasses.asdict(cpt_job.parallel)
    assert job.model.preset == cpt_job.model.preset
    assert resolve_model_config(job.model).arch == resolve_model_config(cpt_job.model).arch
    assert job.checkpoint.load is None and not job.checkpoint.load_optimizer


def test_large_recipes_chain_their_stages():
    """Each stage starts from the previous stage's run directory (placeholders on a cluster)."""
    for size, cpt in (
        ("gemma2_2b", "cpt-gemma2-2b"),
        ("gemma2_9b", "cpt-gemma2-9b"),
        ("qwen2.5_72b", "cpt-qwen2.5-72b-fp8"),
    ):
        jobs = [load_config(JobConfig, CONFIGS / stage / f"{size}.yaml") for stage in ("sft", "dpo", "grpo")]
        previous = [cpt, jobs[0].run.name, jobs[1].run.name]
        for job, before in zip(jobs, previous, strict=True):
            assert job.checkpoint.load == f"/data/tower-plus/runs/{before}/checkpoints", job.run.name
    grpo = load_config(JobConfig, CONFIGS / "grpo/gemma2_2b.yaml")
    assert (
        grpo.train.global_batch_size == grpo.grpo.num_prompts_per_step * grpo.grpo.num_generations_per_prompt
    )
    assert (
        grpo.loss_fn.reference_policy_kl_penalty,
        grpo.loss_fn.ratio_clip_min,
        grpo.loss_fn.ratio_clip_max,
    ) == (0.01, 0.2, 0.2)  # NeMo-RL's grpo_math_1B.yaml values


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_recipe_validates_on_cpu(name, stand_ins, monkeypatch):
    monkeypatch.chdir(stand_ins)  # the demo recipes name their token files relative to the run
    job = load_config(JobConfig, CONFIGS / name, [f"run.output_dir={stand_ins / 'runs'}"])
    validate_job(job, world_size=1, cuda_available=False)
    assert job.train.stage == TINY[name]
    assert job.data.tokenizer.path == DEMO_TOKENIZER
    if name.startswith("dpo/"):
        assert job.dpo.reference == "precompute" and set(job.data.valid_paths) == {"translation"}
    if name == "grpo/tiny_cpu.yaml":
        assert len(job.grpo.prompts) == 4


def test_tiny_recipes_refuse_what_they_cannot_run(stand_ins, monkeypatch):
    from tower_megatron.config import ConfigError

    monkeypatch.chdir(stand_ins)
    job = load_config(
        JobConfig,
        CONFIGS / "dpo/tiny_cpu.yaml",
        ["parallel.pipeline_model_parallel_size=2", "dpo.reference=model"],
    )
    with pytest.raises(
        ConfigError,
        match=r"^dpo\.reference=model keeps a frozen copy .*needs parallel\.pipeline_model_parallel_size=1",
    ):
        validate_job(job, world_size=2, cuda_available=False)
    job = load_config(JobConfig, CONFIGS / "grpo/tiny_cpu.yaml", ["grpo.num_generations_per_prompt=8"])
    with pytest.raises(ConfigError, match=r"train.global_batch_size=32 must equal .* = 64"):
        validate_job(job, world_size=1, cuda_available=False)


def _grpo_step(run_dir: str) -> list[dict]:
    from tower_megatron.training.entry import run_training

    run = Path(run_dir)
    job = load_config(JobConfig, CONFIGS / "grpo/tiny_cpu.yaml", [
        f"run.output_dir={run.parent}", f"run.name={run.name}", "run.device=cpu", "train.train_steps=1",
        "grpo.num_prompts_per_step=6", "grpo.num_generations_per_prompt=2", "train.global_batch_size=12",
        "train.micro_batch_size=6", "grpo.max_new_tokens=12", "grpo.reward_workers=1", "grpo.sample_log_interval=1",
        "grpo.reward_timeout_s=120",  # a loaded machine must not turn a slow verifier into a 0
        "logging.console=false", "logging.tensorboard=false", "logging.progress_bar=false",
        "checkpoint.save_at_end=false",
    ])  # fmt: skip
    validate_job(job, world_size=1, cuda_available=False)
    return run_training(job)["history"]


@pytest.mark.slow
def test_tiny_grpo_recipe_scores_the_embedded_prompts_with_their_own_rewards(tmp_path):
    """One rollout step of configs/grpo/tiny_cpu.yaml: every sampled response's logged reward is
    what the rewards library gives it under its prompt record's spec and language."""
    import json

    from tower_megatron.resources import resolve
    from tower_megatron.rewards import score
    from tower_megatron.testing import run_distributed

    [history] = run_distributed(_grpo_step, world_size=1, run_dir=str(tmp_path / "grpo"))
    samples = [json.loads(x) for x in (tmp_path / "grpo/samples/step_0000001.jsonl").read_text().splitlines()]
    assert len(samples) == 12
    for sample in samples:
        path, line = sample["source"].rsplit(":", 1)
        record = json.loads(Path(resolve(path)).read_text(encoding="utf-8").splitlines()[int(line) - 1])
        assert sample["prompt"] == record.get("prompt", record.get("messages", [{}])[-1].get("content"))
        assert sample["reward"] == score(sample["response"], record["reward"], lang=record.get("lang")).value
    assert history[-1]["grpo/reward_mean"] == pytest.approx(sum(s["reward"] for s in samples) / 12)
