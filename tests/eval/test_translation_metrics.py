"""chrF, chrF++ and BLEU of the translation suite equal sacrebleu's own command line (run as a
subprocess on the same files), score and signature, per language pair, with the BLEU tokenizer
the suite picks for each target language."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from tower_megatron.eval.config import TranslationSuite
from tower_megatron.eval.suites import score_translation
from tower_megatron.eval.testsets import read_translation
from tower_megatron.eval.translation import bleu_tokenizer

EMBEDDED = "resource:eval/translation_demo.jsonl"


def _degrade(text: str, rng: random.Random) -> str:
    """A plausible imperfect translation: drop or swap some words (characters for CJK)."""
    units = text.split() if " " in text else list(text)
    units = [u for u in units if rng.random() > 0.2] or units[:1]
    if len(units) > 3:
        i = rng.randrange(len(units) - 1)
        units[i], units[i + 1] = units[i + 1], units[i]
    return (" " if " " in text else "").join(units)


@pytest.fixture(scope="module")
def scored():
    examples = read_translation(EMBEDDED)
    rng = random.Random(7)
    outputs = [_degrade(ex.reference, rng) for ex in examples]
    outputs[0] = examples[1].reference  # one hypothesis of the wrong segment
    return examples, outputs, score_translation(examples, outputs, TranslationSuite(files=[EMBEDDED]))


def _cli(ref_file, hyp_file, *args) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "sacrebleu", str(ref_file), "-i", str(hyp_file), "-w", "8", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


def test_pairs_cover_tokenizers(scored):
    _, _, results = scored
    tokenizers = {bleu_tokenizer(p.split("-", 1)[1]) for p in results["by_pair"]}
    assert {"13a", "zh"} <= tokenizers and tokenizers & {"char", "ja-mecab", "ko-mecab"}


def test_metrics_equal_sacrebleu_cli(scored, tmp_path):
    examples, outputs, results = scored
    assert len(results["by_pair"]) == 8
    for pair, row in results["by_pair"].items():
        idx = [i for i, ex in enumerate(examples) if ex.pair == pair]
        ref, hyp = tmp_path / f"{pair}.ref", tmp_path / f"{pair}.hyp"
        ref.write_text("".join(examples[i].reference + "\n" for i in idx), encoding="utf-8")
        hyp.write_text("".join(outputs[i] + "\n" for i in idx), encoding="utf-8")
        tok = bleu_tokenizer(examples[idx[0]].tgt_lang)
        cli = {
            "bleu": _cli(ref, hyp, "-m", "bleu", "--tokenize", tok),
            "chrf": _cli(ref, hyp, "-m", "chrf"),
            "chrf++": _cli(ref, hyp, "-m", "chrf", "--chrf-word-order", "2"),
        }
        for metric, reference in cli.items():
            assert round(row[metric], 8) == pytest.approx(reference["score"], abs=1e-8), (pair, metric)
            assert row["signatures"][metric] == reference["signature"], (pair, metric)
        assert 0 < row["chrf"] < 100


def test_overall_is_macro_average_over_pairs(scored):
    _, _, results = scored
    pairs = results["by_pair"].values()
    for metric in ("chrf", "chrf++", "bleu"):
        assert results["overall"][metric] == pytest.approx(
            sum(p[metric] for p in pairs) / len(pairs), abs=1e-12
        )


def test_bleu_tokenizer_per_language():
    assert bleu_tokenizer("de-DE") == "13a"
    assert bleu_tokenizer("zh-CN") == "zh"
    assert bleu_tokenizer("th") == "char"
    assert bleu_tokenizer("de", {"de": "intl"}) == "intl"
    assert bleu_tokenizer("ja-JP") in ("ja-mecab", "char")
