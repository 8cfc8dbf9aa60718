"""Where ``preprocess`` writes, and what it may replace: only its own outputs.

Layout of ``output_dir``: one directory per source (``<output_dir>/<source>/``) and
``stats.json``. A job stages everything in ``<output_dir>/.staging-<pid>-<random>/`` and, when it
succeeded, moves each of its sources' directories over the old one and ``stats.json`` last
(``stats.json`` is removed first, so a crash in between leaves no ``stats.json`` rather than one
describing other files). Anything else in ``output_dir`` (other sources, the user's files) is
never touched, and an ``output_dir`` that holds any input file is refused before anything is
written. A killed job's staging directory is removed by the next job with the same
``output_dir`` once its process is gone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from tower_megatron.config.loader import ConfigError
from tower_megatron.utils.atomic import replace_path

STAGING_PREFIX = ".staging-"
STATS_FILE = "stats.json"


def _inside(path: Path, directory: Path) -> bool:
    return path == directory or directory in path.parents


def check_output_dir(output_dir: str | os.PathLike, inputs: dict[str, list[Path]]) -> None:
    """Refuses an output directory that is a file, cannot be created or written, or contains
    (at any depth) an input file. ``inputs``: config key → its files."""
    out = Path(output_dir).resolve()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output_dir: {output_dir} exists and is not a directory")
    for key, files in inputs.items():
        for file in files:
            if _inside(Path(file).resolve(), out):
                raise ConfigError(
                    f"output_dir: {output_dir} contains the input file {file} ({key}); preprocess "
                    "replaces its outputs there, so choose an output directory outside the inputs"
                )
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"output_dir: cannot create or write {output_dir} ({existing} is not writable)")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(out: Path) -> list[Path]:
    """Staging directories of preprocess jobs whose process no longer exists (killed jobs)."""
    removed = []
    for path in out.glob(f"{STAGING_PREFIX}*"):
        pid = path.name[len(STAGING_PREFIX) :].split("-", 1)[0]
        if path.is_dir() and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def publish(staging: Path, out: Path) -> list[str]:
    """Moves the staged sources and ``stats.json`` into ``out``; returns the names replaced."""
    stats = out / STATS_FILE
    if stats.exists():
        os.replace(stats, staging / f".old-{STATS_FILE}")
    names = sorted(p.name for p in staging.iterdir() if p.is_dir())
    for name in names:
        replace_path(staging / name, out / name, aside=staging / f".old-{name}")
    os.replace(staging / STATS_FILE, stats)
    return names


@contextlib.contextmanager
def staged_output(output_dir: str | os.PathLike) -> Iterator[Path]:
    """A fresh staging directory inside ``output_dir``, published when the block succeeds and
    removed either way."""
    out = Path(output_dir)
    created = [p for p in (out, *out.parents) if not p.exists()]  # removed again on failure
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out)
    staging = out / f"{STAGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    done = False
    try:
        yield staging
        publish(staging, out)
        done = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        for path in created if not done else ():
            with contextlib.suppress(OSError):  # not empty: something else wrote there meanwhile
                path.rmdir()
