"""Bad input → an error naming file, line and field (nothing written), or with on_error=skip a
counted skip. Bad configs → ConfigError naming the key."""

from __future__ import annotations

import gzip
import json

import pytest
from data_helpers import make_cfg, write_lines

from tower_megatron.config.loader import ConfigError
from tower_megatron.data.preprocess import run_preprocess
from tower_megatron.data.readers import InputError

GOOD_MONO = {"text": "A perfectly good line of text.", "lang": "en"}
GOOD_PAIR = {"src": "Good morning to you all.", "tgt": "Bom dia a todos.", "src_lang": "en", "tgt_lang": "pt"}
GOOD_CHAT = {
    "lang": "en",
    "messages": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}],
}
PAIR_SRC = {"kind": "parallel", "templates": ["plain"]}

# (id, file name, lines (the bad one is line 2), source options, reason, field in the message)
CASES = [
    ("malformed_json", "a.jsonl", [GOOD_MONO, '{"text": "unclosed", "lang": "en"'], {}, "malformed_json", None),
    ("invalid_utf8", "a.jsonl", [GOOD_MONO, b'{"text": "caf\xe9", "lang": "en"}'], {}, "invalid_utf8", None),
    ("not_an_object", "a.jsonl", [GOOD_MONO, '["text", "en"]'], {}, "not_an_object", None),
    ("missing_text", "a.jsonl", [GOOD_MONO, {"lang": "en"}], {}, "missing_field", "text"),
    ("text_not_string", "a.jsonl", [GOOD_MONO, {"text": 42, "lang": "en"}], {}, "wrong_type", "text"),
    ("unknown_language", "a.jsonl", [GOOD_MONO, {"text": "Some text here", "lang": "xx"}], {}, "unknown_language", "lang"),
    ("missing_language", "a.jsonl", [GOOD_MONO, {"text": "Some text here"}], {}, "missing_field", "lang"),
    ("language_mismatch", "a.jsonl", [GOOD_MONO, {"text": "Algum texto aqui", "lang": "pt"}], {"lang": "en"},
     "language_mismatch", "lang"),
    ("unpaired_surrogate", "a.jsonl", [GOOD_MONO, '{"text": "bad \\ud800 text", "lang": "en"}'], {}, "invalid_text", "text"),
    ("id_wrong_type", "a.jsonl", [GOOD_MONO, {"text": "Some text", "lang": "en", "id": [1]}], {}, "wrong_type", "id"),
    ("pair_missing_tgt", "p.jsonl", [GOOD_PAIR, {"src": "Hello", "src_lang": "en", "tgt_lang": "pt"}], PAIR_SRC,
     "missing_field", "tgt"),
    ("pair_same_language", "p.jsonl", [GOOD_PAIR, {**GOOD_PAIR, "tgt_lang": "en"}], PAIR_SRC, "same_language", "tgt_lang"),
    ("pair_bad_src_lang", "p.jsonl", [GOOD_PAIR, {**GOOD_PAIR, "src_lang": "klingon"}], PAIR_SRC,
     "unknown_language", "src_lang"),
    ("tsv_wrong_columns", "p.tsv", ["Good morning\tBom dia", "only one column"],
     {**PAIR_SRC, "src_lang": "en", "tgt_lang": "pt"}, "wrong_columns", "columns"),
    ("chat_messages_not_list", "c.jsonl", [GOOD_CHAT, {"lang": "en", "messages": "hi"}], {"kind": "instruction"},
     "bad_messages", "messages"),
    ("chat_empty_messages", "c.jsonl", [GOOD_CHAT, {"lang": "en", "messages": []}], {"kind": "instruction"},
     "bad_messages", "messages"),
    ("chat_unknown_role", "c.jsonl", [GOOD_CHAT, {"lang": "en", "messages": [{"role": "user", "content": "a"},
     {"role": "robot", "content": "b"}]}], {"kind": "instruction"}, "unknown_role", "messages[1].role"),
    ("chat_content_not_string", "c.jsonl", [GOOD_CHAT, {"lang": "en", "messages": [{"role": "user", "content": None}]}],
     {"kind": "instruction"}, "wrong_type", "messages[0].content"),
    ("chat_missing_messages", "c.jsonl", [GOOD_CHAT, {"lang": "en", "text": "hello"}], {"kind": "instruction"},
     "missing_field", "messages"),
]  # fmt: skip


def _source(path, opts):
    return {"name": "src", "kind": "mono", "files": [str(path)], **opts}


def _no_output(tmp_path):
    """Nothing but the inputs: no output directory, no staging leftovers."""
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "in"]
    assert leftovers == [], leftovers


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_line_raises_with_location(tmp_path, case):
    _, fname, lines, opts, reason, field = case
    path = write_lines(tmp_path / "in" / fname, lines)
    with pytest.raises(InputError) as info:
        run_preprocess(make_cfg(tmp_path / "out", [_source(path, opts)]))
    msg = str(info.value)
    assert msg.startswith(f"{path}:2: "), msg
    assert info.value.reason == reason
    if field:
        assert f"field '{field}'" in msg
    _no_output(tmp_path)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_line_is_a_counted_skip(tmp_path, case):
    _, fname, lines, opts, reason, _ = case
    path = write_lines(tmp_path / "in" / fname, lines)
    stats = run_preprocess(make_cfg(tmp_path / "out", [_source(path, opts)], on_error="skip"))
    src = stats["sources"]["src"]
    assert src["errors"] == {reason: 1} and src["kept"] == 1
    assert stats["totals"]["errors"] == {reason: 1}
    assert stats["error_examples"][0].startswith(f"{path}:2: ")


