"""How parallel pairs and chats become training text.

Translation templates are registered by name and chosen per pair and direction with a seeded RNG
(``tower`` is the Tower+ model card's prompt). Chat formats render ``{"messages": [...]}`` in the
model's turn markup (Gemma 2's ``<start_of_turn>``, Qwen 2.5's ChatML).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tower_megatron.data.languages import display_name
from tower_megatron.registry import Registry


@dataclass(frozen=True)
class TranslationTemplate:
    """A ``str.format`` pattern over ``src``, ``tgt``, ``src_lang``, ``tgt_lang``, ``src_name``, ``tgt_name``."""

    name: str
    pattern: str

    def render(self, src: str, tgt: str, src_lang: str, tgt_lang: str) -> str:
        return self.pattern.format(
            src=src,
            tgt=tgt,
            src_lang=src_lang,
            tgt_lang=tgt_lang,
            src_name=display_name(src_lang),
            tgt_name=display_name(tgt_lang),
        )


TRANSLATION_TEMPLATES: Registry[TranslationTemplate] = Registry("translation template")


def register_template(name: str, pattern: str) -> TranslationTemplate:
    """Adds a named template (configs add theirs through ``templates: {name: pattern}``)."""
    template = TranslationTemplate(name, pattern)
    try:  # a dry format call catches unknown fields now instead of mid-run
        template.render("s", "t", "en", "pt")
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"translation template {name!r}: bad pattern {pattern!r}: {exc!r}") from None
    if name in TRANSLATION_TEMPLATES and TRANSLATION_TEMPLATES.get(name).pattern == pattern:
        return TRANSLATION_TEMPLATES.get(name)
    TRANSLATION_TEMPLATES.register(name)(template)
    return template


register_template("plain", "{src_name}: {src}\n{tgt_name}: {tgt}")
register_template(
    "tower",
    "Translate the following {src_name} source text to {tgt_name}:\n{src_name}: {src}\n{tgt_name}: {tgt}",
)
register_template("codes", "<{src_lang}> {src}\n<{tgt_lang}> {tgt}")
register_template("sentence", "{src_name} sentence: {src}\n{tgt_name} translation: {tgt}")


class TemplatePicker:
    """Seeded choice among named templates: the same (seed, key) always picks the same template,
    whichever worker process renders the pair."""

    def __init__(self, names: Sequence[str], weights: Sequence[float] = (), seed: int = 0) -> None:
        if not names:
            raise ValueError("a parallel source needs at least one template")
        self.templates = [TRANSLATION_TEMPLATES.get(n) for n in names]
        if weights and len(weights) != len(names):
            raise ValueError(f"template_weights has {len(weights)} entries for {len(names)} templates")
        if weights and (min(weights) < 0 or sum(weights) <= 0):
            raise ValueError(
                f"template_weights must be non-negative with a positive sum, got {list(weights)}"
            )
        self.weights = list(weights) or None
        self.seed = seed

    def pick(self, key: str) -> TranslationTemplate:
        # str seeds are hashed with SHA-512 by `random`, so this is stable across processes/runs.
        rng = random.Random(f"{self.seed}:{key}")
        return rng.choices(self.templates, weights=self.weights, k=1)[0]


ChatFormat = Callable[[list[dict]], str]
CHAT_FORMATS: Registry[ChatFormat] = Registry("chat format")


@CHAT_FORMATS.register("gemma")
def gemma_chat(messages: list[dict]) -> str:
    """Gemma 2 turns: roles user/model, no system role (a system message joins the first user turn)."""
    out, system = [], ""
    for msg in messages:
        if msg["role"] == "system":
            system += msg["content"] + "\n\n"
            continue
        role = "model" if msg["role"] == "assistant" else "user"
        content = (system + msg["content"]) if role == "user" else msg["content"]
        system = "" if role == "user" else system
        out.append(f"<start_of_turn>{role}\n{content}<end_of_turn>\n")
    return "".join(out)


@CHAT_FORMATS.register("chatml")
def chatml_chat(messages: list[dict]) -> str:
    """Qwen 2.5's ChatML."""
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)


CHAT_ROLES = ("system", "user", "assistant")
