"""IF-MT: translation requests carrying verifiable instructions.

Each constraint type is a registered checker ``(example, output) -> bool``; the translation inside
the output (the JSON value when JSON was asked for) is scored with chrF against the reference.
Constraint results and translation quality are reported separately and combined
(chrF × constraint pass rate / 100, the share of quality that came with the instructions obeyed).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from tower_megatron.eval.testsets import IFMTExample
from tower_megatron.registry import Registry

Checker = Callable[[IFMTExample, str, dict[str, Any]], bool]
CONSTRAINTS: Registry[Checker] = Registry("IF-MT constraint")

_HTML_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*\b[^<>]*?/?>")
# Markdown markup that must survive translation: emphasis/code markers, link targets, heading and
# list prefixes.
_MD_MARKERS = re.compile(r"\*\*|__|`|\]\([^)]*\)")
_MD_LINE_PREFIX = re.compile(r"^(#{1,6} |[-*+] |\d+\. )", re.MULTILINE)
# printf/Python-format placeholders ({name}, %(name)s, %s, %d) and numbers with their separators.
_PLACEHOLDER = re.compile(r"%\([A-Za-z_][A-Za-z0-9_]*\)[sdifr]|%[sdif]|\{[A-Za-z_0-9]*\}")
_NUMBER = re.compile(r"(?<![\w%])\d+(?:[.,]\d+)*")
_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(.*?)\n\s*```\s*$", re.DOTALL)


def _tag_names(text: str) -> Counter:
    # Tag names with their opening/closing slash: attribute order or quoting may change.
    return Counter(re.sub(r"\s.*", "", m.group(0).rstrip(">/")).lower() for m in _HTML_TAG.finditer(text))


def markup(text: str) -> Counter:
    """The multiset of HTML tags and markdown markers in ``text``."""
    found = _tag_names(text)
    found.update(m.group(0) for m in _MD_MARKERS.finditer(text))
    found.update(
        m.group(1).strip() if not m.group(1)[0].isdigit() else "1." for m in _MD_LINE_PREFIX.finditer(text)
    )
    return found


def parse_json_output(output: str) -> Any:
    """The JSON value of ``output`` (a ```json fence around it allowed); None if it is not JSON."""
    text = output.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def translation_text(example: IFMTExample, output: str) -> str:
    """The translation inside ``output``: the ``translation_key`` value when JSON was requested."""
    for c in example.constraints:
        if c["type"] == "json_keys":
            value = parse_json_output(output)
            key = c.get("translation_key", c["keys"][0])
            if isinstance(value, dict) and isinstance(value.get(key), str):
                return value[key]
            return ""
    return output.strip()


@CONSTRAINTS.register("keep_markup")
def keep_markup(example: IFMTExample, output: str, c: dict[str, Any]) -> bool:
    """Every HTML tag and markdown marker of the source, as many times, and no others."""
    return markup(translation_text(example, output)) == markup(example.source)


@CONSTRAINTS.register("glossary")
def glossary(example: IFMTExample, output: str, c: dict[str, Any]) -> bool:
    """``terms: {source term: required target term}``; each required term appears (case-insensitive)."""
    text = translation_text(example, output).casefold()
    return all(target.casefold() in text for target in c["terms"].values())


@CONSTRAINTS.register("json_keys")
def json_keys(example: IFMTExample, output: str, c: dict[str, Any]) -> bool:
    """Output is one JSON object with exactly ``keys``, each a string."""
    value = parse_json_output(output)
    return (
        isinstance(value, dict)
        and sorted(value) == sorted(c["keys"])
        and all(isinstance(v, str) for v in value.values())
    )


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


@CONSTRAINTS.register("formal_register")
def formal_register(example: IFMTExample, output: str, c: dict[str, Any]) -> bool:
    """At least one formal address word (``formal``, exact case: German ``Sie``) and no informal one
    (``informal``, any case)."""
    words = _words(translation_text(example, output))
    lowered = {w.casefold() for w in words}
    has_formal = any(w in c["formal"] for w in words)
    return has_formal and not any(w.casefold() in lowered for w in c.get("informal", []))


@CONSTRAINTS.register("max_chars")
def max_chars(example: IFMTExample, output: str, c: dict[str, Any]) -> bool:
    return 0 < len(translation_text(example, output).strip()) <= int(c["max"])


@CONSTRAINTS.register("keep_placeholders")
def keep_placeholders(example: IFMTExample, output: str, c: dict[str, Any]) -> bool:
    """Every placeholder and number of the source, unchanged and as often (numbers with a
    separator may switch between ``.`` and ``,`` — locales write 3.5 as 3,5)."""
    text = translation_text(example, output)

    def items(s: str) -> Counter:
        found = Counter(m.group(0) for m in _PLACEHOLDER.finditer(s))
        stripped = _PLACEHOLDER.sub(" ", s)
        found.update(re.sub(r"[.,]", ".", m.group(0)) for m in _NUMBER.finditer(stripped))
        return found

    return items(text) == items(example.source)


def check(example: IFMTExample, output: str) -> dict[str, bool]:
    """``{constraint type: followed}`` for each constraint of ``example``."""
    return {c["type"]: bool(CONSTRAINTS.get(c["type"])(example, output, c)) for c in example.constraints}
