"""One input line → validated, cleaned record → rendered documents. Runs in worker processes, so
it imports neither torch nor Megatron.

Every problem is an :class:`InputError` naming file, line and field; every dropped record is a
filter reason. Both are counted by the caller.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Optional

from tower_megatron.config.preprocess import FilterConfig
from tower_megatron.data.chat_format import ChatFormatError
from tower_megatron.data.languages import LanguageDetector, UnknownLanguageError, standardize
from tower_megatron.data.readers import InputError
from tower_megatron.data.sft_records import CHAT_KINDS, chat_record, message_list
from tower_megatron.data.templates import CHAT_FORMATS, TemplatePicker

KINDS = ("mono", "parallel", "instruction", "sft", "preference")
TSV_COLUMNS = ("src", "tgt", "src_lang", "tgt_lang", "text", "lang", "id", "skip")
MAX_LINE_BYTES = 64 << 20  # one record; a larger line is an error (or a counted skip), not a stall


@dataclass(frozen=True)
class SourceSpec:
    """A source as the workers need it (picklable, languages already standardized)."""

    name: str
    kind: str
    lang: Optional[str] = None
    src_lang: Optional[str] = None
    tgt_lang: Optional[str] = None
    columns: tuple[str, ...] = ("src", "tgt")
    templates: tuple[str, ...] = ("plain",)
    template_weights: tuple[float, ...] = ()
    directions: str = "both"
    valid_fraction: float = 0.0
    test_fraction: float = 0.0


@dataclass
class Record:
    """A kept record: its documents as (tag, text), a dedup key and its split."""

    line: int
    key: bytes
    split: str
    docs: list[tuple[str, str]] = field(default_factory=list)
    # sft/preference: per document, the assistant spans (start char, end char, mask value)
    spans: Optional[list[list[tuple[int, int, int]]]] = None


class Filtered(Exception):  # noqa: N818 (a control-flow signal, not an error)
    def __init__(self, reason: str, tag: str) -> None:
        self.reason, self.tag = reason, tag


class RecordProcessor:
    def __init__(self, filters: FilterConfig, chat_format: str, seed: int) -> None:
        self.filters = filters
        if filters.normalize not in ("NFC", "NFKC", "none"):
            raise ValueError(f"filters.normalize must be NFC, NFKC or none, got {filters.normalize!r}")
        self.chat = CHAT_FORMATS.get(chat_format)
        self.seed = seed
        self.detector = (
            LanguageDetector(filters.langid.min_prob, filters.langid.min_chars)
            if filters.langid.enabled
            else None
        )
        self._pickers: dict[str, TemplatePicker] = {}

    # -- parsing ---------------------------------------------------------------------------
    def parse(self, raw: bytes, fmt: str, src: SourceSpec, err: _Err) -> dict[str, Any]:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise err(None, f"invalid UTF-8 at byte {exc.start}", "invalid_utf8") from None
        if fmt == "tsv":
            cells = line.split("\t")
            if len(cells) != len(src.columns):
                raise err(
                    "columns", f"expected {len(src.columns)} tab-separated columns {list(src.columns)}, got {len(cells)}",
                    "wrong_columns",
                )  # fmt: skip
            return {c: v for c, v in zip(src.columns, cells, strict=True) if c != "skip"}
        if len(raw) > MAX_LINE_BYTES:
            raise err(
                None, f"line of {len(raw)} bytes is over the {MAX_LINE_BYTES}-byte limit", "line_too_long"
            )
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise err(None, f"malformed JSON: {exc.msg} (column {exc.colno})", "malformed_json") from None
        except RecursionError:
            raise err(None, "JSON nested too deeply", "malformed_json") from None
        except ValueError as exc:  # e.g. an integer of more than 4300 digits
            raise err(None, f"malformed JSON: {str(exc)[:120]}", "malformed_json") from None
        if not isinstance(obj, dict):
            raise err(None, f"expected a JSON object, got {type(obj).__name__}", "not_an_object")
        return obj

    # -- fields ----------------------------------------------------------------------------
    def _text(self, obj: dict, name: str, err: _Err, strip: bool = True) -> str:
        """The field as a checked, normalized string; ``strip=False``: never stripped (chat kinds)."""
        if name not in obj:
            raise err(name, "missing", "missing_field")
        value = obj[name]
        if not isinstance(value, str):
            raise err(name, f"expected a string, got {type(value).__name__}", "wrong_type")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise err(
                name, "contains an unpaired surrogate (not encodable as UTF-8)", "invalid_text"
            ) from None
        if self.filters.normalize != "none":
            value = unicodedata.normalize(self.filters.normalize, value)
        return value.strip() if self.filters.strip and strip else value

    def _lang(self, obj: dict, name: str, fixed: Optional[str], err: _Err) -> str:
        value = obj.get(name)
        if value is None:
            if fixed is None:
                raise err(name, "missing (and the source sets no language)", "missing_field")
            return fixed
        if not isinstance(value, str):
            raise err(name, f"expected a language code string, got {type(value).__name__}", "wrong_type")
        try:
            lang = standardize(value)
        except UnknownLanguageError as exc:
            raise err(name, str(exc), "unknown_language") from None
        if fixed is not None and lang != fixed:
            raise err(name, f"{lang!r} contradicts the source's language {fixed!r}", "language_mismatch")
        return lang

    def _check_length(self, text: str, tag: str) -> None:
        if not text:
            raise Filtered("empty", tag)
        if len(text) < self.filters.min_chars:
            raise Filtered("too_short", tag)
        if self.filters.max_chars and len(text) > self.filters.max_chars:
            raise Filtered("too_long", tag)

    def _check_lang(self, text: str, lang: str, tag: str) -> None:
        if self.detector is not None and self.detector.mismatch(text, lang) is not None:
            raise Filtered("langid", tag)

    # -- kinds -----------------------------------------------------------------------------
    def process(self, raw: bytes, fmt: str, src: SourceSpec, path: str, line: int) -> Optional[Record]:
        """None for a blank line; raises :class:`InputError` or :class:`Filtered`, nothing else:
        with ``on_error=skip`` any record-level problem must be a counted skip, never a crash."""
        try:
            return self._process(raw, fmt, src, path, line)
        except (InputError, Filtered):
            raise
        except (TypeError, ValueError, AttributeError, KeyError, IndexError, RecursionError) as exc:
            # A value of a type no field check anticipated: still this record's problem.
            message = f"unexpected value ({type(exc).__name__}: {str(exc)[:200]})"
            raise InputError(path, line, None, message, "bad_record") from None

    def _process(self, raw: bytes, fmt: str, src: SourceSpec, path: str, line: int) -> Optional[Record]:
        if not raw.strip():
            return None
        err = _Err(path, line)
        obj = self.parse(raw, fmt, src, err)
        doc_id = obj.get("id")
        if doc_id is not None and not isinstance(doc_id, (str, int)):
            raise err("id", f"expected a string or integer, got {type(doc_id).__name__}", "wrong_type")
        spans = None
        if src.kind == "mono":
            lang = self._lang(obj, "lang", src.lang, err)
            text = self._text(obj, "text", err)
            self._check_length(text, lang)
            self._check_lang(text, lang, lang)
            key, docs = _digest("mono", lang, text), [(lang, text)]
        elif src.kind == "instruction":
            lang = self._lang(obj, "lang", src.lang, err)
            messages = self._messages(obj, err)
            contents = "".join(m["content"] for m in messages)
            self._check_length(contents, lang)
            answers = [m["content"] for m in messages if m["role"] == "assistant"]
            self._check_lang(answers[-1] if answers else contents, lang, lang)
            key = _digest("instruction", lang, *(f"{m['role']}\x00{m['content']}" for m in messages))
            try:
                docs = [(lang, self.chat(messages))]
            except ChatFormatError as exc:  # role order (the format's rule, shared with SFT)
                raise err(exc.where("messages"), str(exc), "bad_roles") from None
        elif src.kind in CHAT_KINDS:  # rendered with loss-mask spans: see data/sft_records.py
            tag, parts, texts, spans = chat_record(self, obj, src, err)
            key, docs = _digest(*parts), [(tag, t) for t in texts]
        else:
            key, docs = self._parallel(obj, src, err)
        split_key = f"id:{doc_id}".encode() if doc_id is not None else key
        return Record(line, key, _split(split_key, src.valid_fraction, src.test_fraction), docs, spans)

    def _messages(self, obj: dict, err: _Err) -> list[dict]:
        messages = obj.get("messages")
        if messages is None:
            raise err("messages", "missing", "missing_field")
        return message_list(self, messages, "messages", err, strip=True)

    def _parallel(self, obj: dict, src: SourceSpec, err: _Err) -> tuple[bytes, list]:
        sl = self._lang(obj, "src_lang", src.src_lang, err)
        tl = self._lang(obj, "tgt_lang", src.tgt_lang, err)
        if sl == tl:
            raise err("tgt_lang", f"source and target language are both {sl!r}", "same_language")
        s, t = self._text(obj, "src", err), self._text(obj, "tgt", err)
        tag = f"{sl}-{tl}"
        self._check_length(s, tag)
        self._check_length(t, tag)
        if self.filters.max_length_ratio:
            a, b = len(s.encode()), len(t.encode())
            if max(a, b) > self.filters.max_length_ratio * min(a, b):
                raise Filtered("length_ratio", tag)
        self._check_lang(s, sl, tag)
        self._check_lang(t, tl, tag)
        # A pair and its mirror (tl→sl) are the same pair for dedup.
        key = _digest("parallel", *(x for pair in sorted([(sl, s), (tl, t)]) for x in pair))
        picker = self._pickers.get(src.name)
        if picker is None:
            picker = self._pickers[src.name] = TemplatePicker(src.templates, src.template_weights, self.seed)
        docs = []
        directions = {
            "both": [(sl, s, tl, t), (tl, t, sl, s)],
            "forward": [(sl, s, tl, t)],
            "backward": [(tl, t, sl, s)],
        }
        for a, x, b, y in directions[src.directions]:
            # Keyed by content, not file path or line: the same corpus renders the same anywhere.
            template = picker.pick(f"{src.name}:{key.hex()}:{a}-{b}")
            docs.append((f"{a}-{b}", template.render(x, y, a, b)))
        return key, docs


class _Err:
    """Builds located :class:`InputError` s for one line."""

    def __init__(self, path: str, line: int, prefix: str = "") -> None:
        self.path, self.line, self.prefix = path, line, prefix

    def __call__(self, field: Optional[str], message: str, reason: str) -> InputError:
        return InputError(self.path, self.line, f"{self.prefix}{field}" if field else None, message, reason)


def _digest(*parts: str) -> bytes:
    """16-byte BLAKE2b of the parts (checked encodable by ``_text``), unit-separated."""
    return hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=16).digest()


def _split(key: bytes, valid: float, test: float) -> str:
    if not valid and not test:
        return "train"
    u = int.from_bytes(hashlib.blake2b(key, digest_size=8, person=b"tower-split").digest(), "big") / 2**64
    return "test" if u < test else "valid" if u < test + valid else "train"
