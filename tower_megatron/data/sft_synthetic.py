"""Translation SFT chats and translation preference pairs generated from the embedded parallel
corpus (``resources/corpus/parallel``), for the demo and the tests. ``tools/build_chat_sets.py``
writes them to ``resources/corpus/sft/`` and ``resources/corpus/preference/``; the output is a
pure function of the corpus and the seed (a test rebuilds it and compares).

SFT tasks, drawn per pair with a seeded RNG keyed by the pair's content:

- translation request (either direction) in one of several prompt templates and prompt
  languages, the Tower+ model card's prompt among them; some with a system message;
- multi-turn: the translation, then a request to translate the answer back (the original is the
  reference);
- post-editing: source + a degraded translation (a word dropped, two words swapped, a word
  repeated, or the end left untranslated) → the reference translation.

Preference pairs: a translation request; chosen = the reference; rejected = the source copied
untranslated, another segment's translation into the same language, or a truncated translation.
"""

from __future__ import annotations

import gzip
import io
import json
import random
from collections.abc import Iterator

import zstandard

from tower_megatron.data.languages import display_name
from tower_megatron.resources import resource_path
from tower_megatron.utils.atomic import atomic_open

TOWER_PROMPT = (
    "Translate the following {src_name} source text to {tgt_name}:\n{src_name}: {src}\n{tgt_name}: "
)
PROMPTS = (  # (prompt language, pattern); codes where a name would need translating into the prompt language
    ("en", TOWER_PROMPT),
    ("en", "Translate this {src_name} text into {tgt_name}.\n\n{src}"),
    ("en", "{src}\n\nTranslate the text above to {tgt_name}. Reply with the translation only."),
    ("en", "Please provide a {tgt_name} translation of the following {src_name} sentence:\n{src}"),
    ("pt", "Traduza o seguinte texto ({src_lang} → {tgt_lang}):\n{src}"),
    ("de", "Übersetze den folgenden Text ({src_lang} → {tgt_lang}):\n{src}"),
    ("es", "Traduce el siguiente texto ({src_lang} → {tgt_lang}):\n{src}"),
    ("fr", "Traduis le texte suivant ({src_lang} → {tgt_lang}) :\n{src}"),
    ("zh", "请将以下文本翻译成目标语言（{src_lang} → {tgt_lang}）：\n{src}"),
)
SYSTEM = "You are a professional translator. Answer with the translation only."
BACK = "Now translate your translation back into {src_name}."
POST_EDIT = (
    "Improve this {tgt_name} translation of a {src_name} text. Reply with the corrected translation only.\n"
    "{src_name}: {src}\n{tgt_name} draft: {draft}"
)


def parallel_pairs() -> list[dict]:
    """The embedded English↔X pairs: ``{id, src_lang, tgt_lang, src, tgt}`` (UDHR, then Django)."""
    pairs = []
    with open(resource_path("corpus/parallel/udhr.jsonl.zst"), "rb") as raw:
        text = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(raw), encoding="utf-8")
        pairs += [json.loads(line) for line in text if line.strip()]
    with gzip.open(resource_path("corpus/parallel/django_ui.tsv.gz"), "rt", encoding="utf-8") as tsv:
        for i, line in enumerate(tsv):
            lang, src, tgt = line.rstrip("\n").split("\t")
            pairs.append({"id": f"django/{i}", "src_lang": "en", "tgt_lang": lang, "src": src, "tgt": tgt})
    return pairs


def _rng(seed: int, pair: dict, salt: str) -> random.Random:
    return random.Random(f"{seed}:{salt}:{pair['id']}:{pair['tgt_lang']}:{pair['src'][:64]}")


def _direction(pair: dict, rng: random.Random) -> tuple[str, str, str, str]:
    """(src_lang, src, tgt_lang, tgt): English→X or X→English."""
    if rng.random() < 0.5:
        return pair["src_lang"], pair["src"], pair["tgt_lang"], pair["tgt"]
    return pair["tgt_lang"], pair["tgt"], pair["src_lang"], pair["src"]


