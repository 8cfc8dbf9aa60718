"""Malformed SFT and preference records: an error naming file, line and field (nothing written), or
with on_error=skip a counted skip — the same contract as the CPT data (test_malformed.py)."""

from __future__ import annotations

import pytest
from data_helpers import make_cfg, write_lines

from tower_megatron.data.preprocess import run_preprocess
from tower_megatron.data.readers import InputError

U = {"role": "user", "content": "Hello there"}
A = {"role": "assistant", "content": "Hi!"}
GOOD_SFT = {"messages": [U, A]}
GOOD_PREF = {"prompt": "Translate: gato", "chosen": "cat", "rejected": "dog"}
SFT, PREF = {"kind": "sft"}, {"kind": "preference"}

# (id, source options, bad line (line 2), reason, field named in the message)
CASES = [
    ("missing_role", SFT, {"messages": [{"content": "x"}, A]}, "unknown_role", "messages[0].role"),
    ("unknown_role", SFT, {"messages": [U, {"role": "bot", "content": "x"}]}, "unknown_role", "messages[1].role"),
    ("empty_assistant", SFT, {"messages": [U, {"role": "assistant", "content": ""}]}, "empty_turn",
     "messages[1].content"),
    ("whitespace_assistant", SFT, {"messages": [U, {"role": "assistant", "content": " \n"}]}, "empty_turn",
     "messages[1].content"),
    ("content_not_string", SFT, {"messages": [U, {"role": "assistant", "content": ["x"]}]}, "wrong_type",
     "messages[1].content"),
    ("no_assistant_turn", SFT, {"messages": [U]}, "no_assistant_turn", "messages"),
    ("ends_with_user", SFT, {"messages": [U, A, U]}, "bad_roles", "messages[2].role"),
    ("two_user_turns", SFT, {"messages": [U, U, A]}, "bad_roles", "messages[1].role"),
    ("system_not_first", SFT, {"messages": [U, {"role": "system", "content": "s"}, A]}, "bad_roles",
     "messages[1].role"),
    ("messages_not_list", SFT, {"messages": {"role": "user"}}, "bad_messages", "messages"),
    ("message_not_object", SFT, {"messages": [U, "Hi!"]}, "bad_messages", "messages[1]"),
    ("no_known_fields", SFT, {"text": "hello"}, "missing_field", "messages"),
    ("prompt_without_completion", SFT, {"prompt": "hi"}, "missing_field", "completion"),
    ("completion_not_string", SFT, {"prompt": "hi", "completion": 3}, "wrong_type", "completion"),
    ("nemo_unknown_from", SFT, {"conversations": [{"from": "Robot", "value": "x"}]}, "unknown_role",
     "conversations[0].from"),
    ("nemo_mask", SFT, {"mask": "Assistant", "conversations": [{"from": "User", "value": "x"}]}, "unsupported",
     "mask"),
    ("nemo_value_missing", SFT, {"conversations": [{"from": "User", "value": "x"}, {"from": "Assistant"}]},
     "missing_field", "conversations[1].value"),
    ("chosen_equals_rejected", PREF, {"prompt": "p", "chosen": "same", "rejected": "same"}, "identical_responses",
     "rejected"),
    ("pref_missing_rejected", PREF, {"prompt": "p", "chosen": "a"}, "missing_field", "rejected"),
    ("pref_missing_prompt", PREF, {"chosen": "a", "rejected": "b"}, "missing_field", "prompt"),
    ("pref_prompt_number", PREF, {"prompt": 7, "chosen": "a", "rejected": "b"}, "wrong_type", "prompt"),
    ("pref_empty_chosen", PREF, {"prompt": "p", "chosen": "", "rejected": "b"}, "empty_turn", "chosen.content"),
    ("pref_chosen_two_messages", PREF, {"prompt": "p", "chosen": [A, A], "rejected": "b"}, "bad_messages", "chosen"),
    ("pref_nemo_missing", PREF, {"prompt": "p", "chosen_response": "a"}, "missing_field", "rejected_response"),
    ("pref_prompt_ends_with_assistant", PREF, {"prompt": [U, A], "chosen": "a", "rejected": "b"}, "bad_roles",
     "chosen.role"),
    ("lang_unknown", SFT, {**GOOD_SFT, "lang": "xx"}, "unknown_language", "lang"),
]  # fmt: skip


def _run(tmp_path, opts, bad, **kw):
    good = GOOD_PREF if opts["kind"] == "preference" else GOOD_SFT
    path = write_lines(tmp_path / "in" / "a.jsonl", [good, bad])
    return path, run_preprocess(
        make_cfg(tmp_path / "out", [{"name": "src", "files": [str(path)], **opts}], **kw)
    )


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_record_raises_with_location(tmp_path, case):
    _, opts, bad, reason, field = case
    with pytest.raises(InputError) as info:
        _run(tmp_path, opts, bad)
    msg = str(info.value)
    assert msg.startswith(f"{tmp_path / 'in' / 'a.jsonl'}:2: field '{field}': "), msg
    assert info.value.reason == reason
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # nothing written


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_record_is_a_counted_skip(tmp_path, case):
    _, opts, bad, reason, _ = case
    path, stats = _run(tmp_path, opts, bad, on_error="skip")
    src = stats["sources"]["src"]
    assert src["errors"] == {reason: 1} and src["kept"] == 1
    assert stats["error_examples"][0].startswith(f"{path}:2: ")


def test_chat_format_bos_missing_from_tokenizer(tmp_path):
    """Gemma's format starts with <bos>; a tokenizer without it is a config error before any output."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from tower_megatron.config.data import TokenizerConfig
    from tower_megatron.config.loader import ConfigError

    tok = Tokenizer(models.WordLevel({"hello": 0, "[UNK]": 1, "</s>": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="[UNK]").save_pretrained(
        tmp_path / "tok"
    )
    path = write_lines(tmp_path / "in" / "a.jsonl", [GOOD_SFT])
    cfg = make_cfg(tmp_path / "out", [{"name": "src", "kind": "sft", "files": [str(path)]}])
    cfg.tokenizer = TokenizerConfig(type="huggingface", path=str(tmp_path / "tok"))
    with pytest.raises(
        ConfigError, match="chat format 'gemma' starts with '<bos>', which the tokenizer .* lacks"
    ):
        run_preprocess(cfg)
    assert not (tmp_path / "out").exists()
