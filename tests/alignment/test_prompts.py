"""GRPO prompt sets: the embedded sets are what ``tools/build_grpo_prompts.py`` generates, every
record loads with a valid reward spec, the references score as they must under the real rewards,
and malformed prompt files fail with one ``file:line: field`` ConfigError."""

from __future__ import annotations

import importlib.util
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from tower_megatron.alignment.prompts import load_prompts
from tower_megatron.config.loader import ConfigError
from tower_megatron.resources import resource_path
from tower_megatron.rewards import score

REPO = Path(__file__).resolve().parents[2]
SETS = {  # file -> (reward type, prompts, languages)
    "math.jsonl": ("math", 132, 12),
    "ifeval.jsonl": ("ifeval", 144, 8),
    "translation.jsonl": ("translation", 84, 22),
    "toy_letter_e.jsonl": ("ifeval", 16, 0),
}


def _tool():
    spec = importlib.util.spec_from_file_location(
        "build_grpo_prompts", REPO / "tools" / "build_grpo_prompts.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _records(name: str) -> list[dict]:
    return [
        json.loads(line)
        for line in resource_path(f"corpus/grpo/{name}").read_text(encoding="utf-8").splitlines()
    ]


def test_embedded_sets_are_what_the_tool_generates():
    built = _tool().build_all()
    on_disk = {p.name for p in resource_path("corpus/grpo").iterdir()}
    assert set(built) == set(SETS) == on_disk
    for name, text in built.items():
        assert resource_path(f"corpus/grpo/{name}").read_text(encoding="utf-8") == text, name


@pytest.mark.parametrize("name", sorted(SETS))
def test_every_embedded_record_loads_with_its_reward(name):
    kind, count, languages = SETS[name]
    prompts = load_prompts([f"resource:corpus/grpo/{name}"])
    assert len(prompts) == count
    assert {p.reward["type"] for p in prompts} == {kind}
    assert all(p.messages[-1]["role"] == "user" for p in prompts)
    assert len({p.lang for p in prompts} - {None}) == languages
    assert prompts[0].source == f"resource:corpus/grpo/{name}:1"


def test_math_prompts_carry_the_answer_of_their_worked_solution():
    """The corpus's own worked solution of every problem scores 1 under the math reward (and the
    answer + 1 scores 0): the extracted answer is the solution's."""
    chats = {}
    for line in resource_path("corpus/instruction/chat.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        chats[f"{record.get('id')}/{record['lang']}"] = record["messages"]
    records = _records("math.jsonl")
    for record in records:
        solution = chats[record["id"]][-1]["content"]
        assert record["messages"] == chats[record["id"]][:1]
        assert score(solution, record["reward"]).value == 1.0, record["id"]
    wrong = re.sub(r"\\boxed\{([^{}]*)\}", lambda m: f"\\boxed{{{int(m.group(1)) + 1}}}",
                   chats[records[0]["id"]][-1]["content"])  # fmt: skip
    assert score(wrong, records[0]["reward"]).value == 0.0
    # The untranslated upstream problems (English text under es/pl) are left out.
    assert Counter(r["lang"] for r in records)["es"] == 4


def test_translation_references_score_one_and_source_copies_zero():
    for record in _records("translation.jsonl"):
        spec = record["reward"]
        assert spec["target_lang"] == record["lang"]
        assert spec["source"] in record["messages"][0]["content"]
        assert score(spec["reference"], spec, lang=record["lang"]).value == 1.0, record["id"]
        assert score(spec["source"], spec, lang=record["lang"]).value == 0.0, record["id"]


def test_ifeval_prompts_ask_for_what_their_reward_checks():
    records = _records("ifeval.jsonl")
    assert (
        Counter(r["reward"]["instruction_id_list"][0] for r in records)["length_constraints:number_words"]
        == 32
    )
    for record in records:
        text, kwargs = record["messages"][0]["content"], record["reward"]["kwargs"][0]
        for value in (kwargs.get("num_words"), kwargs.get("num_bullets"), kwargs.get("postscript_marker"),
                      *kwargs.get("keywords", [])):  # fmt: skip
            if value is not None:
                assert str(value) in text, record["id"]
    # A response meeting the constraint passes the real checker, one breaking it fails.
    [no_comma] = [r for r in records if r["id"].endswith("/zh/no_comma")][:1]
    spec = no_comma["reward"]
    assert score("这段文字说每个人都享有同样的权利与自由。", spec, lang="zh").value == 1.0
    assert score("这段文字说，每个人都享有同样的权利与自由。", spec, lang="zh").value == 0.0


def _write(tmp_path: Path, lines: list) -> str:
    path = tmp_path / "prompts.jsonl"
    path.write_text(
        "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), encoding="utf-8"
    )
    return str(path)


GOOD = {"prompt": "2 + 2?", "reward": {"type": "math", "answer": "4"}}
MALFORMED = [
    ('{"prompt": "2 + 2?", "reward": ', r":2: invalid JSON \(Expecting value\)"),
    ('["not", "an", "object"]', r":2: expected a JSON object, got list"),
    (
        {"prompt": 7, "reward": GOOD["reward"]},
        r":2: prompt: expected a non-empty string \(or give messages\)",
    ),
    ({"messages": "hi", "reward": GOOD["reward"]}, r":2: messages: expected a non-empty list"),
    (
        {"messages": [{"role": "user", "content": 3}], "reward": GOOD["reward"]},
        r":2: messages\[0\]\.content: expected a string",
    ),
    (
        {"messages": [{"role": "bot", "content": "x"}], "reward": GOOD["reward"]},
        r":2: messages\[0\]\.role: expected system, user or assistant, got 'bot'",
    ),
    (
        {
            "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
            "reward": GOOD["reward"],
        },
        r":2: messages: the last message must be the user's",
    ),
    (
        {
            "messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "r"}],
            "reward": GOOD["reward"],
        },
        r":2: messages\[1\]\.role: expected a assistant turn",
    ),
    ({"prompt": "q"}, r":2: reward: expected a mapping with a 'type', got NoneType"),
    (
        {"prompt": "q", "reward": {"type": "bleu"}},
        r":2: reward\.type: .*bleu.*code, combined, ifeval, math, translation",
    ),
    (
        {"prompt": "q", "reward": {"type": "math", "answer": "4", "format_weight": "high"}},
        r":2: reward\.format_weight: expected a number, got 'high'",
    ),
    (
        {
            "prompt": "q",
            "reward": {"type": "ifeval", "instruction_id_list": ["keywords:nope"], "kwargs": [{}]},
        },
        r":2: reward\.instruction_id_list\[0\]: unknown IFEval instruction 'keywords:nope'",
    ),
    (
        {"prompt": "q", "reward": {"type": "translation", "reference": "Olá", "target_lang": "xx-nope"}},
        r":2: reward\.target_lang: ",
    ),
    ({**GOOD, "lang": 5}, r":2: lang: expected a string, got 5"),
]


@pytest.mark.parametrize(("line", "message"), MALFORMED, ids=[m[1][4:30] for m in MALFORMED])
def test_malformed_prompt_files_name_file_line_and_field(tmp_path, line, message):
    path = _write(tmp_path, [GOOD, line])
    with pytest.raises(ConfigError, match="^" + re.escape(path) + message):
        load_prompts([path])


def test_missing_and_empty_prompt_files(tmp_path):
    with pytest.raises(ConfigError, match=r"^grpo\.prompts: no such file: .*nope\.jsonl$"):
        load_prompts([str(tmp_path / "nope.jsonl")])
    empty = _write(tmp_path, ["", "  "])
    with pytest.raises(ConfigError, match=r"^grpo\.prompts: no prompts in "):
        load_prompts([empty])
