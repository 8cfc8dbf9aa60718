"""One chat format per family: the training renderer and the Jinja template written into exported
tokenizers give identical token ids, and our assistant masks equal ``transformers``'
``return_assistant_tokens_mask`` — checked with ``apply_chat_template`` on a tiny byte-level BPE
tokenizer (chat markers as special tokens) and on the demo sentencepiece model."""

from __future__ import annotations

import json

import jinja2
import pytest
from data_helpers import tokenizer_cfg

from tower_megatron.config.data import TokenizerConfig
from tower_megatron.data.chat_format import CHAT_FORMATS, ChatFormatError, format_for
from tower_megatron.data.sft_tokens import ChatEncoder
from tower_megatron.models.tokenizers import CHAT_TEMPLATES, ensure_chat_template

SPECIAL = ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", "<|im_start|>", "<|im_end|>"]

CONVERSATIONS = {
    "single": [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi!"}],
    "system_multi_turn": [
        {"role": "system", "content": "You are a translator."},
        {"role": "user", "content": "Translate to Portuguese: good morning"},
        {"role": "assistant", "content": "Bom dia"},
        {"role": "user", "content": "And to Chinese?"},
        {"role": "assistant", "content": "早上好"},
    ],
    "edge_whitespace": [
        {"role": "system", "content": "  padded system \n"},
        {"role": "user", "content": "\n\n  leading newlines and spaces  "},
        {"role": "assistant", "content": "  answer with spaces\n\n"},
        {"role": "user", "content": "\tTab"},
        {"role": "assistant", "content": "\n"},
    ],
    "non_latin": [
        {"role": "user", "content": "Переведи: 世界 🦜 नमस्ते"},
        {"role": "assistant", "content": "Мир 🌍, 안녕하세요 — «ok»"},
    ],
    "quotes_and_markup": [
        {"role": "user", "content": "Say {{ 'x' }} and \\n literally, it's \"quoted\""},
        {"role": "assistant", "content": "{% raw %} it's fine \\ done"},
    ],
}


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A tiny byte-level BPE tokenizer saved in HF format (no downloads)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    texts = [m["content"] for conv in CONVERSATIONS.values() for m in conv] + ["user model assistant system"]
    trainer = trainers.BpeTrainer(
        vocab_size=500, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts * 20, trainer)
    directory = tmp_path_factory.mktemp("hf_tok")
    PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>"
    ).save_pretrained(directory)
    return directory


def _hf(directory, template: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(directory))
    tok.chat_template = template
    return tok


def _spans(fmt, messages):
    return [(s, e, 1) for s, e in fmt.render(messages).spans]


@pytest.mark.parametrize("fmt_name", ["gemma", "chatml"])
@pytest.mark.parametrize("conv", list(CONVERSATIONS))
def test_renderer_and_exported_template_give_the_same_ids_and_masks(hf_dir, fmt_name, conv):
    fmt, messages = CHAT_FORMATS.get(fmt_name), CONVERSATIONS[conv]
    exported = _hf(hf_dir, CHAT_TEMPLATES.get(fmt_name))  # what an exported checkpoint carries
    marked = _hf(hf_dir, fmt.jinja(generation_markers=True))
    encoder = ChatEncoder(TokenizerConfig(type="huggingface", path=str(hf_dir)), fmt_name)
    ids, masks = encoder.encode_chats([fmt.render(messages).text], [_spans(fmt, messages)])

    text = exported.apply_chat_template(messages, tokenize=False)
    assert text == ("<bos>" if fmt.bos_token else "") + fmt.render(messages).text
    assert ids[0] == exported.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    want = marked.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    assert want["input_ids"] == ids[0]
    assert masks[0].tolist() == want["assistant_masks"]
    # The masked tokens are the assistant contents, each followed by its end-of-turn marker. An
    # answer starting with a newline merges with the role line's newline into one BPE token that
    # straddles the boundary; like transformers, it is learned (that one "\n" extra).
    learned = [i for i, m in zip(ids[0], masks[0], strict=True) if m]
    answers = [m["content"] + fmt.turn_end for m in messages if m["role"] == "assistant"]
    straddle = "\n" if conv == "edge_whitespace" else ""
    assert exported.decode(learned) == answers[0] + straddle + "".join(answers[1:])


