"""``tower-megatron eval`` end to end on CPU: a tiny Gemma 2 Megatron checkpoint, the embedded
translation / IFEval / IF-MT sets and the chat suite judged by ``serve`` on loopback. The written
results are checked against sacrebleu run directly on the written generations, and the outputs
(results.json/.md, generations.jsonl, config.yaml, metrics.jsonl appended) are all there."""

from __future__ import annotations

import json
import threading
from collections import defaultdict

import pytest
import sacrebleu

from tower_megatron.cli import main
from tower_megatron.eval.config import ServeConfig
from tower_megatron.eval.serve import make_server
from tower_megatron.eval.testsets import read_translation


@pytest.fixture(scope="module")
def judge_url(tiny_backend):
    srv = make_server(tiny_backend, ServeConfig(port=0), quiet=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def evaluated(tiny_checkpoint, judge_url, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_out")
    run = out / "tiny"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"earlier": 1}\n')  # a log line this run must keep
    code = main(
        [
            "eval",
            "configs/eval/demo_cpu.yaml",
            f"checkpoint.path={tiny_checkpoint}",
            f"output_dir={out}",
            "name=tiny",
            "checkpoint.device=cpu",
            "generation.max_new_tokens=6",
            "generation.batch_size=25",
            "progress_bar=false",
            "chat.limit=1",
            f"chat.judge.base_url={judge_url}",
            "chat.judge.max_tokens=4",
        ]
    )
    assert code == 0
    return run


def test_outputs_written(evaluated):
    names = {p.name for p in evaluated.iterdir()}
    assert {"results.json", "results.md", "generations.jsonl", "config.yaml", "metrics.jsonl"} <= names
    assert not [n for n in names if n.startswith(".")]  # no temporary files left
    results = json.loads((evaluated / "results.json").read_text())
    assert sorted(results["suites"]) == ["chat", "ifeval", "ifmt", "translation"] and results["skipped"] == {}
    assert [results["suites"][s]["overall"]["n"] for s in ("translation", "ifeval", "ifmt", "chat")] == [
        32,
        20,
        47,
        1,
    ]
    assert results["generation"]["max_new_tokens"] == 6 and results["prompt"]["chat_format"] == "gemma"
    assert results["checkpoint"]["path"].endswith("megatron")
    lines = (evaluated / "metrics.jsonl").read_text().splitlines()
    assert lines[0] == '{"earlier": 1}' and len(lines) == 2
    logged = json.loads(lines[1])
    assert logged["eval/translation/chrf"] == results["suites"]["translation"]["overall"]["chrf"]
    assert logged["eval/general_score"] == results["summary"]["general_score"]
    assert results["summary"]["general_components"] == [
        "ifeval.prompt_level_strict_acc"
    ]  # judge: no verdicts
    chat = results["suites"]["chat"]
    assert chat["overall"]["unparsed"] == 1 and len(chat["items"][0]["judgements"]) == 2
    markdown = (evaluated / "results.md").read_text()
    assert "| en-de-DE |" in markdown and "| into de-DE |" in markdown


def test_translation_scores_match_sacrebleu_on_written_generations(evaluated):
    results = json.loads((evaluated / "results.json").read_text())
    records = [json.loads(line) for line in (evaluated / "generations.jsonl").read_text().splitlines()]
    translations = [r for r in records if r["suite"] == "translation"]
    examples = {ex.origin: ex for ex in read_translation("resource:eval/translation_demo.jsonl")}
    by_pair = defaultdict(list)
    for rec in translations:
        ex = examples[rec["origin"]]
        by_pair[ex.pair].append((rec["output"].strip(), ex.reference))
        if ex.pair == "en-de-DE":
            assert rec["prompt"] == (
                f"Translate the following English source text to German (Germany):\n"
                f"English: {ex.source}\nGerman (Germany): "
            )
        assert rec["new_tokens"] <= 6
    assert len(translations) == 32
    for pair, rows in by_pair.items():
        hyps, refs = [h for h, _ in rows], [r for _, r in rows]
        got = results["suites"]["translation"]["by_pair"][pair]
        assert got["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score, abs=1e-9)
        assert got["n"] == len(rows)


def _eval_tp2(checkpoint: str, out: str) -> int:
    from tower_megatron.eval.runner import eval_main

    return eval_main(
        "configs/eval/demo_cpu.yaml",
        [
            f"checkpoint.path={checkpoint}",
            f"output_dir={out}",
            "name=tp2",
            "checkpoint.device=cpu",
            "checkpoint.tensor_model_parallel_size=2",
            "generation.max_new_tokens=6",
            "progress_bar=false",
            "translation.limit=4",
            "ifeval.limit=3",
            "ifmt.limit=3",
            "chat.files=[]",
        ],
    )


@pytest.mark.slow
def test_tp2_eval_generates_what_tp1_did(evaluated, tiny_checkpoint, tmp_path):
    """The same eval at TP=2 on two gloo processes (rank 0 writes) gives the TP=1 run's outputs."""
    from tower_megatron.testing import run_distributed

    assert run_distributed(_eval_tp2, world_size=2, checkpoint=str(tiny_checkpoint), out=str(tmp_path)) == [
        0,
        0,
    ]
    tp2 = [json.loads(line) for line in (tmp_path / "tp2" / "generations.jsonl").read_text().splitlines()]
    tp1 = {
        r["origin"]: r for r in map(json.loads, (evaluated / "generations.jsonl").read_text().splitlines())
    }
    assert [r["suite"] for r in tp2] == ["translation"] * 4 + ["ifmt"] * 3 + ["ifeval"] * 3
    for rec in tp2:
        assert (rec["prompt"], rec["output"]) == (tp1[rec["origin"]]["prompt"], tp1[rec["origin"]]["output"])
    assert (
        json.loads((tmp_path / "tp2" / "results.json").read_text())["checkpoint"][
            "tensor_model_parallel_size"
        ]
        == 2
    )
