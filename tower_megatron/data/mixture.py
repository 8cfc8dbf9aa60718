"""``data.mixture`` → Megatron blends: which token files to sample, how often, and the named
validation sets (``en``, ``pt``, ``en-pt``, ``pt-en``, ``instruction/pt``) logged one by one.

The trainer calls :func:`resolve_mixture`; ``tower-megatron mixture CONFIG`` prints it and writes
the report without training.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from tower_megatron.config.data import DataConfig, MixtureConfig
from tower_megatron.config.loader import ConfigError
from tower_megatron.data.records import KINDS
from tower_megatron.resources import resolve

log = logging.getLogger(__name__)
SPLITS = ("train", "valid", "test")


class RepetitionWarning(UserWarning):
    """A source would be seen more than ``data.mixture.max_epochs`` times."""


@dataclass
class MixtureComponent:
    """One token file family: a (source, language or direction) with its train/valid/test prefixes."""

    source: str
    kind: str
    tag: str
    tokens: int  # training tokens available (EOD included)
    prefixes: dict[str, str] = field(default_factory=dict)  # split -> absolute prefix
    weight: float = 0.0  # share of training samples; all components sum to 1
    planned_tokens: Optional[float] = None
    epochs: Optional[float] = None
    valid_name: Optional[str] = None
    validate: bool = True


@dataclass
class ResolvedMixture:
    components: list[MixtureComponent]
    train_blend: list[tuple[float, str]]  # (weight, prefix): Megatron blend for training
    valid_blend: list[tuple[float, str]]  # the same weights over held-out files (may be empty)
    test_blend: list[tuple[float, str]]
    valid_sets: dict[str, str]  # name -> prefix, evaluated and logged one by one
    total_tokens: Optional[int]
    mode: str  # temperature | weight | tokens
    warnings: list[str] = field(default_factory=list)

    def blend_per_split(self) -> list[Optional[tuple[list[str], list[float]]]]:
        """``BlendedMegatronDatasetConfig(blend_per_split=...)``: [train, valid, test], None if empty."""
        return [
            ([p for _, p in b], [w for w, _ in b]) if b else None
            for b in (self.train_blend, self.valid_blend, self.test_blend)
        ]

    def data_paths(self) -> list[str]:
        """Megatron-LM ``--data-path`` form of the training blend: ``["w1", "prefix1", ...]``."""
        return [x for w, p in self.train_blend for x in (repr(w), p)]


def temperature_weights(counts: dict[str, float], temperature: float) -> dict[str, float]:
    """p_l ∝ n_l^(1/T): T=1 proportional to size, T→∞ uniform (``math.inf`` allowed)."""
    if temperature <= 0:
        raise ConfigError(f"data.mixture.temperature must be > 0, got {temperature}")
    alpha = 0.0 if math.isinf(temperature) else 1.0 / temperature
    raw = {k: (n**alpha if n > 0 else 0.0) for k, n in counts.items()}
    total = sum(raw.values())
    return {k: v / total for k, v in raw.items()} if total else {}


def _stats_path(entry: str) -> Path:
    path = Path(resolve(entry))
    return path / "stats.json" if path.is_dir() or path.suffix != ".json" else path


def load_stats(mix: MixtureConfig, run_preprocess: bool = False) -> list[tuple[Path, dict]]:
    """The ``stats.json`` files named by ``data.mixture.stats``, building them with
    ``data.mixture.preprocess`` when missing and ``run_preprocess`` is set."""
    if not mix.stats:
        raise ConfigError("data.mixture.stats: name the stats.json written by `tower-megatron preprocess`")
    paths = [_stats_path(s) for s in mix.stats]
    missing = [p for p in paths if not p.is_file()]
    if missing and run_preprocess and mix.preprocess:
        from tower_megatron.config.loader import load_config
        from tower_megatron.config.preprocess import PreprocessConfig
        from tower_megatron.data.preprocess import run_preprocess as run

        log.info("mixture: %s missing, running preprocess %s", missing[0], mix.preprocess)
        run(load_config(PreprocessConfig, resolve(mix.preprocess)))
        missing = [p for p in paths if not p.is_file()]
    if missing:
        hint = f"; run `tower-megatron preprocess {mix.preprocess}` first" if mix.preprocess else ""
        raise ConfigError(f"data.mixture.stats: no such file {missing[0]}{hint}")
    return [(p, json.loads(p.read_text(encoding="utf-8"))) for p in paths]


def _components(data: DataConfig, stats: list[tuple[Path, dict]]) -> tuple[list[MixtureComponent], dict]:
    """Selected components and each selected source's amount (weight or token budget)."""
    from tower_megatron.data.tokenizer import tokenizer_fingerprint

    available: dict[str, tuple[Path, dict]] = {}
    for path, st in stats:
        if data.tokenizer.path and st["tokenizer"]["sha256"] != tokenizer_fingerprint(data.tokenizer):
            raise ConfigError(
                f"data.mixture.stats: {path} was tokenized with {st['tokenizer']['path']}, not "
                f"data.tokenizer.path={data.tokenizer.path}; preprocess again with this tokenizer"
            )
        for name, src in st["sources"].items():
            if name in available:
                raise ConfigError(
                    f"data.mixture.stats: source {name!r} appears in {available[name][0]} and {path}"
                )
            available[name] = (path, src)
    comps, amounts = [], {}
    for i, entry in enumerate(data.mixture.sources):
        names = [n for n in available if fnmatch.fnmatchcase(n, entry.name)]
        if not names:
            raise ConfigError(
                f"data.mixture.sources[{i}].name: no source {entry.name!r} in the stats; known: {', '.join(sorted(available))}"
            )
        for name in names:
            if name in amounts:
                raise ConfigError(f"data.mixture.sources[{i}]: source {name!r} is selected twice")
            path, src = available[name]
            tags = src["outputs"]
            for lang in entry.languages:
                if lang not in tags:
                    raise ConfigError(f"data.mixture.sources[{i}].languages: {name!r} has no {lang!r}; known: {', '.join(sorted(tags))}")  # fmt: skip
            for tag in sorted(entry.languages or tags):
                splits = tags[tag]
                comps.append(
                    MixtureComponent(
                        source=name,
                        kind=src["kind"],
                        tag=tag,
                        tokens=splits.get("train", {}).get("tokens", 0),
                        prefixes={s: str((path.parent / v["prefix"]).resolve()) for s, v in splits.items()},
                        validate=entry.validate,
                    )
                )
            amounts[name] = (entry.weight, entry.tokens)
    return comps, amounts


