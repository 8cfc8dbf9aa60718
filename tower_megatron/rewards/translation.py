"""``translation``: chrF against the reference, gated by the target language and a copy check.

Spec: ``{"type": "translation", "reference": "Olá mundo", "source": "Hello world",
"target_lang": "pt"}`` (``target_lang`` defaults to the ``lang`` given to ``score``).

value = chrF(response, reference) / 100 (sacrebleu's sentence chrF, default β=2, n=6), set to 0
when:

- the response is confidently in another language than ``target_lang`` (py3langid, normalized
  probability ≥ ``min_lang_prob``, responses of at least ``min_lang_chars`` characters; shorter
  ones are not judged by language, the copy check still applies);
- the response is an untranslated copy of ``source``: equal to it after whitespace and case
  folding, or chrF(response, source) ≥ ``copy_threshold`` (default 60) and higher than
  chrF(response, reference). A faithful translation into a close language scores higher against
  its reference than against the source, so it is not a copy.
"""

from __future__ import annotations

import functools

from tower_megatron.rewards.registry import NUMBER, REWARDS, Reward, RewardResult


@functools.cache
def _detector(min_prob: float, min_chars: int):
    from tower_megatron.data.languages import LanguageDetector

    return LanguageDetector(min_prob=min_prob, min_chars=min_chars)


def _chrf(hypothesis: str, reference: str) -> float:
    from sacrebleu.metrics import CHRF

    return CHRF().sentence_score(hypothesis, [reference]).score


def _fold(text: str) -> str:
    return " ".join(text.split()).casefold()


def translation_reward(response: str, spec: dict, lang: str | None = None) -> RewardResult:
    target = spec.get("target_lang", lang)
    hypothesis = response.strip()
    chrf = _chrf(hypothesis, spec["reference"])
    details: dict = {"chrf": chrf, "target_lang": target}
    detector = _detector(float(spec.get("min_lang_prob", 0.5)), int(spec.get("min_lang_chars", 20)))
    wrong_language = detector.mismatch(hypothesis, target) if target else None
    details["wrong_language"] = wrong_language
    source = spec.get("source")
    copied = False
    if source:
        chrf_source = _chrf(hypothesis, source)
        details["chrf_vs_source"] = chrf_source
        copied = _fold(hypothesis) == _fold(source) or (
            chrf_source >= float(spec.get("copy_threshold", 60.0)) and chrf_source > chrf
        )
    details["copied_source"] = copied
    value = 0.0 if (wrong_language or copied or not hypothesis) else chrf / 100.0
    return RewardResult(value, "translation", details)


def _check(spec: dict, where: str) -> str | None:
    if not spec["reference"].strip():
        return f"{where}.reference: must not be empty"
    target = spec.get("target_lang")
    if target is not None:
        from tower_megatron.data.languages import UnknownLanguageError, standardize

        try:
            standardize(target)
        except UnknownLanguageError as exc:
            return f"{where}.target_lang: {exc}"
    if not 0.0 <= float(spec.get("min_lang_prob", 0.5)) <= 1.0:
        return f"{where}.min_lang_prob: must be in [0, 1]"
    return None


REWARDS.register("translation")(
    Reward(
        compute=translation_reward,
        fields={"reference": ((str,), True), "source": ((str,), False), "target_lang": ((str,), False),
                "copy_threshold": (NUMBER, False), "min_lang_prob": (NUMBER, False),
                "min_lang_chars": ((int,), False)},
        doc="chrF vs the reference x target-language check (py3langid); a copy of the source scores 0",
        check=_check,
        warmup=lambda: (_chrf("a", "a"), _detector(0.5, 20)),
    )
)
