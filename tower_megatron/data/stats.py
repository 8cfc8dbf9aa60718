"""Counters of a preprocess job and the ``stats.json`` they become.

``stats.json`` (version 1)::

    tokenizer: {type, path, sha256, vocab_size, eod}, dtype, append_eod
    sources: {name: {kind, files, lines, blank_lines, kept, errors: {reason: n},
                     filtered: {reason: n}, filtered_by_tag: {tag: {reason: n}},
                     outputs: {tag: {split: {prefix, documents, tokens}}}}}
    totals: {documents, tokens, errors, filtered,
             by_kind: {kind: {documents, tokens, filtered, languages: {tag: {documents, tokens, filtered}}}}}
    error_examples: ["file:line: field 'x': ..."]   (on_error=skip)

Prefixes are relative to the directory holding ``stats.json``; token counts include the EOD token.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tower_megatron.data.readers import InputError
from tower_megatron.data.records import SourceSpec

MAX_EXAMPLES = 20


@dataclass
class SourceStats:
    name: str
    kind: str
    files: list[str] = field(default_factory=list)
    lines: int = 0
    blank_lines: int = 0
    kept: int = 0
    errors: Counter = field(default_factory=Counter)
    filtered: Counter = field(default_factory=Counter)
    filtered_by_tag: dict[str, Counter] = field(default_factory=dict)
    file_records: dict[str, int] = field(default_factory=dict)  # records + filtered + errors per file

    def filter(self, reason: str, tag: str, n: int = 1) -> None:
        self.filtered[reason] += n
        self.filtered_by_tag.setdefault(tag, Counter())[reason] += n


class JobStats:
    def __init__(self, tokenizer: dict, dtype: str, append_eod: bool) -> None:
        self.tokenizer, self.dtype, self.append_eod = tokenizer, dtype, append_eod
        self.sources: dict[str, SourceStats] = {}
        self.examples: list[str] = []
        self.config: dict = {}

    def source(self, spec: SourceSpec) -> SourceStats:
        if spec.name not in self.sources:
            self.sources[spec.name] = SourceStats(spec.name, spec.kind)
        return self.sources[spec.name]

    def error(self, source: str, exc: InputError, raise_: bool) -> None:
        """Raises ``exc`` (on_error=raise) or counts it as a skip."""
        if raise_:
            raise exc
        src = self.sources[source]
        src.errors[exc.reason] += 1
        src.file_records[exc.path] = src.file_records.get(exc.path, 0) + 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(str(exc))

    def to_dict(self, outputs: dict) -> dict[str, Any]:
        sources: dict[str, Any] = {}
        by_kind: dict[str, Any] = {}
        errors, filtered = Counter(), Counter()
        total_docs = total_tokens = 0
        for name, s in self.sources.items():
            outs = outputs.get(name, {})
            sources[name] = {
                "kind": s.kind,
                "files": s.files,
                "lines": s.lines,
                "blank_lines": s.blank_lines,
                "kept": s.kept,
                "errors": dict(s.errors),
                "filtered": dict(s.filtered),
                "filtered_by_tag": {t: dict(c) for t, c in sorted(s.filtered_by_tag.items())},
                "outputs": outs,
            }
            errors.update(s.errors)
            filtered.update(s.filtered)
            kind = by_kind.setdefault(
                s.kind, {"documents": 0, "tokens": 0, "filtered": Counter(), "languages": {}}
            )
            kind["filtered"].update(s.filtered)
            for tag in sorted(set(outs) | set(s.filtered_by_tag)):
                lang = kind["languages"].setdefault(tag, {"documents": 0, "tokens": 0, "filtered": Counter()})
                lang["filtered"].update(s.filtered_by_tag.get(tag, {}))
                for split in outs.get(tag, {}).values():
                    for entry in (lang, kind):
                        entry["documents"] += split["documents"]
                        entry["tokens"] += split["tokens"]
                    total_docs += split["documents"]
                    total_tokens += split["tokens"]
        for kind in by_kind.values():
            kind["filtered"] = dict(kind["filtered"])
            for lang in kind["languages"].values():
                lang["filtered"] = dict(lang["filtered"])
        return {
            "version": 1,
            "tokenizer": self.tokenizer,
            "dtype": self.dtype,
            "append_eod": self.append_eod,
            "sources": sources,
            "totals": {
                "documents": total_docs,
                "tokens": total_tokens,
                "errors": dict(errors),
                "filtered": dict(filtered),
                "by_kind": by_kind,
            },
            "error_examples": self.examples,
            "config": self.config,
        }

    @staticmethod
    def summary(stats: dict) -> str:
        """A short human-readable table of a ``stats.json`` dict."""
        rows = [
            f"{'source':<20} {'kind':<12} {'kept':>8} {'filtered':>9} {'errors':>7} {'documents':>10} {'tokens':>11}"
        ]
        for name, s in stats["sources"].items():
            docs = sum(x["documents"] for t in s["outputs"].values() for x in t.values())
            toks = sum(x["tokens"] for t in s["outputs"].values() for x in t.values())
            rows.append(
                f"{name:<20} {s['kind']:<12} {s['kept']:>8} {sum(s['filtered'].values()):>9} "
                f"{sum(s['errors'].values()):>7} {docs:>10} {toks:>11}"
            )
        t = stats["totals"]
        rows.append(f"{'total':<20} {'':<12} {'':>8} {sum(t['filtered'].values()):>9} "
                    f"{sum(t['errors'].values()):>7} {t['documents']:>10} {t['tokens']:>11}")  # fmt: skip
        return "\n".join(rows)
