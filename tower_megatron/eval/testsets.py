"""Test-set readers: translation (WMT24++ JSONL as released, generic JSONL, TSV), IFEval, IF-MT and
chat prompts. Every problem is one :class:`ConfigError` naming ``file:line: field``.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tower_megatron.config.loader import ConfigError
from tower_megatron.data.languages import UnknownLanguageError, standardize
from tower_megatron.resources import resolve
from tower_megatron.utils.jsonl import iter_jsonl


def _error(path: Path | str, line: int | None, field_name: str | None, message: str) -> ConfigError:
    where = f"{path}:{line}" if line is not None else str(path)
    what = f" field '{field_name}':" if field_name else ""
    return ConfigError(f"{where}:{what} {message}")


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _resolve_file(name: str) -> Path:
    path = Path(resolve(name))
    if not path.is_file():
        raise _error(path, None, None, "test set file not found")
    return path


def _jsonl(name: str) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    """``(path, line_number, object)`` for each non-blank line; errors name the resolved path."""
    path = _resolve_file(name)
    for number, obj in iter_jsonl(path, "test set"):
        yield path, number, obj


def _text(obj: dict, names: tuple[str, ...], path: Path, line: int, required: bool = True) -> str | None:
    """The first present field of ``names``: a non-empty string, else an error naming it."""
    for name in names:
        if name in obj and obj[name] is not None:
            value = obj[name]
            if not isinstance(value, str):
                raise _error(path, line, name, f"expected a string, got {type(value).__name__}")
            if not value.strip():
                raise _error(path, line, name, "is empty")
            return value
    if required:
        raise _error(
            path,
            line,
            names[0],
            "missing" + (f" (also looked for {', '.join(names[1:])})" if names[1:] else ""),
        )
    return None


def _language(tag: str, path: Path, line: int, field_name: str) -> str:
    try:
        return standardize(tag.replace("_", "-"))
    except UnknownLanguageError as exc:
        raise _error(path, line, field_name, str(exc)) from None


def split_pair(lp: str, path: Path, line: int, field_name: str = "lp") -> tuple[str, str]:
    """``en-de_DE`` (WMT24++: regions with ``_``) or ``en-de`` → standard tags ``("en", "de-DE")``."""
    parts = lp.split("-")
    if len(parts) != 2 or not all(parts):
        raise _error(
            path,
            line,
            field_name,
            f"unknown language pair {lp!r} (expected SRC-TGT such as 'en-de' or WMT24++'s 'en-de_DE')",
        )
    return _language(parts[0], path, line, field_name), _language(parts[1], path, line, field_name)


@dataclass
class TranslationExample:
    id: str
    src_lang: str
    tgt_lang: str
    source: str
    reference: str
    origin: str  # file:line, so every number can be traced to its test-set line

    @property
    def pair(self) -> str:
        return f"{self.src_lang}-{self.tgt_lang}"


def _pair_of(obj: dict, path: Path, line: int) -> tuple[str, str]:
    if "src_lang" in obj or "tgt_lang" in obj:
        src = _text(obj, ("src_lang",), path, line)
        tgt = _text(obj, ("tgt_lang",), path, line)
        return _language(src, path, line, "src_lang"), _language(tgt, path, line, "tgt_lang")
    lp = _text(obj, ("lp", "language_pair"), path, line)
    return split_pair(lp, path, line, "lp" if "lp" in obj else "language_pair")


def read_translation(name: str, limit: int = 0, skip_bad_source: bool = True) -> list[TranslationExample]:
    """A translation test set. JSONL: WMT24++ (``lp``, ``source``, ``target``, ``is_bad_source``,
    ``document_id``, ``segment_id``) or ``src_lang``/``tgt_lang``/``source``/``reference``;
    TSV: ``lp<TAB>source<TAB>reference``."""
    path = _resolve_file(name)
    out: list[TranslationExample] = []
    if path.name.endswith((".tsv", ".tsv.gz")):
        with _open_text(path) as handle:
            for line, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                cols = raw.rstrip("\n").split("\t")
                names = ("lp", "source", "reference")
                if len(cols) != 3:
                    raise _error(
                        path,
                        line,
                        names[min(len(cols), 2)],
                        f"expected 3 tab-separated columns (lp, source, reference), got {len(cols)}",
                    )
                for col, col_name in zip(cols, names, strict=True):
                    if not col.strip():
                        raise _error(path, line, col_name, "is empty")
                src, tgt = split_pair(cols[0], path, line)
                out.append(
                    TranslationExample(f"{path.name}:{line}", src, tgt, cols[1], cols[2], f"{path}:{line}")
                )
                if limit and len(out) >= limit:
                    break
        return out
    for file, line, obj in _jsonl(name):
        bad = obj.get("is_bad_source", False)
        if not isinstance(bad, bool):
            raise _error(file, line, "is_bad_source", f"expected true/false, got {type(bad).__name__}")
        if bad and skip_bad_source:
            continue
        src, tgt = _pair_of(obj, file, line)
        source = _text(obj, ("source", "src"), file, line)
        reference = _text(obj, ("reference", "target", "tgt", "ref"), file, line)
        ident = obj.get("id") or (
            f"{obj['document_id']}#{obj.get('segment_id')}" if "document_id" in obj else f"{file.name}:{line}"
        )
        out.append(TranslationExample(str(ident), src, tgt, source, reference, f"{file}:{line}"))
        if limit and len(out) >= limit:
            break
    return out


@dataclass
class IFEvalExample:
    key: int | str
    prompt: str
    instruction_id_list: list[str]
    kwargs: list[dict[str, Any]]
    lang: str
    origin: str


def read_ifeval(name: str, limit: int = 0, known_instructions: set[str] | None = None) -> list[IFEvalExample]:
    """IFEval JSONL as released (``key``, ``prompt``, ``instruction_id_list``, ``kwargs``), plus an
    optional ``lang`` (default ``en``) for the per-language breakdown."""
    out: list[IFEvalExample] = []
    for path, line, obj in _jsonl(name):
        prompt = _text(obj, ("prompt",), path, line)
        if "key" not in obj:
            raise _error(path, line, "key", "missing")
        ids, kwargs = obj.get("instruction_id_list"), obj.get("kwargs")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise _error(path, line, "instruction_id_list", "expected a non-empty list of strings")
        if not isinstance(kwargs, list) or not all(isinstance(k, dict) for k in kwargs):
            raise _error(path, line, "kwargs", "expected a list of objects")
        if len(kwargs) != len(ids):
            raise _error(path, line, "kwargs", f"has {len(kwargs)} entries for {len(ids)} instructions")
        if known_instructions is not None:
            for ident in ids:
                if ident not in known_instructions:
                    raise _error(path, line, "instruction_id_list", f"unknown instruction {ident!r}")
        lang = _language(obj.get("lang") or "en", path, line, "lang")
        out.append(IFEvalExample(obj["key"], prompt, ids, kwargs, lang, f"{path}:{line}"))
        if limit and len(out) >= limit:
            break
    return out


@dataclass
class IFMTExample:
    id: str
    src_lang: str
    tgt_lang: str
    source: str
    reference: str
    prompt: str  # the whole request: translation instruction + verifiable constraints
    constraints: list[dict[str, Any]] = field(default_factory=list)
    origin: str = ""

    @property
    def pair(self) -> str:
        return f"{self.src_lang}-{self.tgt_lang}"


def read_ifmt(name: str, limit: int = 0, known_constraints: set[str] | None = None) -> list[IFMTExample]:
    """IF-MT JSONL: ``id``, ``src_lang``, ``tgt_lang``, ``source``, ``reference``, ``prompt`` and
    ``constraints`` (a list of ``{"type": ..., ...}``; see :mod:`tower_megatron.eval.ifmt`)."""
    out: list[IFMTExample] = []
    for path, line, obj in _jsonl(name):
        src, tgt = _pair_of(obj, path, line)
        source = _text(obj, ("source",), path, line)
        reference = _text(obj, ("reference",), path, line)
        prompt = _text(obj, ("prompt",), path, line)
        constraints = obj.get("constraints", [])
        if not isinstance(constraints, list) or not all(isinstance(c, dict) for c in constraints):
            raise _error(path, line, "constraints", "expected a list of objects")
        for c in constraints:
            kind = c.get("type")
            if not isinstance(kind, str):
                raise _error(path, line, "constraints", "each constraint needs a string 'type'")
            if known_constraints is not None and kind not in known_constraints:
                known = ", ".join(sorted(known_constraints))
                raise _error(path, line, "constraints", f"unknown constraint type {kind!r}; known: {known}")
        ident = str(obj.get("id") or f"{path.name}:{line}")
        out.append(IFMTExample(ident, src, tgt, source, reference, prompt, constraints, f"{path}:{line}"))
        if limit and len(out) >= limit:
            break
    return out


@dataclass
class ChatExample:
    id: str
    lang: str
    prompt: str
    baseline: str  # the baseline model's answer the judge compares against
    origin: str


def read_chat(name: str, limit: int = 0) -> list[ChatExample]:
    """Chat prompts with a baseline answer (M-ArenaHard style): ``id``, ``lang``, ``prompt``, ``baseline``."""
    out: list[ChatExample] = []
    for path, line, obj in _jsonl(name):
        prompt = _text(obj, ("prompt",), path, line)
        baseline = _text(obj, ("baseline",), path, line)
        lang = _language(obj.get("lang") or "en", path, line, "lang")
        out.append(
            ChatExample(str(obj.get("id") or f"{path.name}:{line}"), lang, prompt, baseline, f"{path}:{line}")
        )
        if limit and len(out) >= limit:
            break
    return out