def test_empty_file(tmp_path):
    empty = write_lines(tmp_path / "in" / "empty.jsonl.gz", [])
    blank = write_lines(tmp_path / "in" / "blank.jsonl", ["", "   "])
    for path in (empty, blank):
        with pytest.raises(InputError, match=rf"^{path}: file is empty"):
            run_preprocess(make_cfg(tmp_path / "out", [_source(path, {})]))
    _no_output(tmp_path)
    stats = run_preprocess(make_cfg(tmp_path / "out", [_source(empty, {})], on_error="skip"))
    assert stats["sources"]["src"]["errors"] == {"empty_file": 1}


def test_corrupt_gzip(tmp_path):
    data = gzip.compress(b"".join(json.dumps(GOOD_MONO).encode() + b"\n" for _ in range(50)))
    path = tmp_path / "in" / "cut.jsonl.gz"
    path.parent.mkdir()
    path.write_bytes(data[: len(data) // 2])  # truncated download
    with pytest.raises(InputError, match=rf"^{path}:\d+: cannot decompress") as info:
        run_preprocess(make_cfg(tmp_path / "out", [_source(path, {})]))
    assert info.value.reason == "corrupt_file"
    _no_output(tmp_path)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        run_preprocess(make_cfg(tmp_path / "out", [_source(tmp_path / "in" / "nope*.jsonl", {})]))


def test_error_after_many_written_documents_leaves_nothing(tmp_path):
    """The bad line comes after a full chunk was already written to the staging files."""
    lines = [{"text": f"Document number {i}.", "lang": "en"} for i in range(40)] + ['{"text": oops}']
    path = write_lines(tmp_path / "in" / "late.jsonl", lines)
    with pytest.raises(InputError, match=rf"^{path}:41: malformed JSON"):
        run_preprocess(make_cfg(tmp_path / "out", [_source(path, {})], batch_size=8))
    _no_output(tmp_path)


def test_failed_rerun_keeps_previous_output(tmp_path):
    good = write_lines(tmp_path / "in" / "good.jsonl", [GOOD_MONO])
    out = tmp_path / "out"
    run_preprocess(make_cfg(out, [_source(good, {})]))
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad = write_lines(tmp_path / "in" / "bad.jsonl", [GOOD_MONO, "{"])
    with pytest.raises(InputError):
        run_preprocess(make_cfg(out, [_source(bad, {})]))
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


@pytest.mark.parametrize(
    "opts, match",
    [
        (
            {"kind": "monolingual"},
            r"sources\[0\]\.kind: unknown kind 'monolingual'; known: mono, parallel, instruction",
        ),
        (
            {"kind": "parallel", "templates": ["towr"]},
            r"unknown translation template 'towr'\. Did you mean 'tower'\?",
        ),
        ({"lang": "english"}, r"sources\[0\]\.lang: unknown language code 'english'"),
        ({"name": "a/b"}, r"sources\[0\]\.name: 'a/b' must be a file-name-safe word"),
        ({"kind": "parallel", "directions": "sideways"}, r"sources\[0\]\.directions"),
        ({"columns": ["src", "target"]}, r"sources\[0\]\.columns: unknown column 'target'"),
        ({"valid_fraction": 1.5}, r"valid_fraction \+ test_fraction must be in \[0, 1\)"),
    ],
)
def test_bad_source_config(tmp_path, opts, match):
    path = write_lines(tmp_path / "in" / "a.jsonl", [GOOD_MONO])
    with pytest.raises(ConfigError, match=match):
        run_preprocess(make_cfg(tmp_path / "out", [_source(path, opts)]))
    _no_output(tmp_path)


def test_bad_job_config(tmp_path):
    from tower_megatron.config.loader import load_config
    from tower_megatron.config.preprocess import PreprocessConfig

    with pytest.raises(
        ConfigError, match=r"unknown config key 'filters.dedupe'.*Did you mean 'filters.dedup'"
    ):
        load_config(PreprocessConfig, None, ["filters.dedupe=false"])
    path = write_lines(tmp_path / "in" / "a.jsonl", [GOOD_MONO])
    with pytest.raises(ConfigError, match=r"unknown chat format 'gemma2'\. Did you mean 'gemma'"):
        run_preprocess(make_cfg(tmp_path / "out", [_source(path, {})], chat_format="gemma2"))
    with pytest.raises(ConfigError, match="duplicate source name 'src'"):
        run_preprocess(make_cfg(tmp_path / "out", [_source(path, {}), _source(path, {})]))
    with pytest.raises(ConfigError, match="on_error must be 'raise' or 'skip'"):
        run_preprocess(make_cfg(tmp_path / "out", [_source(path, {})], on_error="ignore"))
