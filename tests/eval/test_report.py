"""``report`` on two eval results: every table value equals the number in its eval JSON (followed
through the link it carries), the Pareto frontier is right, the PNG is written; the CLI verb works
with a config listing the inputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tower_megatron.cli import main
from tower_megatron.config.loader import ConfigError
from tower_megatron.eval.report import COLUMNS, pareto_front, pointer_get, write_pareto_report


def _results(name: str, chrf: float, ifeval: float, bleu: float, win: float | None) -> dict:
    suites = {
        "translation": {"overall": {"chrf": chrf, "chrf++": chrf - 1.5, "bleu": bleu}},
        "ifeval": {"overall": {"prompt_level_strict_acc": ifeval, "inst_level_loose_acc": ifeval + 4.0}},
        "ifmt": {"overall": {"combined": chrf * 0.5}},
    }
    general = [ifeval] + ([win] if win is not None else [])
    if win is not None:
        suites["chat"] = {"overall": {"win_rate": win}}
    return {
        "schema": "tower-megatron-eval/1",
        "name": name,
        "suites": suites,
        "summary": {
            "translation_score": chrf,
            "translation_metric": "chrf",
            "general_score": sum(general) / len(general),
        },
    }


@pytest.fixture()
def evals(tmp_path) -> list[Path]:
    paths = []
    for name, args in {
        "sft": (51.25, 40.0, 22.5, 30.0),
        "wpo": (49.75, 55.5, 21.0, None),
        "grpo": (48.0, 35.0, 20.0, 20.0),
    }.items():
        run = tmp_path / "eval" / name
        run.mkdir(parents=True)
        (run / "results.json").write_text(json.dumps(_results(name, *args)))
        paths.append(run)
    return paths


def test_table_values_equal_the_eval_jsons(evals, tmp_path):
    out = tmp_path / "report"
    report = write_pareto_report([evals[0] / "results.json", evals[1]], out)
    assert [r["label"] for r in report["rows"]] == ["sft", "wpo"]
    table = (out / "pareto.md").read_text(encoding="utf-8")
    links = re.findall(r"\[(-?[\d.]+)\]\(([^)#]+)#([^)]+)\)", table)
    assert len(links) == sum(len(r["values"]) for r in report["rows"]) == 2 * len(COLUMNS) - 1  # wpo: no chat
    assert "chat win rate" not in report["rows"][1]["values"] and table.count("| – |") == 1
    for shown, rel, pointer in links:
        source = json.loads((out / rel).read_text())
        assert float(shown) == round(pointer_get(source, pointer), 2)
    for row, run in zip(report["rows"], evals[:2], strict=True):
        source = json.loads((run / "results.json").read_text())
        for title, pointer in COLUMNS:
            if pointer_get(source, pointer) is None:
                continue
            assert row["values"][title]["value"] == pointer_get(source, pointer)
            assert row["values"][title]["source"] == f"{(run / 'results.json').resolve()}#{pointer}"
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "pareto.json").read_text()) == report


def test_pareto_frontier(evals, tmp_path):
    report = write_pareto_report(evals, tmp_path / "r")
    # sft: (35.0, 51.25), wpo: (55.5, 49.75), grpo: (27.5, 48.0) — grpo is beaten by sft on both.
    assert [r["pareto"] for r in report["rows"]] == [True, True, False]
    assert pareto_front([(1, 1), (1, 1), (0, 2), (0, 0)]) == [0, 1, 2]


def test_report_cli_and_errors(evals, tmp_path, capsys):
    config = tmp_path / "report.yaml"
    config.write_text(
        f"inputs: [{evals[0]}, {evals[2]}]\nlabels: [SFT, GRPO]\noutput_dir: {tmp_path / 'cli'}\n"
    )
    assert main(["report", str(config)]) == 0
    assert "| SFT |" in (tmp_path / "cli" / "pareto.md").read_text()
    assert main(["report", str(config), f"inputs=[{tmp_path}/missing]", "labels=[]"]) == 2
    assert f"report input not found: {tmp_path}/missing (an eval results.json" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="2 labels for 1 inputs"):
        write_pareto_report([evals[0]], tmp_path / "x", labels=["a", "b"])
