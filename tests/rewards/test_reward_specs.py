"""Reward specs: every problem is one message naming the field; combined rewards are the
weighted mean of their parts."""

from __future__ import annotations

import pytest

from tower_megatron.rewards import REWARDS, InvalidRewardSpecError, score, validate_spec


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "mth", "answer": "1"},
         "reward.type: unknown reward 'mth'. Did you mean 'math'? Known: code, combined, ifeval, math, translation"),
        ({"answer": "1"}, "reward.type: required field missing"),
        ("math", "reward: expected a mapping with a 'type', got str"),
        ({"type": "math"}, "reward.answer: required field missing"),
        ({"type": "math", "answer": "1", "anwser": "2"},
         "reward.anwser: unknown field for reward 'math' (known: answer, format_weight, require_format, type, weight)"),
        ({"type": "math", "answer": "1", "format_weight": 1.5}, "reward.format_weight: must be in [0, 1], got 1.5"),
        ({"type": "math", "answer": "1", "require_format": "yes"}, "reward.require_format: expected true/false, got 'yes'"),
        ({"type": "math", "answer": "1", "weight": True}, "reward.weight: expected a number, got True"),
        ({"type": "translation", "reference": "x", "target_lang": "portuguese-brazil"},
         "reward.target_lang: unknown language code 'portuguese-brazil' (expected a BCP 47 tag such as 'en', 'pt-BR')"),
        ({"type": "code", "tests": ["assert f()", ""]},
         "reward.tests[1]: expected a non-empty string of Python, got ''"),
        ({"type": "code", "tests": "assert f()", "timeout_s": 0}, "reward.timeout_s: must be > 0, got 0"),
        ({"type": "ifeval", "instruction_id_list": ["punctuation:no_coma"], "kwargs": [{}]},
         "reward.instruction_id_list[0]: unknown IFEval instruction 'punctuation:no_coma'"),
        ({"type": "ifeval", "instruction_id_list": ["punctuation:no_comma"], "kwargs": []},
         "reward.kwargs: has 0 entries for 1 instructions"),
        ({"type": "combined", "parts": [{"type": "math", "answer": "1"}, {"type": "math", "answer": "2", "weight": -1}]},
         "reward.parts[1].weight: must be >= 0, got -1"),
        ({"type": "combined", "parts": []}, "reward.parts: must name at least one reward"),
    ],
)
def test_bad_specs_name_the_field(spec, message):
    assert validate_spec(spec) == message
    with pytest.raises(InvalidRewardSpecError) as raised:
        score("x", spec)
    assert str(raised.value) == message


def test_good_specs_pass():
    for spec in (
        {"type": "math", "answer": 0.5, "format_weight": 0.1},
        {"type": "translation", "reference": "Olá", "source": "Hello", "target_lang": "pt-BR"},
        {"type": "code", "tests": "assert True", "partial": True, "timeout_s": 1.5},
        {"type": "ifeval", "instruction_id_list": ["detectable_format:title"], "kwargs": [None], "mode": "loose"},
    ):
        assert validate_spec(spec) is None, spec


def test_combined_is_the_weighted_mean_of_its_parts():
    spec = {"type": "combined", "parts": [
        {"type": "math", "answer": "4", "weight": 3},
        {"type": "ifeval", "instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{}]},
    ]}
    right_upper, wrong_lower = "THE ANSWER IS \\boxed{4}", "the answer is \\boxed{5}"
    assert score(right_upper, spec).value == pytest.approx(0.75)
    assert score(wrong_lower, spec).value == pytest.approx(0.25)
    result = score(right_upper, spec)
    assert [p.name for p in result.parts] == ["math", "ifeval"]
    assert [p.value for p in result.parts] == [1.0, 0.0]


def test_every_reward_is_documented():
    assert REWARDS.names() == ["code", "combined", "ifeval", "math", "translation"]
    assert all(REWARDS.get(name).doc for name in REWARDS)
