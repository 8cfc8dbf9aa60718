"""Reading a JSONL file of records for a verb (GRPO prompt sets, ``generate`` requests, test sets),
where every problem with the file itself is one :class:`ConfigError` naming file and line.

The preprocessing readers (``data/readers.py``) are separate on purpose: they move raw bytes to
worker processes and can count a bad line as a skip (``on_error=skip``) instead of stopping.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tower_megatron.config.loader import ConfigError


def iter_jsonl(path: str | Path, what: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of ``path`` (a ``resource:`` path too;
    ``.gz`` is read through gzip; a UTF-8 byte-order mark is ignored).

    Errors, each a :class:`ConfigError`: ``{what}: no such file: {path}``, and per line
    ``{path}:{line}: invalid JSON (...)``, ``... not UTF-8 text (...)`` or ``... expected a JSON
    object, got list``. Callers locate their own field errors the same way, ``f"{path}:{line}"``.
    """
    from tower_megatron.resources import resolve

    file = Path(resolve(str(path)))
    if not file.is_file():
        raise ConfigError(f"{what}: no such file: {path}")
    with gzip.open(file, "rb") if file.suffix == ".gz" else file.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise ConfigError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{where}: invalid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise ConfigError(f"{where}: expected a JSON object, got {type(record).__name__}")
            yield number, record
