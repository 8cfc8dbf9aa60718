"""Normalization, filters, dedup, language ID and held-out splits: each counted in stats.json."""

from __future__ import annotations

import unicodedata

from data_helpers import make_cfg, read_docs, write_lines

from tower_megatron.data.languages import LanguageDetector, display_name, standardize
from tower_megatron.data.preprocess import run_preprocess

DE = "Alle Menschen sind frei und gleich an Würde und Rechten geboren. Sie sind mit Vernunft begabt."
EN = "All human beings are born free and equal in dignity and rights. They are endowed with reason."


def _mono(path, **kw):
    return {"name": "m", "kind": "mono", "files": [str(path)], **kw}


def test_dedup_after_normalization_and_across_sources(tmp_path, megatron_tokenizer):
    composed, decomposed = "Café com leite.", unicodedata.normalize("NFD", "Café com leite.")
    assert composed != decomposed
    a = write_lines(tmp_path / "a.jsonl", [{"text": composed, "lang": "pt"}, {"text": decomposed, "lang": "pt"},
                                            {"text": "  Café com leite.  ", "lang": "pt"}])  # fmt: skip
    b = write_lines(
        tmp_path / "b.jsonl", [{"text": composed, "lang": "pt"}, {"text": composed, "lang": "es"}]
    )
    stats = run_preprocess(make_cfg(tmp_path / "out", [_mono(a), {**_mono(b), "name": "b"}]))
    assert stats["sources"]["m"]["filtered"] == {"duplicate": 2} and stats["sources"]["m"]["kept"] == 1
    # Same text in another source is a duplicate; under another language it is not.
    assert stats["sources"]["b"]["filtered"] == {"duplicate": 1} and stats["sources"]["b"]["kept"] == 1
    assert stats["totals"]["by_kind"]["mono"]["languages"]["pt"]["filtered"] == {"duplicate": 3}
    [doc] = read_docs(tmp_path / "out" / "m" / "pt.train")
    assert megatron_tokenizer.detokenize(doc[:-1].tolist()) == composed  # NFC, stripped

    stats = run_preprocess(make_cfg(tmp_path / "out2", [_mono(a)], **{"filters.dedup": "false"}))
    assert stats["sources"]["m"]["kept"] == 3


def test_mirrored_pair_is_a_duplicate(tmp_path):
    pairs = [
        {"src": "Good morning.", "tgt": "Bom dia.", "src_lang": "en", "tgt_lang": "pt"},
        {"src": "Bom dia.", "tgt": "Good morning.", "src_lang": "pt", "tgt_lang": "en"},
    ]
    path = write_lines(tmp_path / "p.jsonl", pairs)
    stats = run_preprocess(
        make_cfg(tmp_path / "out", [{"name": "p", "kind": "parallel", "files": [str(path)]}])
    )
    assert stats["sources"]["p"]["kept"] == 1 and stats["sources"]["p"]["filtered"] == {"duplicate": 1}


def test_nfkc_and_length_filters(tmp_path, megatron_tokenizer):
    lines = [
        {"text": t, "lang": "en"} for t in ["ﬁnd the ﬁle ①", "", "   ", "tiny", "x" * 50, "just right here"]
    ]
    path = write_lines(tmp_path / "a.jsonl", lines)
    cfg = make_cfg(tmp_path / "out", [_mono(path)], **{"filters.normalize": "NFKC", "filters.min_chars": 5,
                                                        "filters.max_chars": 40})  # fmt: skip
    stats = run_preprocess(cfg)
    assert stats["sources"]["m"]["filtered"] == {"empty": 2, "too_short": 1, "too_long": 1}
    assert stats["sources"]["m"]["filtered_by_tag"] == {"en": {"empty": 2, "too_short": 1, "too_long": 1}}
    texts = [
        megatron_tokenizer.detokenize(d[:-1].tolist()) for d in read_docs(tmp_path / "out" / "m" / "en.train")
    ]
    assert texts == ["find the file 1", "just right here"]


def test_length_ratio_filter_counts_bytes(tmp_path):
    pairs = [
        {
            "src": "Yes",
            "tgt": "Sim, claro, com todo o prazer do mundo inteiro",
            "src_lang": "en",
            "tgt_lang": "pt",
        },
        {"src": "Human rights", "tgt": "人权", "src_lang": "en", "tgt_lang": "zh"},  # 12 vs 6 bytes: kept
    ]
    path = write_lines(tmp_path / "p.jsonl", pairs)
    src = {"name": "p", "kind": "parallel", "files": [str(path)]}
    stats = run_preprocess(make_cfg(tmp_path / "out", [src], **{"filters.max_length_ratio": 3.0}))
    assert stats["sources"]["p"]["filtered_by_tag"] == {"en-pt": {"length_ratio": 1}}
    assert stats["sources"]["p"]["kept"] == 1


def test_language_id_filter(tmp_path):
    lines = [{"text": DE, "lang": "de"}, {"text": DE + " ", "lang": "en"}, {"text": "Kurz.", "lang": "en"}]
    path = write_lines(tmp_path / "a.jsonl", lines)
    stats = run_preprocess(make_cfg(tmp_path / "out", [_mono(path)], **{"filters.langid.enabled": "true"}))
    # German declared as English is dropped; the short text is too short to judge and is kept.
    assert stats["sources"]["m"]["filtered_by_tag"] == {"en": {"langid": 1}}
    assert stats["sources"]["m"]["kept"] == 2
    stats = run_preprocess(make_cfg(tmp_path / "out", [_mono(path)]))
    assert stats["sources"]["m"]["kept"] == 3  # off by default


def test_detector_and_language_tags():
    det = LanguageDetector(min_prob=0.5, min_chars=20)
    assert det.mismatch(DE, "de") is None and det.mismatch(EN, "en") is None
    assert det.mismatch(DE, "en") == "de"
    assert (
        det.mismatch("Alle mennesker er født frie og med samme menneskeverd og menneskerettigheter.", "nb")
        is None
    )
    assert standardize("eng") == "en" and standardize("pt_BR") == "pt-BR"
    assert display_name("pt-PT") == "Portuguese (Portugal)"


def test_held_out_split_follows_ids_across_sources(tmp_path):
    ids = [f"doc{i}" for i in range(60)]
    mono = write_lines(
        tmp_path / "m.jsonl", [{"id": i, "text": f"Text {i} in English.", "lang": "en"} for i in ids]
    )
    par = write_lines(tmp_path / "p.jsonl", [{"id": i, "src": f"Text {i}.", "tgt": f"Texto {i}.", "src_lang": "en",
                                              "tgt_lang": "pt"} for i in ids])  # fmt: skip
    sources = [_mono(mono), {"name": "p", "kind": "parallel", "files": [str(par)], "templates": ["codes"]}]
    stats = run_preprocess(make_cfg(tmp_path / "out", sources, valid_fraction=0.2, test_fraction=0.1))
    mono_out, par_out = stats["sources"]["m"]["outputs"]["en"], stats["sources"]["p"]["outputs"]
    assert set(mono_out) == {"train", "valid", "test"}
    for split in ("train", "valid", "test"):
        # The same ids are held out of the mono data and of both directions of the pairs.
        assert (
            mono_out[split]["documents"]
            == par_out["en-pt"][split]["documents"]
            == par_out["pt-en"][split]["documents"]
        )
    assert 3 <= mono_out["valid"]["documents"] <= 24 and mono_out["train"]["documents"] >= 30
