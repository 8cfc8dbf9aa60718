"""Wrong values are refused before anything runs (issue 14 item 4 and "poorly handled").

Each case is a valid base job with one thing wrong. It must fail through ``load_job`` with one
``ConfigError`` line holding the expected parts, through the CLI with exit code 2, and leave no
run directory behind.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from tower_megatron.cli import main
from tower_megatron.config import ConfigError
from tower_megatron.resources import DEMO_TOKENIZER
from tower_megatron.testing.processes import tmpfs
from tower_megatron.training.entry import load_job

# name -> (overrides, expected parts of the one error line)
CASES: dict[str, tuple[list[str], tuple[str, ...]]] = {
    "beta1_is_one": (["optimizer.adam_beta1=1.0"], ("optimizer.adam_beta1=1.0", "[0, 1)")),
    "beta2_negative": (["optimizer.adam_beta2=-0.1"], ("optimizer.adam_beta2=-0.1", "[0, 1)")),
    "eps_zero": (["optimizer.adam_eps=0"], ("optimizer.adam_eps=0", "> 0")),
    "clip_negative": (["optimizer.clip_grad=-1"], ("optimizer.clip_grad=-1", "≥ 0")),
    "weight_decay_negative": (["optimizer.weight_decay=-0.1"], ("optimizer.weight_decay=-0.1",)),
    "min_lr_negative": (["optimizer.min_lr=-1e-5"], ("optimizer.min_lr=-1e-05", "≥ 0")),
    "dropout_above_one": (["model.hidden_dropout=1.5"], ("model.hidden_dropout=1.5", "[0, 1)")),
    "attention_dropout_negative": (["model.attention_dropout=-0.1"], ("model.attention_dropout=-0.1",)),
    "zero_layers": (["model.num_layers=0"], ("model.num_layers=0", "≥ 1")),
    "zero_hidden": (["model.hidden_size=0"], ("model.hidden_size=0", "≥ 1")),
    "vocab_below_tokenizer": (
        ["model.vocab_size=100"],
        ("model.vocab_size", "100 rows", "8000 tokens"),
    ),
    "eval_steps_zero": (["train.eval_steps=0"], ("train.eval_steps=0", "≥ 1")),
    "eval_interval_negative": (["train.eval_interval=-5"], ("train.eval_interval=-5",)),
    "negative_data_workers": (["data.num_workers=-2"], ("data.num_workers=-2", "≥ 0")),
    "zero_distributed_timeout": (
        ["run.distributed_timeout_minutes=0"],
        ("run.distributed_timeout_minutes=0",),
    ),
    "negative_peer_timeout": (["run.peer_failure_timeout_s=-1"], ("run.peer_failure_timeout_s=-1",)),
    "decay_shorter_than_warmup": (
        ["scheduler.warmup_steps=3", "scheduler.decay_steps=2"],
        ("scheduler.decay_steps=2", "scheduler.warmup_steps=3"),
    ),
    "wsd_decay_longer_than_schedule": (
        ["scheduler.decay_style=WSD", "scheduler.wsd_decay_steps=50"],
        ("scheduler.wsd_decay_steps=50", "[1, "),
    ),
    "run_name_escapes_parent": (["run.name=../escaped"], ("run.name='../escaped'", "inside run.output_dir")),
    "run_name_absolute": (["run.name=/tmp/abs"], ("run.name='/tmp/abs'",)),
    "run_name_nested": (["run.name=a/b"], ("run.name='a/b'",)),
    "context_parallel": (["parallel.context_parallel_size=0"], ("parallel.context_parallel_size=0", "≥ 1")),
}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rejects")
    for suffix in (".bin", ".idx"):
        (root / ("en_text_document" + suffix)).touch()
    job = {
        "run": {"name": "job", "device": "cpu"},
        "model": {"num_layers": 2, "hidden_size": 64, "num_attention_heads": 4},
        "train": {"train_steps": 5, "micro_batch_size": 1, "global_batch_size": 8, "precision": "fp32"},
        "data": {"tokenizer": {"path": DEMO_TOKENIZER}, "paths": [str(root / "en_text_document")]},
    }
    (root / "base.yaml").write_text(yaml.safe_dump(job))
    return {"root": root, "yaml": root / "base.yaml"}


def _rejects(
    config: Path, overrides: list[str], expect: tuple[str, ...], runs: Path, monkeypatch, capsys
) -> str:
    monkeypatch.setenv("WORLD_SIZE", "1")
    overrides = [f"run.output_dir={runs}", *overrides]
    with pytest.raises(ConfigError) as info:
        load_job(str(config), overrides)
    message = str(info.value)
    assert "\n" not in message, f"expected one error, got:\n{message}"
    for part in expect:
        assert part in message, f"{part!r} not in: {message}"
    assert main(["train", str(config), *overrides]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "config error" in line]
    assert len(err) == 1 and all(part in err[0] for part in expect), err
    assert not runs.exists() or not any(runs.iterdir())
    return message


@pytest.mark.parametrize("name", sorted(CASES))
def test_out_of_range_values_are_refused(name, base, tmp_path, monkeypatch, capsys):
    overrides, expect = CASES[name]
    _rejects(base["yaml"], overrides, expect, tmp_path / "runs", monkeypatch, capsys)


def test_non_utf8_yaml(base, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(base["yaml"].read_bytes() + "# café\n".encode("latin-1"))
    _rejects(bad, [], (str(bad), "not UTF-8", "0xe9"), tmp_path / "runs", monkeypatch, capsys)


@pytest.mark.parametrize("content", [b"", b"this is not a sentencepiece model"])
def test_empty_or_corrupt_tokenizer(content, base, tmp_path, monkeypatch, capsys):
    tok = tmp_path / "broken.model"
    tok.write_bytes(content)
    expect = ("data.tokenizer.path", "cannot load", str(tok))
    _rejects(base["yaml"], [f"data.tokenizer.path={tok}"], expect, tmp_path / "runs", monkeypatch, capsys)


def test_output_dir_that_is_a_file(base, tmp_path, monkeypatch):
    blocker = tmp_path / "runs"
    blocker.write_text("not a directory")
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        load_job(str(base["yaml"]), [f"run.output_dir={blocker}"])
    assert blocker.read_text() == "not a directory"


def _token_file(prefix: Path, docs: list[list[int]]) -> None:
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    builder = IndexedDatasetBuilder(str(prefix) + ".bin", dtype=np.uint16)
    for doc in docs:
        builder.add_document(torch.tensor(doc), [len(doc)])
    builder.finalize(str(prefix) + ".idx")


def test_token_ids_beyond_the_vocabulary(base, tmp_path, monkeypatch, capsys):
    from tower_megatron.config.data import TokenizerConfig
    from tower_megatron.data.tokenizer import build_tokenizer

    vocab = build_tokenizer(TokenizerConfig(path=DEMO_TOKENIZER)).vocab_size
    prefix = tmp_path / "foreign_text_document"
    _token_file(prefix, [[5, 6, 7], [8, vocab + 41, 9]])  # one id the demo tokenizer cannot have
    expect = ("data.paths", f"token id {vocab + 41}", f"{vocab} ids")
    _rejects(base["yaml"], [f"data.paths=[{prefix}]"], expect, tmp_path / "runs", monkeypatch, capsys)


def test_token_files_of_another_tokenizer_through_data_paths(base, tmp_path, monkeypatch, capsys):
    """``preprocess`` output records its tokenizer's hash; data.paths must check it as the mixture does."""
    from tower_megatron.config.loader import load_config
    from tower_megatron.config.preprocess import PreprocessConfig
    from tower_megatron.data.preprocess import run_preprocess
    from tower_megatron.testing.tiny import build_tiny_assets

    src = tmp_path / "mono.jsonl"
    src.write_text('{"text": "All human beings are born free.", "lang": "en"}\n', encoding="utf-8")
    out = tmp_path / "tokens"
    cfg = load_config(PreprocessConfig, None, [f"output_dir={out}", "workers=1", "progress=false"])
    cfg.tokenizer.path = DEMO_TOKENIZER
    from tower_megatron.config.preprocess import SourceConfig

    cfg.sources = [SourceConfig(name="mono", files=[str(src)])]
    run_preprocess(cfg)
    prefix = out / "mono" / "en.train"
    monkeypatch.setenv("WORLD_SIZE", "1")
    load_job(
        str(base["yaml"]), [f"run.output_dir={tmp_path / 'ok'}", f"data.paths=[{prefix}]"]
    )  # same tokenizer
    other = build_tiny_assets(tmp_path / "tiny").tokenizer
    expect = ("data.paths", "was tokenized with", DEMO_TOKENIZER, other)
    overrides = [f"data.paths=[{prefix}]", f"data.tokenizer.path={other}", "model.vocab_size=512"]
    _rejects(base["yaml"], overrides, expect, tmp_path / "runs", monkeypatch, capsys)


