"""The suites: each builds its prompts from its test sets and scores the model's outputs.

A suite is ``prompts(examples, prompter) -> [token ids]`` plus ``score(examples, outputs, cfg)
-> results``; :mod:`tower_megatron.eval.runner` generates in between, so suites never touch a model
and their scoring is tested on fixed responses.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tower_megatron.config.loader import ConfigError
from tower_megatron.eval import ifmt, judge, translation
from tower_megatron.eval.config import ChatSuite, EvalConfig, IFEvalSuite, IFMTSuite, TranslationSuite
from tower_megatron.eval.prompts import ChatPrompter
from tower_megatron.eval.testsets import (
    read_chat,
    read_ifeval,
    read_ifmt,
    read_translation,
)
from tower_megatron.registry import Registry


@dataclass
class Suite:
    name: str
    read: Callable[[Any], list]  # suite config -> examples (raises ConfigError on bad files)
    prompt: Callable[[Any, ChatPrompter], str]  # example -> user message text
    score: Callable[[list, list[str], Any], dict]  # examples, outputs, suite config -> results


SUITES: Registry[Suite] = Registry("eval suite")


def _read_all(files: list[str], reader, limit: int, **kwargs) -> list:
    return [ex for name in files for ex in reader(name, limit, **kwargs)]


# --- translation -------------------------------------------------------------------------------


def score_translation(examples: list, outputs: list[str], cfg: TranslationSuite) -> dict:
    """Corpus scores per pair (each pair has one target language, hence one BLEU tokenizer), per
    target language, and their macro average over pairs (as WMT24++ reports)."""
    by_pair: dict[str, list[int]] = defaultdict(list)
    by_target: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        by_pair[ex.pair].append(i)
        by_target[ex.tgt_lang].append(i)

    def block(indices: list[int], tgt_lang: str) -> dict:
        hyps = [outputs[i].strip() for i in indices]
        refs = [examples[i].reference for i in indices]
        scores, signatures = translation.corpus_scores(hyps, refs, tgt_lang, cfg.metrics, cfg.bleu_tokenizers)
        return {**scores, "n": len(indices), "signatures": signatures}

    pairs = {pair: block(idx, examples[idx[0]].tgt_lang) for pair, idx in sorted(by_pair.items())}
    targets = {lang: block(idx, lang) for lang, idx in sorted(by_target.items())}
    if cfg.comet_model or cfg.metricx_model:
        _neural(examples, outputs, cfg, by_pair, pairs)
    metric_names = [m for m in (*cfg.metrics, "comet", "metricx") if all(m in p for p in pairs.values())]
    overall = {m: translation.mean([p[m] for p in pairs.values()]) for m in metric_names}
    signatures = {m: sorted({p["signatures"][m] for p in pairs.values()}) for m in cfg.metrics}
    return {
        "overall": {**overall, "n": len(examples), "pairs": len(pairs)},
        "average": "macro over language pairs",
        "signatures": signatures,
        "by_pair": pairs,
        "by_target_language": targets,
    }


def _neural(examples, outputs, cfg: TranslationSuite, by_pair, pairs) -> None:
    srcs = [ex.source for ex in examples]
    refs = [ex.reference for ex in examples]
    hyps = [o.strip() for o in outputs]
    for name, path, fn in (
        ("comet", cfg.comet_model, translation.comet_scores),
        ("metricx", cfg.metricx_model, translation.metricx_scores),
    ):
        if not path:
            continue
        seg = fn(path, srcs, hyps, refs, cfg.neural_batch_size)
        for pair, idx in by_pair.items():
            pairs[pair][name] = translation.mean([seg[i] for i in idx])
            pairs[pair]["signatures"][name] = f"{name}:{path}"


SUITES.register("translation")(
    Suite(
        "translation",
        read=lambda cfg: _read_all(
            cfg.files, read_translation, cfg.limit, skip_bad_source=cfg.skip_bad_source
        ),
        prompt=lambda ex, p: p.translation_request(ex.source, ex.src_lang, ex.tgt_lang),
        score=score_translation,
    )
)


# --- IFEval ------------------------------------------------------------------------------------


def _read_ifeval(cfg: IFEvalSuite) -> list:
    from tower_megatron.eval.ifeval import check_example, known_instruction_ids

    examples = _read_all(cfg.files, read_ifeval, cfg.limit, known_instructions=known_instruction_ids())
    for ex in examples:
        problem = check_example(ex)
        if problem:
            raise ConfigError(f"{ex.origin}: field 'kwargs': {problem}")
    return examples


def _score_ifeval(examples: list, outputs: list[str], cfg: IFEvalSuite) -> dict:
    from tower_megatron.eval.ifeval import score_ifeval

    return score_ifeval(examples, outputs)


SUITES.register("ifeval")(Suite("ifeval", _read_ifeval, lambda ex, p: ex.prompt, _score_ifeval))


# --- IF-MT -------------------------------------------------------------------------------------


def score_ifmt(examples: list, outputs: list[str], cfg: IFMTSuite) -> dict:
    """chrF of the translation inside each output, each constraint's pass rate, the share of
    requests with every constraint followed, and combined = chrF × that share / 100."""
    per_constraint: dict[str, list[bool]] = defaultdict(list)
    per_pair: dict[str, list[int]] = defaultdict(list)
    followed_all, items = [], []
    for i, (ex, out) in enumerate(zip(examples, outputs, strict=True)):
        verdicts = ifmt.check(ex, out)
        for kind, ok in verdicts.items():
            per_constraint[kind].append(ok)
        followed_all.append(all(verdicts.values()))
        per_pair[ex.pair].append(i)
        items.append(verdicts)
    texts = [ifmt.translation_text(ex, out) for ex, out in zip(examples, outputs, strict=True)]

    def block(idx: list[int]) -> dict:
        tgt = examples[idx[0]].tgt_lang
        scores, sigs = translation.corpus_scores(
            [texts[i] for i in idx], [examples[i].reference for i in idx], tgt, ["chrf"]
        )
        share = 100.0 * sum(followed_all[i] for i in idx) / len(idx)
        return {
            "chrf": scores["chrf"],
            "all_constraints": share,
            "combined": scores["chrf"] * share / 100.0,
            "n": len(idx),
            "signatures": sigs,
        }

    pairs = {pair: block(idx) for pair, idx in sorted(per_pair.items())}
    chrf = translation.mean([p["chrf"] for p in pairs.values()])
    share = 100.0 * sum(followed_all) / len(followed_all) if followed_all else None
    return {
        "overall": {
            "chrf": chrf,
            "all_constraints": share,
            "constraint_accuracy": 100.0
            * sum(sum(v) for v in per_constraint.values())
            / max(1, sum(len(v) for v in per_constraint.values())),
            "combined": None if chrf is None or share is None else chrf * share / 100.0,
            "n": len(examples),
        },
        "by_constraint": {
            k: {"accuracy": 100.0 * sum(v) / len(v), "n": len(v)} for k, v in sorted(per_constraint.items())
        },
        "by_pair": pairs,
        "items": items,
    }


SUITES.register("ifmt")(
    Suite(
        "ifmt",
        lambda cfg: _read_all(
            cfg.files, read_ifmt, cfg.limit, known_constraints=set(ifmt.CONSTRAINTS.names())
        ),
        lambda ex, p: ex.prompt,
        score_ifmt,
    )
)


# --- general chat (LLM judge) ------------------------------------------------------------------


def score_chat(examples: list, outputs: list[str], cfg: ChatSuite) -> dict:
    client = judge.client_from_config(cfg.judge)
    try:
        records = judge.judge_answers(
            client,
            [e.prompt for e in examples],
            outputs,
            [e.baseline for e in examples],
            both_orders=cfg.judge.both_orders,
            max_tokens=cfg.judge.max_tokens,
        )
    except judge.EndpointError as exc:  # keep the other suites' results and the answers
        return {"overall": {"win_rate": None, "n": len(examples), "error": str(exc)}, "answers": outputs}
    by_lang: dict[str, list[dict]] = defaultdict(list)
    for ex, rec in zip(examples, records, strict=True):
        by_lang[ex.lang].append(rec)
    return {
        "overall": {
            **judge.summarize(records),
            "n": len(examples),
            "judge": cfg.judge.model,
            "endpoint": cfg.judge.base_url,
        },
        "by_language": {lang: judge.summarize(recs) for lang, recs in sorted(by_lang.items())},
        "items": records,
    }


SUITES.register("chat")(
    Suite("chat", lambda cfg: _read_all(cfg.files, read_chat, cfg.limit), lambda ex, p: ex.prompt, score_chat)
)


def suite_config(cfg: EvalConfig, name: str) -> Any:
    return getattr(cfg, name)


def skipped_reason(cfg: EvalConfig, name: str) -> str | None:
    """Why a suite does not run (None: it runs)."""
    section = suite_config(cfg, name)
    if not section.files:
        return f"no test files ({name}.files)"
    if name == "chat" and not section.judge.base_url:
        return "no judge endpoint configured (chat.judge.base_url)"
    if name == "chat":
        try:  # a missing API key stops the run before generation, not after
            judge.client_from_config(section.judge)
        except judge.EndpointError as exc:
            raise ConfigError(str(exc)) from None
    return None
