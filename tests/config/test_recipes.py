"""The shipped recipes for the real models load against the schema and pass validation at the
world sizes they are written for (as if on GPUs, with the cluster paths swapped for local files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tower_megatron.config import ConfigError, JobConfig, load_config
from tower_megatron.config.validate import validate_job
from tower_megatron.models import resolve_model_config
from tower_megatron.resources import DEMO_TOKENIZER

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

# recipe -> (GPUs it is written for, data-parallel size there, architecture)
RECIPES = {
    "cpt_gemma2_2b.yaml": (32, 32, "gemma2"),
    "cpt_gemma2_9b.yaml": (64, 16, "gemma2"),
    "cpt_qwen2.5_72b_fp8.yaml": (32, 1, "qwen2"),
}


@pytest.fixture(scope="module")
def local_data(tmp_path_factory) -> list[str]:
    """Stand-ins for the cluster paths: validation only checks that token files exist."""
    root = tmp_path_factory.mktemp("tokens")
    for suffix in (".bin", ".idx"):
        (root / f"en_text_document{suffix}").touch()
    return [
        f"data.tokenizer.path={DEMO_TOKENIZER}",
        "data.tokenizer.type=sentencepiece",
        f"data.paths=[{root / 'en_text_document'}]",
        "data.mixture.sources=[]",
        "data.mixture.stats=[]",
        "checkpoint.load=null",
        "run.device=auto",
    ]


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_validates_at_its_scale(name, local_data):
    world, dp, arch = RECIPES[name]
    job = load_config(JobConfig, CONFIGS / name, local_data)
    job.data.valid_paths = {}  # a merge cannot empty a mapping; the cluster files are not here
    validate_job(job, world_size=world, cuda_available=True)
    par = job.parallel
    assert world // (par.tensor_model_parallel_size * par.pipeline_model_parallel_size) == dp
    model = resolve_model_config(job.model)
    assert model.arch == arch
    assert job.train.precision == "bf16" and par.use_distributed_optimizer


def test_recipe_sequence_lengths_and_fp8():
    gemma = [load_config(JobConfig, CONFIGS / n) for n in ("cpt_gemma2_2b.yaml", "cpt_gemma2_9b.yaml")]
    assert all(job.train.seq_length == 8192 for job in gemma)
    qwen = load_config(JobConfig, CONFIGS / "cpt_qwen2.5_72b_fp8.yaml")
    assert qwen.train.seq_length == 4096
    assert (qwen.model.fp8.format, qwen.model.fp8.recipe) == ("hybrid", "tensorwise")
    par = qwen.parallel
    assert (par.tensor_model_parallel_size, par.pipeline_model_parallel_size) == (8, 4)
    assert resolve_model_config(qwen.model).num_layers % (4 * par.virtual_pipeline_model_parallel_size) == 0


def test_72b_recipe_refuses_too_few_gpus_and_cpu(local_data):
    job = load_config(JobConfig, CONFIGS / "cpt_qwen2.5_72b_fp8.yaml", local_data)
    job.data.valid_paths = {}
    with pytest.raises(ConfigError, match="world size 16 is not divisible"):
        validate_job(job, world_size=16, cuda_available=True)
    with pytest.raises(ConfigError, match="model.fp8.format"):
        validate_job(job, world_size=32, cuda_available=False)
