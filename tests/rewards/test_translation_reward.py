"""Translation reward: sacrebleu chrF against the reference, 0 for a wrong target language
(py3langid) or an untranslated copy of the source."""

from __future__ import annotations

import pytest
import sacrebleu

from tower_megatron.rewards import score

SOURCE_EN = "The weather is beautiful today, so we are going for a walk in the park."
REFERENCE_PT = "O tempo está lindo hoje, por isso vamos dar um passeio no parque."


def _spec(reference: str = REFERENCE_PT, source: str = SOURCE_EN, **extra) -> dict:
    return {"type": "translation", "reference": reference, "source": source, **extra}


@pytest.mark.parametrize(
    ("hypothesis", "reference", "source", "target"),
    [
        ("O tempo está bonito hoje, então vamos passear no parque.", REFERENCE_PT, SOURCE_EN, "pt"),
        (REFERENCE_PT, REFERENCE_PT, SOURCE_EN, "pt"),
        ("Das Wetter ist heute schön, also gehen wir im Park spazieren.",
         "Das Wetter ist heute wunderschön, deshalb gehen wir im Park spazieren.", SOURCE_EN, "de"),
        ("今天天气很好，所以我们去公园散步。", "今天天气很美，所以我们要去公园散步。", SOURCE_EN, "zh"),
        # es -> pt: close languages; a real translation is not taken for a copy of the source
        ("O tempo está lindo hoje, então vamos passear pelo parque.", REFERENCE_PT,
         "El tiempo está precioso hoy, así que vamos a dar un paseo por el parque.", "pt"),
    ],
)
def test_value_is_sacrebleu_chrf_in_the_right_language(hypothesis, reference, source, target):
    result = score(hypothesis, _spec(reference, source, target_lang=target))
    assert result.value == pytest.approx(sacrebleu.sentence_chrf(hypothesis, [reference]).score / 100)
    assert result.value > 0.3 and result.details["wrong_language"] is None
    assert result.details["copied_source"] is False


@pytest.mark.parametrize(
    ("hypothesis", "target", "detected"),
    [
        ("Das Wetter ist heute schön, also gehen wir im Park spazieren.", "pt", "de"),
        ("Le temps est magnifique aujourd'hui, alors nous allons nous promener au parc.", "pt", "fr"),
        ("今日はとても天気がいいので、公園を散歩しに行きます。", "zh", "ja"),
        ("Погода сегодня прекрасная, поэтому мы идём гулять в парк.", "uk", "ru"),
    ],
)
def test_wrong_target_language_scores_zero(hypothesis, target, detected):
    result = score(hypothesis, _spec(target_lang=target))
    assert (result.value, result.details["wrong_language"]) == (0.0, detected)


def test_untranslated_copies_score_zero():
    result = score(SOURCE_EN, _spec(target_lang="pt"))
    assert result.value == 0.0 and result.details["copied_source"] is True
    # a copy with cosmetic changes is still a copy
    nearly = "the weather is beautiful today so we are going for a walk in the park"
    assert score(nearly, _spec(target_lang="pt")).value == 0.0
    # too short for language ID: the copy check alone catches it
    short = score("Hello, world!", {"type": "translation", "reference": "Olá, mundo!",
                                    "source": "Hello, world!", "target_lang": "pt"})
    assert (short.value, short.details["wrong_language"], short.details["copied_source"]) == (0.0, None, True)
    # and the short correct one passes
    ok = score("Olá, mundo!", {"type": "translation", "reference": "Olá, mundo!", "source": "Hello, world!",
                              "target_lang": "pt"})
    assert ok.value == 1.0


def test_target_language_comes_from_lang_when_the_spec_has_none():
    german = "Das Wetter ist heute schön, also gehen wir im Park spazieren."
    assert score(german, _spec(), lang="pt").value == 0.0
    assert score(german, _spec(), lang="de").value > 0.0
