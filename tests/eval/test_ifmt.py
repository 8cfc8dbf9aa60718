"""IF-MT: each constraint checker on outputs that obey and break it; the shipped set is fair (a
perfect translation — the reference, in JSON where asked — passes every constraint and scores chrF
100); suite figures equal sacrebleu computed directly."""

from __future__ import annotations

import json

import pytest
import sacrebleu

from tower_megatron.eval import ifmt
from tower_megatron.eval.config import IFMTSuite
from tower_megatron.eval.suites import score_ifmt
from tower_megatron.eval.testsets import IFMTExample, read_ifmt


def _ex(source: str, *constraints: dict, tgt: str = "de") -> IFMTExample:
    return IFMTExample("t", "en", tgt, source, "ref", "prompt", list(constraints))


CASES = [
    # (example, output, expected verdict)
    (
        _ex("Click <b>Save</b> to keep **all** changes.", {"type": "keep_markup"}),
        "Klicken Sie auf <b>Speichern</b>, um **alle** Änderungen zu behalten.",
        True,
    ),
    (
        _ex("Click <b>Save</b> to keep **all** changes.", {"type": "keep_markup"}),
        "Klicken Sie auf Speichern, um **alle** Änderungen zu behalten.",
        False,
    ),
    (
        _ex("See [the docs](https://x.org) now.", {"type": "keep_markup"}),
        "Siehe [die Doku](https://x.org).",
        True,
    ),
    (
        _ex("See [the docs](https://x.org) now.", {"type": "keep_markup"}),
        "Siehe [die Doku](https://y.org).",
        False,
    ),
    (
        _ex("Enter your password.", {"type": "glossary", "terms": {"password": "Kennwort"}}),
        "Geben Sie Ihr kennwort ein.",
        True,
    ),
    (
        _ex("Enter your password.", {"type": "glossary", "terms": {"password": "Kennwort"}}),
        "Geben Sie Ihr Passwort ein.",
        False,
    ),
    (_ex("Hello", {"type": "json_keys", "keys": ["translation"]}), '{"translation": "Hallo"}', True),
    (
        _ex("Hello", {"type": "json_keys", "keys": ["translation"]}),
        '```json\n{"translation": "Hallo"}\n```',
        True,
    ),
    (
        _ex("Hello", {"type": "json_keys", "keys": ["translation"]}),
        '{"translation": "Hallo", "note": "x"}',
        False,
    ),
    (_ex("Hello", {"type": "json_keys", "keys": ["translation"]}), "Hallo", False),
    (
        _ex("Can you help?", {"type": "formal_register", "formal": ["Sie"], "informal": ["du"]}),
        "Können Sie helfen?",
        True,
    ),
    (
        _ex("Can you help?", {"type": "formal_register", "formal": ["Sie"], "informal": ["du"]}),
        "Kannst du helfen?",
        False,
    ),
    (
        _ex("Can you help?", {"type": "formal_register", "formal": ["Sie"], "informal": ["du"]}),
        "Sie helfen, du nicht.",
        False,
    ),
    (
        _ex("Can you help?", {"type": "formal_register", "formal": ["Sie"], "informal": ["du"]}),
        "Hilft sie?",
        False,
    ),
    (_ex("Short.", {"type": "max_chars", "max": 10}), "Kurz.", True),
    (_ex("Short.", {"type": "max_chars", "max": 10}), "Das ist viel zu lang.", False),
    (
        _ex("%(count)s of %(total)s files, 3.5 MB", {"type": "keep_placeholders"}),
        "%(count)s von %(total)s Dateien, 3,5 MB",
        True,
    ),
    (
        _ex("%(count)s of %(total)s files, 3.5 MB", {"type": "keep_placeholders"}),
        "%(anzahl)s von %(total)s Dateien, 3,5 MB",
        False,
    ),
    (
        _ex("%(count)s of %(total)s files, 3.5 MB", {"type": "keep_placeholders"}),
        "%(count)s von %(total)s Dateien, 4 MB",
        False,
    ),
    # JSON requested: the other constraints look at the translation inside it.
    (
        _ex("Open %s", {"type": "json_keys", "keys": ["translation"]}, {"type": "keep_placeholders"}),
        '{"translation": "%s öffnen"}',
        True,
    ),
]


@pytest.mark.parametrize("index", range(len(CASES)))
def test_constraint_checkers(index):
    example, output, expected = CASES[index]
    assert all(ifmt.check(example, output).values()) is expected


def test_shipped_set_is_fair_and_scores_exactly():
    examples = read_ifmt("resource:eval/ifmt_demo.jsonl")
    kinds = {c["type"] for ex in examples for c in ex.constraints}
    assert kinds == set(ifmt.CONSTRAINTS.names())
    assert len({ex.tgt_lang for ex in examples}) >= 5
    ideal = [
        json.dumps({"translation": ex.reference}, ensure_ascii=False)
        if any(c["type"] == "json_keys" for c in ex.constraints)
        else ex.reference
        for ex in examples
    ]
    results = score_ifmt(examples, ideal, IFMTSuite())
    assert results["overall"]["all_constraints"] == 100.0
    assert results["overall"]["chrf"] == pytest.approx(100.0)
    # A translation that ignores every instruction: the source text itself.
    results = score_ifmt(examples, [ex.source for ex in examples], IFMTSuite())
    for pair, row in results["by_pair"].items():
        idx = [i for i, ex in enumerate(examples) if ex.pair == pair]
        texts = [ifmt.translation_text(examples[i], examples[i].source) for i in idx]
        direct = sacrebleu.corpus_chrf(texts, [[examples[i].reference for i in idx]]).score
        assert row["chrf"] == pytest.approx(direct, abs=1e-9)
        followed = [all(ifmt.check(examples[i], examples[i].source).values()) for i in idx]
        assert row["all_constraints"] == pytest.approx(100.0 * sum(followed) / len(idx))
        assert row["combined"] == pytest.approx(row["chrf"] * row["all_constraints"] / 100)
    assert results["by_constraint"]["json_keys"]["accuracy"] == 0.0
    assert 0 < results["overall"]["all_constraints"] < 100
