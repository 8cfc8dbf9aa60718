"""``utils.jsonl.iter_jsonl``, the one reader of record files for verbs (GRPO prompts, ``generate``
input, test sets): blank lines skipped, a byte-order mark and gzip read, every problem one
``ConfigError`` naming file and line."""

from __future__ import annotations

import gzip
import json

import pytest

from tower_megatron.config.loader import ConfigError
from tower_megatron.utils.jsonl import iter_jsonl


def test_records_with_their_line_numbers(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n\n  \n{"b": "\xc3\xa9"}\r\n')
    assert list(iter_jsonl(path, "input")) == [(1, {"a": 1}), (4, {"b": "é"})]
    packed = tmp_path / "r.jsonl.gz"
    packed.write_bytes(gzip.compress(path.read_bytes()))
    assert list(iter_jsonl(packed, "input")) == [(1, {"a": 1}), (4, {"b": "é"})]


def test_a_packaged_resource_is_read_by_name():
    first = next(iter_jsonl("resource:eval/chat_demo.jsonl", "chat.files"))
    from tower_megatron.resources import resource_path

    line = resource_path("eval/chat_demo.jsonl").read_text(encoding="utf-8").splitlines()[0]
    assert first == (1, json.loads(line))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"a": 1}\n{"a": \n', ":2: invalid JSON (Expecting value)"),
        (b'{"a": 1}\n[1, 2]\n', ":2: expected a JSON object, got list"),
        (b'{"a": 1}\n\n{"a": "\xff"}\n', ":3: not UTF-8 text (invalid start byte at byte 7)"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        list(iter_jsonl(path, "input"))
    assert str(info.value) == f"{path}{message}"


def test_missing_file_names_the_setting(tmp_path):
    with pytest.raises(ConfigError) as info:
        list(iter_jsonl(tmp_path / "nope.jsonl", "grpo.prompts"))
    assert str(info.value) == f"grpo.prompts: no such file: {tmp_path / 'nope.jsonl'}"