def _assign_weights(mix: MixtureConfig, comps: list[MixtureComponent], amounts: dict) -> str:
    train = [c for c in comps if c.tokens > 0]
    if not train:
        raise ConfigError("data.mixture: the selected sources have no training tokens")
    # amounts: source -> (weight, tokens); one mode for the whole mixture keeps its meaning clear.
    modes = {
        ("weight" if w is not None else "") + ("tokens" if t is not None else "") for w, t in amounts.values()
    }
    if "weighttokens" in modes:
        raise ConfigError("data.mixture.sources: give a source a weight or tokens, not both")
    if len(modes) > 1:
        raise ConfigError("data.mixture.sources: give every source a weight, or every source tokens, or none")
    mode = modes.pop() or "temperature"
    if mode != "temperature":
        amount = {s: (w if mode == "weight" else t) for s, (w, t) in amounts.items()}
        if min(amount.values()) < 0 or sum(amount.values()) <= 0:
            raise ConfigError(f"data.mixture.sources: {mode} must be non-negative with a positive sum")
        by_source: dict[str, list[MixtureComponent]] = defaultdict(list)
        for c in train:
            by_source[c.source].append(c)
        total = sum(amount[s] for s in by_source)
        for source, cs in by_source.items():
            p = temperature_weights({c.tag: c.tokens for c in cs}, mix.temperature)
            for c in cs:
                c.weight = amount[source] / total * p[c.tag]
        return mode
    kinds: dict[str, dict[str, list[MixtureComponent]]] = defaultdict(lambda: defaultdict(list))
    for c in train:
        kinds[c.kind][c.tag].append(c)
    for k in mix.shares:
        if k not in KINDS:
            raise ConfigError(f"data.mixture.shares: unknown kind {k!r}; known: {', '.join(KINDS)}")
    if mix.shares:
        lacking = [k for k in kinds if k not in mix.shares]
        if lacking:
            raise ConfigError(
                f"data.mixture.shares: no share for kind {lacking[0]!r} (selected sources have it)"
            )
        shares = {k: mix.shares[k] for k in kinds}
    else:
        shares = {k: sum(c.tokens for cs in langs.values() for c in cs) for k, langs in kinds.items()}
    if min(shares.values()) < 0 or sum(shares.values()) <= 0:
        raise ConfigError("data.mixture.shares must be non-negative with a positive sum")
    norm = sum(shares.values())
    for kind, langs in kinds.items():
        p = temperature_weights(
            {tag: sum(c.tokens for c in cs) for tag, cs in langs.items()}, mix.temperature
        )
        for tag, cs in langs.items():
            n = sum(c.tokens for c in cs)
            for c in cs:
                c.weight = shares[kind] / norm * p[tag] * c.tokens / n
    return "temperature"