def test_did_you_mean_keeps_the_list_index(tmp_path):
    from tower_megatron.config.loader import load_config
    from tower_megatron.config.preprocess import PreprocessConfig

    recipe = tmp_path / "pre.yaml"
    recipe.write_text("output_dir: out\nsources:\n  - name: a\n    files: [x]\n  - name: b\n    file: [y]\n")
    with pytest.raises(ConfigError) as info:
        load_config(PreprocessConfig, recipe)
    assert str(info.value) == (
        f"unknown config key 'sources[1].file' ({recipe}, line 6). Did you mean 'sources[1].files'?"
    )


def test_read_only_output_dir(base, tmp_path, monkeypatch):
    """A read-only filesystem under run.output_dir (a tmpfs remounted read-only; needs root)."""
    import subprocess

    with tmpfs(tmp_path / "ro", "1m") as mnt:
        (mnt / "runs").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        monkeypatch.setenv("WORLD_SIZE", "1")
        with pytest.raises(ConfigError) as info:
            load_job(str(base["yaml"]), [f"run.output_dir={mnt / 'runs'}"])
        assert str(info.value) == (
            f"run.output_dir: cannot write checkpoints under {mnt / 'runs' / 'job' / 'checkpoints'} "
            f"({mnt / 'runs'} is not writable)"
        )


LOADER_CASES = [
    ("data.mixture.sources=[{nme: a}]",
     "unknown config key 'data.mixture.sources[0].nme' (override 'data.mixture.sources=[{nme: a}]'). "
     "Did you mean 'data.mixture.sources[0].name'?"),
    ("data.paths.0=x",
     "invalid config (override 'data.paths.0=x'): Cannot merge incompatible container types; set a list as a "
     "whole (key=[a,b]) and a section by its fields (section.field=value)"),
]  # fmt: skip


@pytest.mark.parametrize(
    "override,message", LOADER_CASES, ids=["list_item_key_override", "dotted_list_index"]
)
def test_loader_messages_for_list_items(override, message):
    from tower_megatron.config.loader import load_config
    from tower_megatron.config.schema import JobConfig

    with pytest.raises(ConfigError) as info:
        load_config(JobConfig, None, [override])
    assert str(info.value) == message
