"""Wrong input is an error naming file, line and field, or a counted skip; never a traceback,
never a silently shorter or altered corpus (issue 14 items 4 and 5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import zstandard

from tower_megatron.config.data import TokenizerConfig
from tower_megatron.config.loader import ConfigError, load_config
from tower_megatron.config.preprocess import PreprocessConfig, SourceConfig
from tower_megatron.data.preprocess import run_preprocess
from tower_megatron.data.readers import InputError
from tower_megatron.resources import DEMO_TOKENIZER

GOOD = {"text": "All human beings are born free and equal.", "lang": "en"}


def _cfg(out: Path, sources: list[dict], *overrides: str) -> PreprocessConfig:
    cfg = load_config(
        PreprocessConfig, None, [f"output_dir={out}", "workers=1", "progress=false", *overrides]
    )
    cfg.tokenizer = TokenizerConfig(path=DEMO_TOKENIZER)
    cfg.sources = [SourceConfig(**s) for s in sources]
    return cfg


def _mono(path: Path, **opts) -> dict:
    return {"name": "src", "kind": "mono", "files": [str(path)], **opts}


def _jsonl(records: list[dict], start: int) -> bytes:
    return b"".join(
        json.dumps({**r, "text": f"{r['text']} {start + i}"}).encode() + b"\n" for i, r in enumerate(records)
    )


def test_zstd_cut_inside_a_later_frame(tmp_path):
    """Three frames (as `zstd` writes for concatenated or streamed input); the file ends in the
    middle of the third. python-zstandard's stream reader returned the first two silently."""
    frames = [zstandard.ZstdCompressor().compress(_jsonl([GOOD] * 100, 100 * f)) for f in range(3)]
    path = tmp_path / "in" / "cut.jsonl.zst"
    path.parent.mkdir()
    path.write_bytes(b"".join(frames)[: len(frames[0]) + len(frames[1]) + len(frames[2]) // 2])
    with pytest.raises(InputError, match=r"truncated") as info:
        run_preprocess(_cfg(tmp_path / "out", [_mono(path)]))
    assert info.value.reason == "corrupt_file" and str(info.value).startswith(f"{path}:")
    assert not (tmp_path / "out").exists()
    # The whole file reads completely: all 300 lines.
    path.write_bytes(b"".join(frames))
    stats = run_preprocess(_cfg(tmp_path / "out", [_mono(path)]))
    assert stats["sources"]["src"]["lines"] == 300 and stats["sources"]["src"]["kept"] == 300


@pytest.mark.parametrize("fmt", ["jsonl", "tsv"])
def test_byte_order_mark_is_not_part_of_the_first_record(tmp_path, fmt):
    if fmt == "jsonl":
        body = _jsonl([GOOD] * 3, 0)
        source = lambda p: _mono(p)
    else:
        body = b"Good morning.\tBom dia.\nThank you.\tObrigado.\n"
        source = lambda p: {"name": "src", "kind": "parallel", "files": [str(p)], "src_lang": "en",
                            "tgt_lang": "pt", "templates": ["plain"]}  # fmt: skip
    plain, bom = tmp_path / f"plain.{fmt}", tmp_path / f"bom.{fmt}"
    plain.write_bytes(body)
    bom.write_bytes(b"\xef\xbb\xbf" + body)
    run_preprocess(_cfg(tmp_path / "a", [source(plain)]))
    run_preprocess(_cfg(tmp_path / "b", [source(bom)]))
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a" / "src").iterdir())
    assert files
    for rel in files:  # byte-identical token files: the mark changed nothing
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_unknown_format_is_a_config_error(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(_jsonl([GOOD], 0))
    with pytest.raises(
        ConfigError, match=r"sources\[0\]\.format: unknown format 'csv'; known: auto, jsonl, tsv"
    ):
        run_preprocess(_cfg(tmp_path / "out", [_mono(path, format="csv")]))
    assert not (tmp_path / "out").exists()


# Records whose fields have types no check anticipated, each on line 2 after a good line.
WRONG_TYPES = [
    ("lang_is_list", '{"text": "Some text here.", "lang": ["en"]}', "wrong_type", "lang", "mono"),
    ("lang_is_object", '{"text": "Some text here.", "lang": {"code": "en"}}', "wrong_type", "lang", "mono"),
    ("src_lang_is_list", '{"src": "Hello.", "tgt": "Olá.", "src_lang": ["en"], "tgt_lang": "pt"}', "wrong_type",
     "src_lang", "parallel"),
    ("deeply_nested", '{"text": ' + "[" * 100000 + "]" * 100000 + ', "lang": "en"}', "malformed_json", None, "mono"),
    ("huge_integer", '{"text": "Some text.", "lang": "en", "id": ' + "9" * 5000 + "}", "malformed_json", None, "mono"),
]  # fmt: skip


def _first_line(kind: str) -> str:
    if kind == "parallel":
        return json.dumps({"src": "Good morning.", "tgt": "Bom dia.", "src_lang": "en", "tgt_lang": "pt"})
    return json.dumps(GOOD)


def _src(path: Path, kind: str) -> dict:
    return {
        "name": "src",
        "kind": kind,
        "files": [str(path)],
        **({"templates": ["plain"]} if kind == "parallel" else {}),
    }


@pytest.mark.parametrize("case", WRONG_TYPES, ids=[c[0] for c in WRONG_TYPES])
def test_wrong_json_types_are_located_errors_or_counted_skips(tmp_path, case):
    _, line, reason, field, kind = case
    path = tmp_path / "in.jsonl"
    path.write_text(_first_line(kind) + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(InputError) as info:
        run_preprocess(_cfg(tmp_path / "out", [_src(path, kind)]))
    assert str(info.value).startswith(f"{path}:2: ") and info.value.reason == reason
    if field:
        assert f"field '{field}'" in str(info.value)
    stats = run_preprocess(_cfg(tmp_path / "out", [_src(path, kind)], "on_error=skip"))
    assert stats["sources"]["src"]["errors"] == {reason: 1}
    assert stats["sources"]["src"]["kept"] == 1


PREPROCESS_BAD = [
    ("workers=-1", "workers=-1 must be ≥ 0 (0: one per CPU core)"),
    ("batch_size=0", "batch_size=0 must be ≥ 1"),
    ("filters.min_chars=-3", "filters.min_chars=-3 must be ≥ 0"),
    ("filters.max_length_ratio=0.5", "filters.max_length_ratio=0.5 must be 0 (off) or ≥ 1"),
    ("filters.langid.min_prob=1.5", "filters.langid.min_prob=1.5 must be in [0, 1]"),
    ("filters.normalize=NFD", "filters.normalize='NFD' is not one of NFC, NFKC, none"),
]


@pytest.mark.parametrize("override,message", PREPROCESS_BAD, ids=[o for o, _ in PREPROCESS_BAD])
def test_preprocess_settings_out_of_range(tmp_path, override, message):
    path = tmp_path / "a.jsonl"
    path.write_bytes(_jsonl([GOOD], 0))
    with pytest.raises(ConfigError) as info:
        run_preprocess(_cfg(tmp_path / "out", [_mono(path)], override))
    assert str(info.value) == message
    assert not (tmp_path / "out").exists()


def test_template_weights_must_match_templates(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(_first_line("parallel") + "\n", encoding="utf-8")
    src = {**_src(path, "parallel"), "templates": ["plain", "tower"], "template_weights": [1.0]}
    with pytest.raises(ConfigError, match=r"sources\[0\]\.template_weights has 1 entries for 2 templates"):
        run_preprocess(_cfg(tmp_path / "out", [src]))


@pytest.mark.parametrize("content", [b"", b"not a sentencepiece model"])
def test_empty_or_corrupt_tokenizer(tmp_path, content):
    tok = tmp_path / "broken.model"
    tok.write_bytes(content)
    path = tmp_path / "a.jsonl"
    path.write_bytes(_jsonl([GOOD], 0))
    cfg = _cfg(tmp_path / "out", [_mono(path)])
    cfg.tokenizer = TokenizerConfig(path=str(tok))
    with pytest.raises(ConfigError, match=rf"^tokenizer.path: cannot load {tok} \(sentencepiece\): "):
        run_preprocess(cfg)
    assert not (tmp_path / "out").exists()


def test_output_dir_that_is_a_file(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(_jsonl([GOOD], 0))
    blocker = tmp_path / "out"
    blocker.write_text("mine")
    with pytest.raises(ConfigError, match=rf"^output_dir: {blocker} exists and is not a directory$"):
        run_preprocess(_cfg(blocker, [_mono(path)]))
    assert blocker.read_text() == "mine"
