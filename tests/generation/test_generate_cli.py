"""``tower-megatron generate`` end to end on a checkpoint the trainer wrote (3 CPT steps of a tiny
Gemma 2-style model): the CLI's completions equal ``load_generator`` on the same run directory,
chats go through the family's chat format, outputs and metrics are written; bad input lines fail
with one line naming file, line and field, before any model is loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tower_megatron.testing import run_distributed

REQUESTS = [
    {"id": "a", "prompt": "All human beings are born free"},
    {"id": "b", "messages": [{"role": "user", "content": "Where is the nearest train station?"}]},
    {"id": "c", "prompt": "Todos os seres"},
]
NEW_TOKENS = 6


def _train_and_generate(root: str) -> dict:
    import torch

    os.environ["OMP_NUM_THREADS"] = "1"  # a lone process would get every core (see test_sampling)
    torch.set_num_threads(1)
    from tower_megatron.generation import SamplingParams, load_generator
    from tower_megatron.generation.generate_cli import encode_requests
    from tower_megatron.testing.tiny import build_tiny_assets, tiny_job
    from tower_megatron.training.entry import run_training

    assets = build_tiny_assets(Path(root) / "assets")
    run_dir = Path(root) / "runs" / "gen"
    job = tiny_job(
        assets,
        run_dir,
        "train.train_steps=3",
        "checkpoint.save_at_end=true",
        "model.arch=gemma2",
        "model.ffn_hidden_size=128",
        "model.num_query_groups=2",
        "model.kv_channels=16",
        "model.sliding_window=8",
    )
    run_training(job)
    gen = load_generator(run_dir, device="cpu")  # the run directory: its newest checkpoint
    prompts = encode_requests(REQUESTS, gen.tokenizer, "gemma")
    outs = gen.generate(prompts, SamplingParams(max_new_tokens=NEW_TOKENS))
    return {
        "run_dir": str(run_dir),
        "prompts": prompts,
        "token_ids": [o.token_ids for o in outs],
        "texts": [o.text for o in outs],
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    (res,) = run_distributed(_train_and_generate, world_size=1, root=str(tmp_path_factory.mktemp("gen_e2e")))
    return res


def test_generate_verb_on_a_trainer_checkpoint(trained, tmp_path):
    inputs = tmp_path / "requests.jsonl"
    inputs.write_text("".join(json.dumps(r) + "\n" for r in REQUESTS))
    config = tmp_path / "generate.yaml"
    config.write_text(f"checkpoint:\n  path: {trained['run_dir']}/checkpoints\n  device: cpu\ninput: {inputs}\n")
    out_dir = tmp_path / "out"
    # Not this process's world: an earlier in-process load_generator set MASTER_PORT (its store
    # still listens there), which the CLI would otherwise inherit and fail to bind.
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_PORT")}
    env.update(PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tower_megatron",
            "generate",
            str(config),
            f"output_dir={out_dir}",
            f"sampling.max_new_tokens={NEW_TOKENS}",
            "progress_bar=false",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out_dir / "generations.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    assert [r["token_ids"] for r in rows] == trained["token_ids"]
    assert [r["completion"] for r in rows] == trained["texts"]
    assert rows[1]["messages"] == REQUESTS[1]["messages"]
    (metrics,) = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    assert metrics["prompts"] == 3
    assert metrics["new_tokens"] == sum(len(t) for t in trained["token_ids"])
    assert metrics["prompt_tokens"] == sum(len(p) for p in trained["prompts"])
    assert (out_dir / "config.yaml").is_file()


def test_chat_prompt_is_rendered_with_generation_prompt_and_bos(trained):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(
        model_file=str(Path(trained["run_dir"]).parents[1] / "assets" / "tiny_sp.model")
    )
    chat = trained["prompts"][1]
    assert chat[0] == sp.bos_id()
    text = "<start_of_turn>user\nWhere is the nearest train station?<end_of_turn>\n<start_of_turn>model\n"
    assert chat[1:] == sp.encode(text)


@pytest.mark.parametrize(
    "line,message",
    [
        ("{not json", ":2: invalid JSON (Expecting property name"),
        ('{"text": "x"}', ":2: needs exactly one of the fields 'prompt' (text) or 'messages' (chat)"),
        ('{"messages": [{"role": "bot", "content": "x"}]}', ":2: field 'messages' must be"),
    ],
)
def test_bad_input_line_is_one_clear_error(tmp_path, capsys, line, message):
    from tower_megatron.cli import main

    inputs = tmp_path / "in.jsonl"
    inputs.write_text('{"prompt": "ok"}\n' + line + "\n")
    config = tmp_path / "g.yaml"
    config.write_text(f"checkpoint:\n  path: {tmp_path}\ninput: {inputs}\n")
    rc = main(["generate", str(config)])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"{inputs}{message}" in err
    assert not (tmp_path / "runs").exists()
