"""Language tags (BCP 47 via ``langcodes``) and the ``py3langid`` detector.

Tags are checked against the IANA registry and written in their standard form (``eng`` → ``en``,
``pt_BR`` → ``pt-BR``), so the same language has one name in file names, stats and loss curves.
"""

from __future__ import annotations

import functools
from typing import Optional

import langcodes

# py3langid labels that a declared tag may legitimately come back as (macrolanguages, script
# variants). Keys and values are primary subtags.
_DETECTOR_ALIASES = {"nb": "no", "nn": "no", "cmn": "zh", "yue": "zh", "wuu": "zh", "fil": "tl"}


class UnknownLanguageError(ValueError):
    pass


@functools.lru_cache(maxsize=4096)
def standardize(tag: str) -> str:
    """The standard form of a valid BCP 47 tag; :class:`UnknownLanguageError` otherwise."""
    if not isinstance(tag, str) or not tag.strip():
        raise UnknownLanguageError(f"language code must be a non-empty string, got {tag!r}")
    if not langcodes.tag_is_valid(tag.strip()):
        raise UnknownLanguageError(
            f"unknown language code {tag!r} (expected a BCP 47 tag such as 'en', 'pt-BR')"
        )
    std = langcodes.standardize_tag(tag.strip())
    if std == "und" or std.startswith("und-"):
        raise UnknownLanguageError(f"language code {tag!r} is 'undetermined'; name the language")
    return std


@functools.lru_cache(maxsize=4096)
def display_name(tag: str) -> str:
    """English name used in prompts, e.g. ``pt-PT`` → ``Portuguese (Portugal)``."""
    return langcodes.Language.get(tag).display_name()


def _primary(tag: str) -> str:
    primary = tag.split("-")[0].lower()
    return _DETECTOR_ALIASES.get(primary, primary)


class LanguageDetector:
    """``py3langid`` with normalized probabilities; answers "is ``text`` in ``lang``?"."""

    def __init__(self, min_prob: float = 0.5, min_chars: int = 40) -> None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        self._identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        self._labels = {_primary(label) for label in self._identifier.labels}
        self.min_prob = min_prob
        self.min_chars = min_chars

    def supports(self, lang: str) -> bool:
        return _primary(lang) in self._labels

    def mismatch(self, text: str, lang: str) -> Optional[str]:
        """The confidently detected other language, or None (matches, too short, unsupported)."""
        if len(text) < self.min_chars or not self.supports(lang):
            return None
        detected, prob = self._identifier.classify(text)
        if prob < self.min_prob or _primary(detected) == _primary(lang):
            return None
        return detected
