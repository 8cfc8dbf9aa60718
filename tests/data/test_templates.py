"""Parallel pairs rendered by named templates in both directions; seeded template choice."""

from __future__ import annotations

import pytest
from data_helpers import make_cfg, read_docs, write_lines

from tower_megatron.data.preprocess import run_preprocess
from tower_megatron.data.templates import TRANSLATION_TEMPLATES, TemplatePicker, chatml_chat, gemma_chat
from tower_megatron.registry import UnknownNameError

PAIRS = [{"src": f"Sentence number {i}.", "tgt": f"Frase número {i}.", "src_lang": "en", "tgt_lang": "pt-PT"}
         for i in range(30)]  # fmt: skip


def _texts(out, prefix, tok):
    return [tok.detokenize(d[:-1].tolist()) for d in read_docs(out / prefix)]


def test_both_directions_and_named_templates(tmp_path, megatron_tokenizer):
    path = write_lines(tmp_path / "p.jsonl", PAIRS[:1])
    src = {"name": "p", "kind": "parallel", "files": [str(path)], "templates": ["tower"]}
    run_preprocess(make_cfg(tmp_path / "out", [src]))
    [fwd] = _texts(tmp_path / "out", "p/en-pt-PT.train", megatron_tokenizer)
    [bwd] = _texts(tmp_path / "out", "p/pt-PT-en.train", megatron_tokenizer)
    assert fwd == ("Translate the following English source text to Portuguese (Portugal):\n"
                   "English: Sentence number 0.\nPortuguese (Portugal): Frase número 0.")  # fmt: skip
    assert bwd == ("Translate the following Portuguese (Portugal) source text to English:\n"
                   "Portuguese (Portugal): Frase número 0.\nEnglish: Sentence number 0.")  # fmt: skip


@pytest.mark.parametrize("directions, tags", [("forward", ["en-pt-PT"]), ("backward", ["pt-PT-en"])])
def test_one_direction(tmp_path, directions, tags):
    path = write_lines(tmp_path / "p.jsonl", PAIRS[:3])
    src = {"name": "p", "kind": "parallel", "files": [str(path)], "directions": directions}
    stats = run_preprocess(make_cfg(tmp_path / "out", [src]))
    assert list(stats["sources"]["p"]["outputs"]) == tags


def test_seeded_choice_is_reproducible_and_uses_every_template(tmp_path, megatron_tokenizer):
    path = write_lines(tmp_path / "p.jsonl", PAIRS)
    src = {"name": "p", "kind": "parallel", "files": [str(path)], "templates": ["plain", "codes", "sentence"]}
    runs = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        run_preprocess(make_cfg(tmp_path / name, [src], seed=seed))
        runs[name] = _texts(tmp_path / name, "p/en-pt-PT.train", megatron_tokenizer)
    assert runs["a"] == runs["b"] and runs["a"] != runs["c"]
    starts = {t.split(" ")[0] for t in runs["a"]}
    assert starts == {"English:", "<en>", "English"}  # plain, codes, "English sentence: ..."


def test_picker_weights_and_unknown_template():
    picker = TemplatePicker(["plain", "tower"], [1.0, 0.0], seed=3)
    assert {picker.pick(str(i)).name for i in range(50)} == {"plain"}
    with pytest.raises(
        UnknownNameError,
        match=r"unknown translation template 'plian'\. Did you mean 'plain'\?.*Known: codes, plain",
    ):
        TRANSLATION_TEMPLATES.get("plian")
    with pytest.raises(ValueError, match="template_weights has 1 entries for 2 templates"):
        TemplatePicker(["plain", "tower"], [1.0])


def test_custom_template_from_config(tmp_path, megatron_tokenizer):
    path = write_lines(tmp_path / "p.jsonl", PAIRS[:1])
    cfg = make_cfg(tmp_path / "out", [{"name": "p", "kind": "parallel", "files": [str(path)], "templates": ["arrow"],
                                       "directions": "forward"}])  # fmt: skip
    cfg.templates = {"arrow": "{src} => [{tgt_lang}] {tgt}"}
    run_preprocess(cfg)
    assert _texts(tmp_path / "out", "p/en-pt-PT.train", megatron_tokenizer) == [
        "Sentence number 0. => [pt-PT] Frase número 0."
    ]
    cfg.templates = {"broken": "{source}"}
    from tower_megatron.config.loader import ConfigError

    with pytest.raises(ConfigError, match="templates.broken: .*bad pattern"):
        run_preprocess(cfg)


def test_chat_formats():
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"}]  # fmt: skip
    assert gemma_chat(msgs) == (
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello<end_of_turn>\n"
    )
    assert chatml_chat(msgs).startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi")
