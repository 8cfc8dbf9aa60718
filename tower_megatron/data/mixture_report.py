"""The mixture report: a Markdown table, the same as JSON, and a bar chart of planned tokens per
language and kind (matplotlib, Agg backend: no display needed). All written atomically."""

from __future__ import annotations

import dataclasses
import io
from collections import defaultdict
from pathlib import Path

from tower_megatron.config.data import MixtureConfig
from tower_megatron.data.mixture import ResolvedMixture
from tower_megatron.utils.atomic import atomic_open, write_json, write_text

KIND_COLORS = {"mono": "#4C72B0", "parallel": "#DD8452", "instruction": "#55A868"}


def _fmt(x: float | None, spec: str) -> str:
    return "" if x is None else format(x, spec)


def table(resolved: ResolvedMixture) -> str:
    """Markdown table, one row per (source, language or direction)."""
    head = "| source | kind | tag | available tokens | weight | planned tokens | epochs | valid set |"
    rows = [head, "|" + "---|" * 8]
    for c in sorted(resolved.components, key=lambda c: (c.kind, c.source, c.tag)):
        flag = (
            " ⚠"
            if c.epochs is not None and any(f"{c.source}/{c.tag} " in w for w in resolved.warnings)
            else ""
        )
        rows.append(
            f"| {c.source} | {c.kind} | {c.tag} | {c.tokens:,} | {c.weight:.4f} | "
            f"{_fmt(c.planned_tokens, ',.0f')} | {_fmt(c.epochs, '.2f')}{flag} | {c.valid_name or ''} |"
        )
    kinds: dict[str, float] = defaultdict(float)
    for c in resolved.components:
        kinds[c.kind] += c.weight
    shares = ", ".join(f"{k} {v:.1%}" for k, v in sorted(kinds.items()))
    total = f"{resolved.total_tokens:,}" if resolved.total_tokens else "unknown"
    foot = [f"\nmode: {resolved.mode}; planned training tokens: {total}; shares by kind: {shares}"]
    foot += [f"- {w}" for w in resolved.warnings]
    return "\n".join(rows + foot)


def plot(resolved: ResolvedMixture) -> bytes:
    """PNG bytes: planned tokens (or sampling share, without a token total) per tag, by kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    use_tokens = resolved.total_tokens is not None
    values: dict[tuple[str, str], float] = defaultdict(float)
    for c in resolved.components:
        values[(c.kind, c.tag)] += (c.planned_tokens or 0.0) if use_tokens else c.weight
    keys = sorted(values, key=lambda k: (list(KIND_COLORS).index(k[0]) if k[0] in KIND_COLORS else 9, k[1]))
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.22 * len(keys) + 1.2)))
    ax.barh(
        range(len(keys)), [values[k] for k in keys], color=[KIND_COLORS.get(k[0], "#8172B3") for k in keys]
    )
    ax.set_yticks(range(len(keys)), [k[1] for k in keys], fontsize=7)
    ax.margins(y=0.01)
    ax.invert_yaxis()
    ax.set_xlabel("planned training tokens" if use_tokens else "share of training samples")
    ax.set_title("Data mixture by language / direction and kind")
    handles = [plt.Rectangle((0, 0), 1, 1, color=col) for kind, col in KIND_COLORS.items()]
    ax.legend(handles, list(KIND_COLORS), loc="lower right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_report(resolved: ResolvedMixture, mix: MixtureConfig, report_dir: str | Path) -> Path:
    """Writes ``mixture.md``, ``mixture.json`` and ``mixture.png`` into ``report_dir``."""
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "mixture.md", "# Data mixture\n\n" + table(resolved) + "\n")
    write_json(
        out / "mixture.json",
        {
            "config": dataclasses.asdict(mix),
            "mode": resolved.mode,
            "total_tokens": resolved.total_tokens,
            "components": [dataclasses.asdict(c) for c in resolved.components],
            "train_blend": resolved.train_blend,
            "valid_blend": resolved.valid_blend,
            "test_blend": resolved.test_blend,
            "valid_sets": resolved.valid_sets,
            "warnings": resolved.warnings,
        },
    )
    with atomic_open(out / "mixture.png", "wb") as handle:
        handle.write(plot(resolved))
    return out
