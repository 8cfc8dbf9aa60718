"""``math``: the response's final answer is mathematically equal to the reference (``math-verify``).

Spec: ``{"type": "math", "answer": "1/2", "format_weight": 0.1, "require_format": false}``.

Final-answer extraction, in order: the last ``\\boxed{...}`` (math-verify's own priority); else
the text after the last answer marker (``####``, ``Answer:``, ``Final answer:``, and the same in
several languages: ``Respuesta:``, ``Réponse :``, ``Antwort:``, ``Resposta:``, ``Ответ:``,
``答案：``, ``答え：``, ...), read as LaTeX or a plain expression; else the last expression in the
whole response. Equivalence is math-verify's ``verify`` (``\\frac12`` ≡ ``0.5``, ``(x+1)^2`` ≡
``x^2+2x+1``, sets, intervals), never string equality.

The format part is 1 when the answer is boxed or follows a marker. The value is
``(1 - format_weight) * correct + format_weight * formatted``; with ``require_format`` an
unformatted response scores 0 even when its last number happens to be right.
"""

from __future__ import annotations

import re
import threading

from tower_megatron.rewards.registry import NUMBER, REWARDS, Reward, RewardResult

# Markers that introduce a final answer; the last one in the response wins.
ANSWER_MARKER = re.compile(
    r"(?:####|(?:final\s+answer|answer|respuesta(?:\s+final)?|réponse(?:\s+finale)?|antwort|resposta"
    r"(?:\s+final)?|risposta|antwoord|odpowiedź|ответ|відповідь|答案|最终答案|答え|정답)\s*[:：])",
    re.IGNORECASE,
)
BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
_WORD = re.compile(r"[^\W\d_]{2,}")
_DIGIT_GROUP_SPACE = re.compile(r"(?<=\d)[ \u00a0\u202f](?=\d{3}(?!\d))")


# math-verify bounds its sympy work by wall clock (SIGALRM, main thread only). Its default of 5 s
# turns a correct answer into a 0 on a loaded machine (sympy's first simplify imports a lot);
# 30 s only guards against pathological inputs, the reward pool's per-item bound is the real one.
SYMPY_TIMEOUT_S = 30


def _timeout() -> int | None:
    return SYMPY_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


def _parse(text: str, bare_latex: bool) -> list:
    """math-verify's extraction. With ``bare_latex`` (a short answer string: the reference, or
    what follows an answer marker; never a whole response) the text may also be LaTeX without
    ``$`` delimiters: ``x^2/2 + x + 1/2`` read as text would give its last number, ``1/2``. So a
    string without words is read as LaTeX first, one with words (``12 apples``) as text first."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    configs = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    if not bare_latex or "$" in text or BOXED.search(text):
        return parse(text, extraction_config=configs, parsing_timeout=_timeout())
    text = _DIGIT_GROUP_SPACE.sub("", text)  # "1 000" (fr, de, ...) is one number
    candidates = [text, f"${text}$"]
    if not _WORD.search(_LATEX_COMMAND.sub("", text)):
        candidates.reverse()
    for candidate in candidates:
        parsed = parse(candidate, extraction_config=configs, parsing_timeout=_timeout())
        if parsed:
            return parsed
    return []


def extract_final_answer(response: str) -> tuple[str, bool]:
    """The part of ``response`` that holds the final answer, and whether it was marked as one
    (boxed or after an answer marker)."""
    if BOXED.search(response):
        return response, True
    markers = list(ANSWER_MARKER.finditer(response))
    if markers:
        tail = response[markers[-1].end():].strip()
        return (tail.splitlines()[0].strip() if tail else ""), True
    return response, False


def is_equivalent(
    response_answer: str, reference: str, bare_latex: bool = False
) -> tuple[bool, str | None, str | None]:
    """Whether the two answers are equal per math-verify, plus what was extracted from each."""
    from math_verify import verify

    gold = _parse(reference, bare_latex=True)
    if not gold:
        raise ValueError(f"math reward: cannot parse the reference answer {reference!r}")
    predicted = _parse(response_answer, bare_latex) if response_answer.strip() else []
    if not predicted:
        return False, str(gold[-1]), None
    ok = verify(gold, predicted, timeout_seconds=_timeout())
    return bool(ok), str(gold[-1]), str(predicted[-1])


def math_reward(response: str, spec: dict, lang: str | None = None) -> RewardResult:
    answer_text, formatted = extract_final_answer(response)
    # A marker's tail is a short answer string; bare LaTeX is safe to read there only.
    correct, gold, predicted = is_equivalent(answer_text, str(spec["answer"]), bare_latex=formatted)
    format_weight = float(spec.get("format_weight", 0.0))
    if spec.get("require_format", False) and not formatted:
        value = 0.0
    else:
        value = (1.0 - format_weight) * float(correct) + format_weight * float(formatted)
    details = {"correct": correct, "formatted": formatted, "extracted": predicted, "reference": gold}
    return RewardResult(value, "math", details)


def _check(spec: dict, where: str) -> str | None:
    if not str(spec["answer"]).strip():
        return f"{where}.answer: must not be empty"
    if not 0.0 <= float(spec.get("format_weight", 0.0)) <= 1.0:
        return f"{where}.format_weight: must be in [0, 1], got {spec['format_weight']!r}"
    return None


REWARDS.register("math")(
    Reward(
        compute=math_reward,
        fields={"answer": ((str, *NUMBER), True), "format_weight": (NUMBER, False),
                "require_format": ((bool,), False)},
        doc="final answer equivalent to 'answer' (math-verify); optional format reward",
        check=_check,
        # loads sympy's parsing and simplification paths, the slow part of a first call
        warmup=lambda: is_equivalent("\\frac{(x+1)^2}{2}", "x^2/2 + x + 1/2", bare_latex=True),
    )
)
