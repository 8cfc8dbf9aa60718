"""Atomic file and directory writes: readers see the old content or the new, never a half.

Everything a run writes for others to read (configs, reports, token files, exported models) goes
through here: write to a temporary name beside the target, flush, then ``os.replace``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def replace_path(source: Path, target: Path, aside: Path | None = None) -> None:
    """``os.replace(source, target)`` that also works when both are directories.

    ``os.replace`` cannot overwrite a non-empty directory, so the old one is moved to ``aside``
    first and deleted after; a crash in between leaves ``target`` either old or new, plus a
    leftover ``aside`` that the caller's clean-up recognises by name.
    """
    if source.is_dir() and target.is_dir():
        aside = aside or target.with_name(f".{target.name}.old")
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(target, aside)
        os.replace(source, target)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(source, target)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yields a temporary path beside ``target``; renamed onto it only if the block succeeds.

    Works for files and directories (the block creates whatever it wants at the path).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f"{suffix}.tmp", dir=target.parent)
    os.close(fd)
    os.unlink(tmp)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        replace_path(tmp_path, target)
    finally:
        if tmp_path.is_dir():
            shutil.rmtree(tmp_path, ignore_errors=True)
        elif tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_open(target: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """``open`` for writing that only replaces ``target`` once the block finished."""
    with atomic_path(target) as tmp, open(tmp, mode, **kwargs) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_open(target, "w", encoding="utf-8") as handle:
        handle.write(text)


def write_json(target: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    write_text(target, json.dumps(obj, indent=indent, ensure_ascii=False, sort_keys=False) + "\n")