def _valid_names(comps: list[MixtureComponent], names: list[str]) -> dict[str, str]:
    """``en``, ``en-pt``, ``instruction/pt`` (``<name>/<source>`` when several sources share one)."""
    named: dict[str, list[MixtureComponent]] = defaultdict(list)
    for c in comps:
        name = c.tag if c.kind in ("mono", "parallel") else f"{c.kind}/{c.tag}"
        if "valid" in c.prefixes and c.validate and (not names or name in names):
            named[name].append(c)
    out = {}
    for name, cs in sorted(named.items()):
        for c in cs:
            c.valid_name = name if len(cs) == 1 else f"{name}/{c.source}"
            out[c.valid_name] = c.prefixes["valid"]
    return out


def resolve_mixture(
    data: DataConfig,
    total_tokens: Optional[int] = None,
    report_dir: Optional[str | Path] = None,
    run_preprocess: bool = False,
) -> ResolvedMixture:
    """Resolves ``data.mixture`` into Megatron blends and named validation sets.

    Args:
        data: the job's ``data`` section; ``data.mixture.sources`` must be non-empty.
        total_tokens: planned training tokens (train_steps × global_batch_size × seq_length);
            overrides ``data.mixture.total_tokens``. Without either, no repetition check.
        report_dir: where to write ``mixture.md``, ``mixture.json`` and ``mixture.png`` (rank 0
            passes ``<run_dir>/mixture``; others None).
        run_preprocess: build missing ``stats.json`` with ``data.mixture.preprocess`` (rank 0 only).

    Warns :class:`RepetitionWarning` for every component planned above ``max_epochs`` epochs;
    raises :class:`ConfigError` for an unusable mixture.
    """
    mix = data.mixture
    if not mix.sources:
        raise ConfigError("data.mixture.sources is empty: the mixture is off")
    comps, amounts = _components(data, load_stats(mix, run_preprocess))
    mode = _assign_weights(mix, comps, amounts)
    total = total_tokens or mix.total_tokens
    notes = []
    if mode == "tokens":
        budget = sum(t for _, t in amounts.values())
        if total and abs(total - budget) > 0.01 * budget:
            notes.append(
                f"mixture: budgets sum to {budget:,} tokens but the run trains {total:,}; plan scaled"
            )
        total = total or budget
    for c in comps:
        if total and c.tokens:
            c.planned_tokens = c.weight * total
            c.epochs = c.planned_tokens / c.tokens
            if c.epochs > mix.max_epochs:
                msg = (
                    f"mixture: {c.source}/{c.tag} would be repeated {c.epochs:.1f} times "
                    f"({c.planned_tokens:,.0f} planned tokens of {c.tokens:,} available; max_epochs={mix.max_epochs})"
                )
                notes.append(msg)
                warnings.warn(msg, RepetitionWarning, stacklevel=2)
    train = [c for c in comps if c.weight > 0 and "train" in c.prefixes]

    def blend(split: str) -> list[tuple[float, str]]:
        cs = [c for c in train if split in c.prefixes]
        norm = sum(c.weight for c in cs)
        return [(c.weight / norm, c.prefixes[split]) for c in cs]

    resolved = ResolvedMixture(
        components=comps,
        train_blend=blend("train"),
        valid_blend=blend("valid"),
        test_blend=blend("test"),
        valid_sets=_valid_names(comps, mix.valid_languages),
        total_tokens=total,
        mode=mode,
        warnings=notes,
    )
    if report_dir is not None and mix.report:
        from tower_megatron.data.mixture_report import write_report

        write_report(resolved, mix, report_dir)
    return resolved


def mixture_main(config_path: str, overrides: list[str]) -> int:
    """CLI verb: ``tower-megatron mixture CONFIG [key=value ...]`` (a training recipe)."""
    import sys

    from tower_megatron.config.loader import load_config
    from tower_megatron.config.schema import JobConfig
    from tower_megatron.data.mixture_report import table

    job = load_config(JobConfig, config_path, overrides)
    total = (
        job.data.mixture.total_tokens
        or job.train.train_steps * job.train.global_batch_size * job.train.seq_length
    )
    report_dir = Path(job.run.output_dir) / job.run.name / "mixture"
    resolved = resolve_mixture(job.data, total, report_dir=report_dir, run_preprocess=True)
    print(table(resolved))
    print(f"wrote {report_dir}/mixture.md, mixture.json, mixture.png", file=sys.stderr)
    return 0