def _fill(pattern: str, sl: str, src: str, tl: str, **extra: str) -> str:
    names = dict(src_name=display_name(sl), tgt_name=display_name(tl), src_lang=sl, tgt_lang=tl)
    return pattern.format(src=src, **names, **extra)


def degrade(text: str, rng: random.Random, source: str) -> str:
    """A plausible bad translation of ``text`` (never equal to it unless ``text`` is one word/char)."""
    spaced = " " in text.strip()
    units = text.split(" ") if spaced else list(text)
    join = " ".join if spaced else "".join
    if len(units) < 3:
        return source
    op = rng.randrange(4)
    i = rng.randrange(len(units) - 1)
    if op == 0:
        out = units[:i] + units[i + 1 :]
    elif op == 1:
        out = units[:i] + [units[i + 1], units[i]] + units[i + 2 :]
    elif op == 2:
        out = units[: i + 1] + [units[i]] + units[i + 1 :]
    else:  # the second half left untranslated
        half = len(units) // 2
        src_units = source.split(" ") if " " in source.strip() else list(source)
        out = units[:half] + src_units[len(src_units) // 2 :]
    draft = join(out)
    return draft if draft != text else source


def translation_chats(pairs: list[dict], seed: int = 0) -> Iterator[dict]:
    """One SFT chat per pair: ``{id, lang, task, messages}`` (``lang``: the answer's language)."""
    for pair in pairs:
        rng = _rng(seed, pair, "sft")
        sl, src, tl, tgt = _direction(pair, rng)
        task = rng.choices(["translate", "multi_turn", "post_edit"], weights=[0.6, 0.2, 0.2])[0]
        messages = [{"role": "system", "content": SYSTEM}] if rng.random() < 0.15 else []
        if task == "post_edit":
            draft = degrade(tgt, rng, src)
            if draft in (src, tgt):
                task = "translate"
            else:
                messages += [
                    {"role": "user", "content": _fill(POST_EDIT, sl, src, tl, draft=draft)},
                    {"role": "assistant", "content": tgt},
                ]
        if task != "post_edit":
            _, pattern = rng.choice(PROMPTS)
            messages += [
                {"role": "user", "content": _fill(pattern, sl, src, tl)},
                {"role": "assistant", "content": tgt},
            ]
        if task == "multi_turn":
            messages += [
                {"role": "user", "content": _fill(BACK, sl, src, tl)},
                {"role": "assistant", "content": src},
            ]
        yield {
            "id": pair["id"],
            "lang": tl if task != "multi_turn" else sl,
            "task": task,
            "messages": messages,
        }


def translation_preferences(pairs: list[dict], seed: int = 0) -> Iterator[dict]:
    """One preference pair per pair: ``{id, lang, rejected_kind, prompt, chosen, rejected}``."""
    by_lang: dict[str, list[str]] = {}
    for pair in pairs:
        by_lang.setdefault(pair["tgt_lang"], []).append(pair["tgt"])
        by_lang.setdefault(pair["src_lang"], []).append(pair["src"])
    for pair in pairs:
        rng = _rng(seed, pair, "preference")
        sl, src, tl, tgt = _direction(pair, rng)
        _, pattern = rng.choice(PROMPTS)
        kind = rng.choice(["untranslated", "other_segment", "truncated"])
        if kind == "other_segment":
            rejected = rng.choice(by_lang[tl])
        elif kind == "truncated":
            units = tgt.split(" ") if " " in tgt.strip() else list(tgt)
            rejected = (" " if " " in tgt.strip() else "").join(units[: max(1, len(units) // 2)])
        else:
            rejected = src
        if rejected.strip() == tgt.strip():
            kind, rejected = "untranslated", src
        if rejected.strip() == tgt.strip():  # source and translation identical (names, codes)
            continue
        yield {"id": pair["id"], "lang": tl, "rejected_kind": kind,
               "prompt": _fill(pattern, sl, src, tl), "chosen": tgt, "rejected": rejected}  # fmt: skip


def write_jsonl_gz(records: Iterator[dict], path: str) -> int:
    """Deterministic bytes (gzip without a timestamp); returns the record count."""
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    with atomic_open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as out:
        out.write(data)
    return len(lines)