@pytest.mark.parametrize("fmt_name", ["gemma", "chatml"])
def test_generation_prompt(hf_dir, fmt_name):
    fmt = CHAT_FORMATS.get(fmt_name)
    messages = CONVERSATIONS["system_multi_turn"][:2]
    tok = _hf(hf_dir, CHAT_TEMPLATES.get(fmt_name))
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == ("<bos>" if fmt.bos_token else "") + fmt.render(messages, add_generation_prompt=True).text


def test_decided_behaviour_exact_strings():
    """No default system prompt, no trimming, Gemma merges a system message into the first user turn."""
    msgs = [{"role": "system", "content": " Sys "}, {"role": "user", "content": " Hi "},
            {"role": "assistant", "content": " Yo "}]  # fmt: skip
    assert format_for("gemma2").render(msgs).text == (
        "<start_of_turn>user\n Sys \n\n Hi <end_of_turn>\n<start_of_turn>model\n Yo <end_of_turn>\n"
    )
    assert format_for("qwen2").render(msgs[1:]).text == (
        "<|im_start|>user\n Hi <|im_end|>\n<|im_start|>assistant\n Yo <|im_end|>\n"
    )
    rendered = format_for("chatml").render(msgs)
    assert [rendered.text[s:e] for s, e in rendered.spans] == [" Yo <|im_end|>"]


BAD_ORDERS = [
    ([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}], 1),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], 1),
    ([{"role": "assistant", "content": "a"}], 0),
    ([{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}], 1),
    ([{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}], 1),
]


@pytest.mark.parametrize("fmt_name", ["gemma", "chatml"])
@pytest.mark.parametrize("case", range(len(BAD_ORDERS)))
def test_bad_role_order_is_rejected_by_both(hf_dir, fmt_name, case):
    messages, index = BAD_ORDERS[case]
    with pytest.raises(ChatFormatError) as info:
        CHAT_FORMATS.get(fmt_name).render(messages)
    assert info.value.index == index
    with pytest.raises(jinja2.TemplateError):
        _hf(hf_dir, CHAT_TEMPLATES.get(fmt_name)).apply_chat_template(messages, tokenize=False)


def test_demo_sentencepiece_ids_and_masks():
    """The demo tokenizer (sentencepiece, byte fallback): the encoder's ids are the tokenizer's ids
    of the whole rendered text after BOS, and the mask decodes to exactly the answers."""
    import sentencepiece

    from tower_megatron.data.tokenizer import _resolve_path

    sp = sentencepiece.SentencePieceProcessor(model_file=_resolve_path(tokenizer_cfg()))
    fmt = CHAT_FORMATS.get("gemma")
    encoder = ChatEncoder(tokenizer_cfg(), "gemma", threads=1)
    for messages in CONVERSATIONS.values():
        ids, masks = encoder.encode_chats([fmt.render(messages).text], [_spans(fmt, messages)])
        assert ids[0] == [sp.bos_id(), *sp.encode(fmt.render(messages).text)]
        learned = [i for i, m in zip(ids[0], masks[0], strict=True) if m]
        assert sp.decode(learned) == "".join(
            m["content"] + "<end_of_turn>" for m in messages if m["role"] == "assistant"
        )


