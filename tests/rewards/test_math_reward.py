"""The math reward on hand-made responses: equivalent answers in other forms and languages score
1, wrong or missing ones 0 (math-verify decides equivalence, not string equality)."""

from __future__ import annotations

import pytest

from tower_megatron.rewards import score
from tower_megatron.rewards.math_answer import extract_final_answer

POSITIVE = [
    ("So the probability is $\\boxed{\\frac{1}{2}}$.", "0.5"),
    ("Dividing both sides by 4 gives x = 0.5. Answer: 1/2", "\\frac{1}{2}"),
    ("Janet sells 16 - 3 - 4 = 9 eggs, making 9 * 2 = 18 dollars.\n#### 18", "18"),
    ("Expanding, we get \\boxed{x^2 + 2x + 1}", "(x+1)^2"),
    ("Final answer: (x+1)^2", "x^2+2x+1"),
    ("La respuesta es 3/4. Respuesta: 0.75", "3/4"),
    ("Donc le total est de mille euros. Réponse : 1 000", "1000"),
    ("Final answer: x^2/2 + x + 1/2", "\\frac{(x+1)^2}{2}"),
    ("Die Lösung lautet \\boxed{\\sqrt{2}/2}", "\\frac{1}{\\sqrt{2}}"),
    ("Portanto, o conjunto solução é \\boxed{\\{2, 1\\}}", "\\{1,2\\}"),
    ("所以小明一共有 \\boxed{12} 个苹果。", "12"),
    ("よって、答えは次の通りです。答え：25%", "0.25"),
    ("Ответ: 2\\pi", "2\\pi"),
    ("The interval is \\boxed{(0, 1]}", "(0,1]"),
]

NEGATIVE = [
    ("So the probability is $\\boxed{\\frac{1}{3}}$.", "0.5"),
    ("#### 17", "18"),
    ("Expanding, we get \\boxed{x^2 + x + 1}", "(x+1)^2"),
    ("La respuesta es 3/4. Respuesta: 0.7", "3/4"),
    ("所以小明一共有 \\boxed{13} 个苹果。", "12"),
    ("答え：0.35", "0.25"),
    ("Ответ: \\pi", "2\\pi"),
    ("The interval is \\boxed{[0, 1]}", "(0,1]"),
    ("I am not sure how to solve this problem.", "7"),
    ("", "7"),
    ("We first got 12, but re-checking the arithmetic. Answer: 13", "12"),
    ("Die Lösung lautet \\boxed{\\sqrt{3}/2}", "\\frac{1}{\\sqrt{2}}"),
    # read as text, the tail's last number would be 1/2
    ("Final answer: x^2/2 + x + 1/2", "1/2"),
    ("Réponse : 1 000", "1"),
]


@pytest.mark.parametrize(("response", "answer"), POSITIVE)
def test_equivalent_answers_score_one(response, answer):
    result = score(response, {"type": "math", "answer": answer})
    assert (result.value, result.details["correct"]) == (1.0, True)


@pytest.mark.parametrize(("response", "answer"), NEGATIVE)
def test_wrong_or_missing_answers_score_zero(response, answer):
    result = score(response, {"type": "math", "answer": answer})
    assert (result.value, result.details["correct"]) == (0.0, False)


def test_string_equality_is_not_the_rule():
    # equal strings modulo nothing but formatting differ as text yet are the same number
    assert score("\\boxed{0.50}", {"type": "math", "answer": "1/2"}).value == 1.0
    # and a substring of the reference is not accepted
    assert score("\\boxed{1}", {"type": "math", "answer": "12"}).value == 0.0


def test_format_reward_and_required_format():
    spec = {"type": "math", "answer": "18", "format_weight": 0.2}
    assert score("the eggs bring 18 dollars", spec).value == pytest.approx(0.8)
    assert score("#### 18", spec).value == 1.0
    assert score("#### 19", spec).value == pytest.approx(0.2)
    strict = {"type": "math", "answer": "18", "require_format": True}
    assert score("the eggs bring 18 dollars", strict).value == 0.0
    assert score("they bring \\boxed{18} dollars", strict).value == 1.0


def test_the_last_marker_holds_the_final_answer():
    assert extract_final_answer("Answer: 3\nWait, that is wrong.\nFinal answer: 4") == ("4", True)
    assert extract_final_answer("no marker, 5 apples") == ("no marker, 5 apples", False)
