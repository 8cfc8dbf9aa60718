"""IFEval scoring (the rewards' adapter of lm-eval's checkers, aggregated by the eval suite) agrees
with the lm-eval package's own ``process_results`` and aggregation on crafted responses in eight
languages to the embedded IFEval-format prompts: every strict and loose verdict and the four
accuracies.

The crafted set stays clear of the adapter's documented, deliberate differences (per-character
word and sentence counts for zh/ja; py3langid instead of langdetect, used here on clear cases only).
"""

from __future__ import annotations

import pytest

from tower_megatron.eval.ifeval import score_ifeval
from tower_megatron.eval.testsets import read_ifeval

# key -> responses (pass, fail, and some that only pass IFEval's loose rewrites).
RESPONSES = {
    1001: [
        "Dear neighbours\nJoin us for a street party on Saturday at noon.\nBring snacks and good cheer.",
        "Hi all, join us on Saturday for a party.",
        "Sure, here is the note:\nJoin us for a street party on Saturday at noon",
    ],
    1002: ["* Better memory.\n* More job options.\n* Easier travel.", "* Better memory.\n* Easier travel."],
    1003: [
        "a tall white tower stands by the sea and guides the ships home at night.",
        "A Tall White Tower guides ships.",
    ],
    1004: [
        "<<River Song>>\nThe water runs to the sea,\nand the sea runs back to me.",
        "River Song\nThe water runs to the sea.",
    ],
    1005: [
        "Hallo Thomas,\n\ndas Meeting wird auf Donnerstag verschoben. Bitte gib mir Bescheid, ob dir "
        "der neue Termin passt.\n\nViele Grüße\nAnna\n\nP.S. Ich bringe Kuchen mit.",
        "Hi Thomas, the meeting has moved to Thursday. Please let me know whether the new time works "
        "for you.\nP.S. I will bring cake.",
    ],
    1006: [
        "Bäume produzieren Sauerstoff. Sie speichern Kohlenstoff im Holz. Sie geben vielen Tieren ein Zuhause.",
        "Bäume sind wichtig. Sie geben Schatten.",
    ],
    1007: [
        '"Ma ville préférée est Lisbonne, avec ses collines, ses tramways jaunes et la lumière sur le fleuve."',
        "Ma ville préférée est Lisbonne, avec ses collines et ses tramways jaunes.",
    ],
    1008: [
        "Évitez les écrans avant de dormir. Gardez des horaires réguliers. Bonne nuit.",
        "Évitez les écrans avant de dormir. Bonne nuit !",
        "Évitez les écrans avant de dormir. Bonne nuit.\n(fin)",
    ],
    1009: [
        "*Ingredientes*: tomates, pepino y pimiento.\n*Preparación*: triturar todo y servir frío.",
        "Ingredientes: tomates, pepino y pimiento.",
    ],
    1010: ["El mar es inmenso, salado y lleno de vida.", "El mar es azul y profundo."],
    1011: [
        "Querido [nome],\nespero que estejas bem. Vemo-nos em [local] no sábado.",
        "Querido João, tudo bem?",
    ],
    1012: [
        '{"frutas": [{"nome": "pera rocha", "cor": "verde"}, {"nome": "laranja", "cor": "laranja"}]}',
        "Pera rocha: verde. Laranja: laranja.",
    ],
    1013: ["Снег идёт, снег лежит, тихо спит зимний лес.", "Зима пришла, и всё вокруг бело."],
    1014: ["Утром я гуляю в парке.\n***\nВечером я читаю книгу.", "Утром я гуляю. Вечером я читаю."],
    1015: ['"春天来了，花都开了，草也绿了。"', "春天来了，草也绿了。"],
    1016: ["北京是中国的首都。\n******\n北京有很多历史古迹。", "北京是中国的首都。"],
    1017: ['{"春": "桜", "夏": "海"}', "春は桜です。"],
    1018: ["私はラーメンが好きです。以上です。", "私はラーメンが好きです。"],
    1019: [
        "SECTION 1\nKeeps drinks cold for a day.\nSECTION 2\nMade of recycled steel.",
        "Keeps drinks cold.",
    ],
    1020: ["What is the capital of Portugal? The capital of Portugal is Lisbon.", "Lisbon."],
}


@pytest.fixture(scope="module")
def lm_eval_utils():
    from tower_megatron.rewards.punkt_data import install_punkt_tab

    install_punkt_tab()  # lm-eval's module would otherwise try to download punkt_tab
    pytest.importorskip("lm_eval")
    from langdetect import DetectorFactory

    DetectorFactory.seed = 0  # lm-eval's response_language check uses langdetect, random unless seeded
    from lm_eval.tasks.ifeval import utils

    return utils


@pytest.fixture(scope="module")
def cases():
    by_key = {ex.key: ex for ex in read_ifeval("resource:eval/ifeval_demo.jsonl")}
    assert set(RESPONSES) == set(by_key)
    examples, outputs = [], []
    for key, responses in RESPONSES.items():
        for response in responses:
            examples.append(by_key[key])
            outputs.append(response)
    return examples, outputs


def test_verdicts_and_accuracies_equal_lm_eval(lm_eval_utils, cases):
    examples, outputs = cases
    assert len(outputs) >= 20 and len({ex.lang for ex in examples}) == 8
    ours = score_ifeval(examples, outputs)
    theirs = [
        lm_eval_utils.process_results(
            {
                "key": ex.key,
                "prompt": ex.prompt,
                "instruction_id_list": ex.instruction_id_list,
                "kwargs": ex.kwargs,
            },
            [out],
        )
        for ex, out in zip(examples, outputs, strict=True)
    ]
    for item, ref, out in zip(ours["items"], theirs, outputs, strict=True):
        assert item["strict"] == ref["inst_level_strict_acc"], out
        assert item["loose"] == ref["inst_level_loose_acc"], out
    overall = ours["overall"]
    n = len(theirs)
    assert overall["prompt_level_strict_acc"] == pytest.approx(
        100 * sum(r["prompt_level_strict_acc"] for r in theirs) / n
    )
    assert overall["prompt_level_loose_acc"] == pytest.approx(
        100 * sum(r["prompt_level_loose_acc"] for r in theirs) / n
    )
    inst_strict = lm_eval_utils.agg_inst_level_acc([r["inst_level_strict_acc"] for r in theirs])
    inst_loose = lm_eval_utils.agg_inst_level_acc([r["inst_level_loose_acc"] for r in theirs])
    assert overall["inst_level_strict_acc"] == pytest.approx(100 * inst_strict)
    assert overall["inst_level_loose_acc"] == pytest.approx(100 * inst_loose)


def test_cases_are_not_trivial(cases):
    """Passes, failures and loose-only passes all occur, so agreement is informative."""
    examples, outputs = cases
    items = score_ifeval(examples, outputs)["items"]
    strict_pass = sum(all(i["strict"]) for i in items)
    loose_only = sum(all(i["loose"]) and not all(i["strict"]) for i in items)
    assert 0 < strict_pass < len(items) and loose_only >= 2
    by_lang = score_ifeval(examples, outputs)["by_language"]
    assert sorted(by_lang) == ["de", "en", "es", "fr", "ja", "pt", "ru", "zh"]
    assert sum(v["n"] for v in by_lang.values()) == len(items)