def test_export_writes_the_generated_template(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<bos>"}))
    assert ensure_chat_template(tmp_path, CHAT_TEMPLATES.get("gemma2"))
    written = json.loads((tmp_path / "tokenizer_config.json").read_text())["chat_template"]
    assert written == CHAT_FORMATS.get("gemma").jinja()
    assert "{% generation %}" not in written  # the plain template: other engines do not know that tag


@pytest.mark.parametrize("fmt_name", ["chatml", "gemma"])
def test_preprocessed_files_equal_apply_chat_template(hf_dir, tmp_path, fmt_name):
    """End to end through `tower-megatron preprocess` (sft kind, HF tokenizer): each stored
    document is apply_chat_template's ids, and its mask is transformers' assistant mask."""
    from data_helpers import make_cfg, read_docs, write_lines

    from tower_megatron.data.preprocess import run_preprocess

    # (a whitespace-only answer is a malformed SFT record: test_sft_malformed.py)
    convs = [
        c for c in CONVERSATIONS.values() if all(m["content"].strip() for m in c if m["role"] == "assistant")
    ]
    path = write_lines(tmp_path / "in" / "chats.jsonl", [{"messages": m} for m in convs])
    cfg = make_cfg(
        tmp_path / "out", [{"name": "s", "kind": "sft", "files": [str(path)]}], chat_format=fmt_name
    )
    cfg.tokenizer = TokenizerConfig(type="huggingface", path=str(hf_dir))
    run_preprocess(cfg)
    tokens = read_docs(tmp_path / "out/s/mul.train_text_document")
    masks = read_docs(tmp_path / "out/s/mul.train_mask_document")
    marked = _hf(hf_dir, CHAT_FORMATS.get(fmt_name).jinja(generation_markers=True))
    for ids, mask, messages in zip(tokens, masks, convs, strict=True):
        want = marked.apply_chat_template(
            messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        assert ids.tolist() == want["input_ids"]
        assert (mask > 0).astype(int).tolist() == want["assistant_masks"]


@pytest.mark.parametrize("fmt_name", ["gemma", "chatml"])
def test_encode_chat_equals_apply_chat_template(hf_dir, fmt_name):
    """``encode_chat`` (what generate, eval, serve and GRPO prompt with) gives the ids of
    transformers' ``apply_chat_template(add_generation_prompt=True)``, BOS included for Gemma."""
    from tower_megatron.data.chat_format import encode_chat
    from tower_megatron.data.tokenizer import build_tokenizer

    tokenizer = build_tokenizer(TokenizerConfig(type="huggingface", path=str(hf_dir)))
    reference = _hf(hf_dir, CHAT_TEMPLATES.get(fmt_name))
    for messages in CONVERSATIONS.values():
        prompt = messages[:-1]
        want = reference.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=True)
        assert encode_chat(prompt, tokenizer, fmt_name) == list(want["input_ids"])
        assert (want["input_ids"][0] == tokenizer.bos) == (fmt_name == "gemma")


CHECK_MESSAGES = [
    ("hi", "messages: expected a non-empty list of {role, content}"),
    ([], "messages: expected a non-empty list of {role, content}"),
    ([{"role": "user", "content": "a"}, "b"], "messages[1]: expected an object, got str"),
    ([{"role": "user", "content": 3}], "messages[0].content: expected a string"),
    ([{"role": "bot", "content": "a"}], "messages[0].role: expected system, user or assistant, got 'bot'"),
    ([{"content": "a"}], "messages[0].role: expected system, user or assistant, got None"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "messages[1].role: expected a assistant"),
]


@pytest.mark.parametrize(("messages", "message"), CHECK_MESSAGES)
def test_check_messages_names_the_offending_value(messages, message):
    from tower_megatron.data.chat_format import check_messages

    with pytest.raises(ChatFormatError) as info:
        check_messages(messages)
    assert f"{info.value.where('messages')}: {info.value}".startswith(message)


def test_check_messages_keeps_role_and_content_only():
    from tower_megatron.data.chat_format import check_messages

    messages = [{"role": "system", "content": "s", "name": "x"}, {"role": "user", "content": "u"}]
    assert check_messages(messages) == [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
