"""How parallel pairs and chats become training text.

Translation templates are registered by name and chosen per pair and direction with a seeded RNG
(``tower`` is the Tower+ model card's prompt). Chat formats (``{"messages": [...]}`` in the
model's turn markup) are defined in :mod:`tower_megatron.data.chat_format`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from tower_megatron.data.chat_format import CHAT_FORMATS, CHAT_ROLES
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


# Chat formats live in data/chat_format.py (one definition per family, shared with the exported
# tokenizers' Jinja templates); a format called on messages returns the rendered text.
gemma_chat = CHAT_FORMATS.get("gemma")
chatml_chat = CHAT_FORMATS.get("chatml")
__all__ = [
    "CHAT_FORMATS", "CHAT_ROLES", "TRANSLATION_TEMPLATES", "TemplatePicker", "chatml_chat", "gemma_chat",
    "register_template",
]  # fmt: skip
