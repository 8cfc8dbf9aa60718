"""IFEval scoring: prompt- and instruction-level accuracy, strict and loose, overall, per language
and per instruction. The verdicts come from the rewards' adapter of lm-eval's checkers
(:func:`tower_megatron.rewards.ifeval.check_instructions`: offline punkt tables, word and sentence
counts that work for Chinese and Japanese); this module only aggregates them as lm-eval does
(prompt level: all instructions of a prompt followed; instruction level: pooled over all
instructions), in percent.
"""

from __future__ import annotations

from collections import defaultdict

from tower_megatron.eval.testsets import IFEvalExample


def known_instruction_ids() -> set[str]:
    from tower_megatron.rewards.ifeval import instruction_ids

    return set(instruction_ids())


def check_example(ex: IFEvalExample) -> str | None:
    """Why lm-eval's checkers cannot be built from this example's kwargs (None: they can)."""
    from tower_megatron.rewards.ifeval import check_instructions

    try:
        check_instructions("x", ex.instruction_id_list, ex.kwargs, lang=ex.lang, prompt=ex.prompt)
    except Exception as exc:  # the checkers raise KeyError/TypeError/ValueError on bad arguments
        return f"{type(exc).__name__}: {exc}"
    return None


def _accuracies(verdicts: list) -> dict[str, float | int]:
    strict = [ok for v in verdicts for ok in v.strict]
    loose = [ok for v in verdicts for ok in v.loose]
    languages = [v.language_ok for v in verdicts if v.language_ok is not None]
    return {
        "prompt_level_strict_acc": 100.0 * sum(v.follow_all_strict for v in verdicts) / len(verdicts),
        "inst_level_strict_acc": 100.0 * sum(strict) / len(strict),
        "prompt_level_loose_acc": 100.0 * sum(v.follow_all_loose for v in verdicts) / len(verdicts),
        "inst_level_loose_acc": 100.0 * sum(loose) / len(loose),
        # Not part of IFEval's score: how often the answer was in the prompt's language (py3langid;
        # answers too short to tell are left out).
        "in_prompt_language": 100.0 * sum(languages) / len(languages) if languages else None,
        "n": len(verdicts),
    }


def score_ifeval(examples: list[IFEvalExample], outputs: list[str]) -> dict:
    from tower_megatron.rewards.ifeval import check_instructions

    verdicts = [
        check_instructions(out, ex.instruction_id_list, ex.kwargs, lang=ex.lang, prompt=ex.prompt)
        for ex, out in zip(examples, outputs, strict=True)
    ]
    by_lang: dict[str, list] = defaultdict(list)
    by_instruction: dict[str, list[bool]] = defaultdict(list)
    for ex, v in zip(examples, verdicts, strict=True):
        by_lang[ex.lang].append(v)
        for ident, ok in zip(v.instruction_id_list, v.strict, strict=True):
            by_instruction[ident].append(ok)
    return {
        "overall": _accuracies(verdicts),
        "by_language": {lang: _accuracies(vs) for lang, vs in sorted(by_lang.items())},
        "by_instruction": {
            k: {"strict_acc": 100.0 * sum(v) / len(v), "n": len(v)} for k, v in sorted(by_instruction.items())
        },
        "items": [
            {"key": ex.key, "strict": v.strict, "loose": v.loose}
            for ex, v in zip(examples, verdicts, strict=True)
        ],
    }
