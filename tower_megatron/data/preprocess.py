"""``tower-megatron preprocess``: sources → Megatron ``IndexedDataset`` ``.bin/.idx`` + ``stats.json``.

The reading process streams numbered raw lines in chunks to worker processes (parse, clean,
filter, render, tokenize: :mod:`tower_megatron.data.worker`), takes results back in input order,
drops exact duplicates across the whole job, and appends documents to one Megatron
``IndexedDataset`` token file (:class:`tower_megatron.data.writer.TokenFile`) per (source, language
or direction, split). Tasks are cut at ``batch_size`` records or :data:`TASK_BYTES`, so long
documents still spread over all workers. Everything is written into a
staging directory inside ``output_dir``; only when the job succeeded do its sources' directories
and ``stats.json`` replace the old ones (nothing else in ``output_dir`` is touched, see
:mod:`tower_megatron.data.output_dir`), so an error leaves no partial output behind.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import os
import re
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from tower_megatron.config.loader import ConfigError, load_config
from tower_megatron.config.preprocess import PreprocessConfig
from tower_megatron.data import worker
from tower_megatron.data.checks import check_preprocess_config
from tower_megatron.data.languages import UnknownLanguageError, standardize
from tower_megatron.data.output_dir import check_output_dir, staged_output
from tower_megatron.data.readers import FORMATS, InputError, LineReader, detect_format, expand_files
from tower_megatron.data.records import KINDS, TSV_COLUMNS, SourceSpec
from tower_megatron.data.stats import JobStats
from tower_megatron.data.templates import CHAT_FORMATS, TRANSLATION_TEMPLATES, register_template
from tower_megatron.utils.atomic import write_json
from tower_megatron.utils.process import init_with_parent_death

log = logging.getLogger(__name__)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _std(value: str | None, key: str) -> str | None:
    try:
        return None if value is None else standardize(value)
    except UnknownLanguageError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def source_specs(cfg: PreprocessConfig) -> list[SourceSpec]:
    """Checks the sources and resolves them for the workers; :class:`ConfigError` on a bad one."""
    if not cfg.sources:
        raise ConfigError("preprocess: no sources configured")
    problems = check_preprocess_config(cfg)
    if problems:
        raise ConfigError("; ".join(problems))
    if cfg.on_error not in ("raise", "skip"):
        raise ConfigError(f"on_error must be 'raise' or 'skip', got {cfg.on_error!r}")
    if cfg.chat_format not in CHAT_FORMATS:
        raise ConfigError(f"chat_format: {CHAT_FORMATS.unknown_message(cfg.chat_format)}")
    for name, pattern in cfg.templates.items():
        try:
            register_template(name, pattern)
        except ValueError as exc:
            raise ConfigError(f"templates.{name}: {exc}") from None
    specs, seen = [], set()
    for i, s in enumerate(cfg.sources):
        key = f"sources[{i}]"
        if not _NAME.match(s.name or ""):
            raise ConfigError(
                f"{key}.name: {s.name!r} must be a file-name-safe word (letters, digits, _ . -)"
            )
        if s.name in seen:
            raise ConfigError(f"{key}.name: duplicate source name {s.name!r}")
        seen.add(s.name)
        if s.format not in FORMATS:
            raise ConfigError(f"{key}.format: unknown format {s.format!r}; known: {', '.join(FORMATS)}")
        if s.kind not in KINDS:
            raise ConfigError(f"{key}.kind: unknown kind {s.kind!r}; known: {', '.join(KINDS)}")
        if s.directions not in ("both", "forward", "backward"):
            raise ConfigError(f"{key}.directions: must be both, forward or backward, got {s.directions!r}")
        for col in s.columns:
            if col not in TSV_COLUMNS:
                raise ConfigError(f"{key}.columns: unknown column {col!r}; known: {', '.join(TSV_COLUMNS)}")
        for t in s.templates if s.kind == "parallel" else ():
            if t not in TRANSLATION_TEMPLATES:
                raise ConfigError(f"{key}.templates: {TRANSLATION_TEMPLATES.unknown_message(t)}")
        valid = cfg.valid_fraction if s.valid_fraction is None else s.valid_fraction
        test = cfg.test_fraction if s.test_fraction is None else s.test_fraction
        if not (0 <= valid < 1 and 0 <= test < 1 and valid + test < 1):
            raise ConfigError(
                f"{key}: valid_fraction + test_fraction must be in [0, 1), got {valid} + {test}"
            )
        specs.append(
            SourceSpec(
                name=s.name,
                kind=s.kind,
                lang=_std(s.lang, f"{key}.lang"),
                src_lang=_std(s.src_lang, f"{key}.src_lang"),
                tgt_lang=_std(s.tgt_lang, f"{key}.tgt_lang"),
                columns=tuple(s.columns),
                templates=tuple(s.templates),
                template_weights=tuple(s.template_weights),
                directions=s.directions,
                valid_fraction=valid,
                test_fraction=test,
            )
        )
    return specs


Task = tuple[int, str, str, list[tuple[int, bytes]], bool]  # source index, path, format, lines, last chunk
# A task ends at batch_size records or this many bytes, whichever comes first: long documents
# (tens of KB each) in 512-record tasks made a few huge tasks, and one worker finished alone.
TASK_BYTES = 1 << 19  # ~0.15 s of one core's tokenizer time: the last task leaves a core idle briefly


def worker_count(cfg: PreprocessConfig) -> int:
    """``workers``, or the cores this process may run on (its affinity: Slurm, taskset, cgroups)."""
    return cfg.workers or len(os.sched_getaffinity(0)) or 1


def _tasks(cfg: PreprocessConfig, specs: list[SourceSpec], stats: JobStats, progress: Any) -> Iterator[Task]:
    for i, (src_cfg, spec) in enumerate(zip(cfg.sources, specs, strict=True)):
        for path in expand_files(src_cfg.files, spec.name):
            fmt = detect_format(path, src_cfg.format)
            stats.source(spec).files.append(str(path))
            chunk: list[tuple[int, bytes]] = []
            with LineReader(path) as reader:
                done = size = 0
                try:
                    for item in reader:
                        chunk.append(item)
                        size += len(item[1])
                        if len(chunk) >= cfg.batch_size or size >= TASK_BYTES:
                            yield i, str(path), fmt, chunk, False
                            chunk, size = [], 0
                            progress.update(reader.position() - done)
                            done = reader.position()
                except InputError as exc:
                    stats.error(spec.name, exc, raise_=cfg.on_error == "raise")
                progress.update(reader.position() - done)
                stats.source(spec).lines += reader.line
            yield i, str(path), fmt, chunk, True


def _results(cfg: PreprocessConfig, job: worker.WorkerJob, tasks: Iterator[Task], specs: list[SourceSpec]):
    """``(task, ChunkResult)`` in input order, at most a few chunks in flight per worker."""
    workers = worker_count(cfg)
    if workers == 1:
        worker.init_worker(job)
        for task in tasks:
            yield task, worker.process_chunk(specs[task[0]], task[1], task[2], task[3])
        return
    # forkserver: children fork from a clean server that imported only the worker module (no
    # torch, no threads), so start-up is fast and fork-after-threads hazards are avoided.
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["tower_megatron.utils.forkserver_guard", "tower_megatron.data.worker"])
    with ProcessPoolExecutor(
        # Workers die with their parent (the forkserver, which exits with this process): a
        # kill -9 of the job leaves no orphaned tokenizer processes.
        workers,
        mp_context=ctx,
        initializer=init_with_parent_death,
        initargs=(worker.init_worker, job),
    ) as pool:
        pending: deque[tuple[Task, Future]] = deque()
        try:
            for task in tasks:
                pending.append((task, pool.submit(worker.process_chunk, specs[task[0]], *task[1:4])))
                if len(pending) >= 3 * workers:
                    t, fut = pending.popleft()
                    yield t, fut.result()
            while pending:
                t, fut = pending.popleft()
                yield t, fut.result()
        finally:
            for _, fut in pending:
                fut.cancel()


def run_preprocess(cfg: PreprocessConfig) -> dict:
    """Runs the job; returns the stats written to ``<output_dir>/stats.json``.

    Raises :class:`ConfigError` for a bad config and :class:`InputError` (``file:line: field:``)
    for bad input with ``on_error=raise``; in both cases nothing is written.
    """
    from tower_megatron.data.sft_records import CHAT_KINDS
    from tower_megatron.data.sft_tokens import ChatEncoder
    from tower_megatron.data.tokenizer import eod_and_vocab_size, tokenizer_fingerprint
    from tower_megatron.data.writer import DatasetWriters, token_dtype

    specs = source_specs(cfg)
    try:
        eod, vocab_size = eod_and_vocab_size(cfg.tokenizer)
        fingerprint = tokenizer_fingerprint(cfg.tokenizer)
        if any(s.kind in CHAT_KINDS for s in specs):  # the chat format's BOS must be in the vocabulary
            ChatEncoder(cfg.tokenizer, cfg.chat_format, threads=1)
    except (ValueError, OSError, RuntimeError) as exc:  # sentencepiece: RuntimeError on a bad file
        raise ConfigError(
            f"tokenizer.path: cannot load {cfg.tokenizer.path} ({cfg.tokenizer.type}): {exc}"
        ) from None
    dtype = token_dtype(vocab_size)
    job = worker.WorkerJob(
        tokenizer=cfg.tokenizer,
        filters=cfg.filters,
        chat_format=cfg.chat_format,
        seed=cfg.seed,
        templates=tuple(cfg.templates.items()),
        eod=eod if cfg.append_eod else None,
        threads=1 if worker_count(cfg) > 1 else -1,
    )
    tok_info = {"type": cfg.tokenizer.type, "path": cfg.tokenizer.path, "sha256": fingerprint}
    tok_info |= {"vocab_size": vocab_size, "eod": eod}
    stats = JobStats(tokenizer=tok_info, dtype=dtype.__name__, append_eod=cfg.append_eod)
    stats.config = dataclasses.asdict(cfg)
    inputs = {f"sources[{i}].files": expand_files(s.files, s.name) for i, s in enumerate(cfg.sources)}
    check_output_dir(cfg.output_dir, inputs)  # before anything is written
    total_bytes = sum(p.stat().st_size for files in inputs.values() for p in files)

    from tqdm import tqdm

    with (
        staged_output(cfg.output_dir) as staging,
        tqdm(
            total=total_bytes, unit="B", unit_scale=True, desc="preprocess", disable=not cfg.progress
        ) as bar,
    ):
        writers = DatasetWriters(staging, dtype)
        if any(s.kind in CHAT_KINDS for s in specs):  # sft/preference: tokens + loss masks
            # Imported only here: sft_writer loads Megatron-Core (torch), seconds of start-up.
            from tower_megatron.data.sft_writer import ChatDatasetWriters

            chat_writers = ChatDatasetWriters(staging, dtype)
        else:
            chat_writers = DatasetWriters(staging, dtype)  # never written to: adds no files
        seen: set[bytes] = set()
        try:
            for (i, path, _, _, last), res in _results(cfg, job, _tasks(cfg, specs, stats, bar), specs):
                spec = specs[i]
                src = stats.source(spec)
                for err in res.errors:
                    stats.error(spec.name, InputError(*err), cfg.on_error == "raise")
                for (reason, tag), n in res.filtered.items():
                    src.filter(reason, tag, n)
                src.blank_lines += res.blank
                seen_in_file = len(res.records) + sum(res.filtered.values())  # errors: counted by stats.error
                src.file_records[path] = src.file_records.get(path, 0) + seen_in_file
                (chat_writers if spec.kind in CHAT_KINDS else writers).add_chunk(
                    spec, res, seen if cfg.filters.dedup else None, src
                )
                if last and src.file_records[path] == 0:
                    stats.error(spec.name, InputError(path, None, None, "file is empty (no records)", "empty_file"),
                                cfg.on_error == "raise")  # fmt: skip
                bar.set_postfix(docs=writers.documents + chat_writers.documents, refresh=False)
            outputs = writers.finalize() | chat_writers.finalize()
        except BaseException:
            writers.close()
            chat_writers.close()
            raise
        result = stats.to_dict(outputs)
        write_json(staging / "stats.json", result)
    log.info(
        "preprocess: %s documents, %s tokens → %s",
        result["totals"]["documents"],
        result["totals"]["tokens"],
        cfg.output_dir,
    )
    return result


def preprocess_main(config_path: str, overrides: list[str]) -> int:
    """CLI verb: ``tower-megatron preprocess CONFIG [key=value ...]``."""
    import signal
    import sys

    cfg = load_config(PreprocessConfig, config_path, overrides)
    # SIGTERM (a scheduler's or a user's kill) unwinds like an exception, so the staging
    # directory is removed and the pool shut down; its default action would skip both.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        stats = run_preprocess(cfg)
    except InputError as exc:
        print(f"tower-megatron preprocess: bad input: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a full disk, a read-only or vanished output directory
        where = exc.filename or cfg.output_dir
        print(f"tower-megatron preprocess: {exc.strerror or exc} ({where}); nothing was written "
              f"to {cfg.output_dir}", file=sys.stderr)  # fmt: skip
        return 1
    print(JobStats.summary(stats), file=sys.stderr)
    print(f"wrote {Path(cfg.output_dir) / 'stats.json'}", file=sys.stderr)
    return 0
