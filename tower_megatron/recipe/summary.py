"""What a finished recipe leaves for a reader: the Pareto report over its evaluations, its
training curves (loss, GRPO reward, eval scores per stage) as PNGs, and ``summary.md`` saying what
each stage changed on both axes — every score a link to the eval JSON field it was read from."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from tower_megatron.utils.atomic import atomic_path, write_text

AXES = (("translation", "/summary/translation_score"), ("general", "/summary/general_score"))
LOSS_KEY = "train/loss"
REWARD_KEY = "grpo/reward_mean"


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """A run's ``metrics.jsonl``; after a resume the steps it logged twice keep their last value."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    by_step: dict[int, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut by kill -9
            continue
        if isinstance(rec, dict) and "step" in rec:
            by_step.setdefault(int(rec["step"]), {}).update(rec)
    return [by_step[s] for s in sorted(by_step)]


def curve(records: list[dict[str, Any]], key: str) -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r[key])) for r in records
            if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]  # fmt: skip


def _savefig(fig, target: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(target, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def plot_curves(out_dir: Path, stages: list[tuple[str, list[dict[str, Any]]]]) -> list[Path]:
    """``loss.png`` (every train stage, one panel each: their losses are different quantities),
    ``reward.png`` (GRPO's mean reward) when a stage logged one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    with_loss = [(n, curve(r, LOSS_KEY)) for n, r in stages if curve(r, LOSS_KEY)]
    if with_loss:
        fig, axes = plt.subplots(
            1, len(with_loss), figsize=(3.2 * len(with_loss), 3.0), dpi=110, squeeze=False
        )
        for ax, (name, pts) in zip(axes[0], with_loss, strict=True):
            ax.plot([s for s, _ in pts], [v for _, v in pts], marker=".", color="tab:blue")
            ax.set_title(name)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("train/loss")
        _savefig(fig, out_dir / "loss.png")
        written.append(out_dir / "loss.png")
    with_reward = [(n, curve(r, REWARD_KEY)) for n, r in stages if curve(r, REWARD_KEY)]
    if with_reward:
        fig, ax = plt.subplots(figsize=(5.0, 3.2), dpi=110)
        for name, pts in with_reward:
            ax.plot([s for s, _ in pts], [v for _, v in pts], marker=".", label=name)
        ax.set_xlabel("rollout step")
        ax.set_ylabel("mean reward")
        ax.legend(loc="best")
        ax.grid(alpha=0.3)
        _savefig(fig, out_dir / "reward.png")
        written.append(out_dir / "reward.png")
    return written


def plot_scores(out_dir: Path, rows: list[dict[str, Any]]) -> Path | None:
    """``scores.png``: translation and general score after each evaluated stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(5.0, 3.2), dpi=110)
    labels = [r["label"] for r in rows]
    for axis, _ in AXES:
        ys = [r["values"].get(axis, {}).get("value", float("nan")) for r in rows]
        ax.plot(range(len(rows)), ys, marker="o", label=f"{axis} score")
    ax.set_xticks(range(len(rows)), labels)
    ax.set_xlabel("after stage")
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    _savefig(fig, out_dir / "scores.png")
    return out_dir / "scores.png"


def _link(value: dict | None, base: Path) -> str:
    if value is None:
        return "–"
    path, _, pointer = value["source"].partition("#")
    return f"[{value['value']:.2f}]({os.path.relpath(path, base.resolve())}#{pointer})"


def _delta(cur: dict | None, prev: dict | None) -> str:
    if cur is None or prev is None:
        return "–"
    return f"{cur['value'] - prev['value']:+.2f}"


def summary_markdown(root: Path, planned, rows: list[dict[str, Any]], plots: list[Path]) -> str:
    lines = [f"# Recipe `{root.name}`", "", "| # | stage | kind | config |", "|---|---|---|---|"]
    for p in planned:
        lines.append(f"| {p.index + 1} | {p.spec.name} | {p.spec.kind} | `{p.config_path}` |")
    lines += [
        "",
        "## What each stage changed",
        "",
        "Scores from each stage's eval `results.json` (every number links to its field); Δ is the "
        "change from the previous evaluated stage.",
        "",
        "| after stage | translation | Δ translation | general | Δ general |",
        "|---|---|---|---|---|",
    ]
    prev: dict[str, Any] = {}
    for row in rows:
        cur = {axis: row["values"].get(axis) for axis, _ in AXES}
        lines.append(
            f"| {row['label']} | {_link(cur['translation'], root)} | {_delta(cur['translation'], prev.get('translation'))}"
            f" | {_link(cur['general'], root)} | {_delta(cur['general'], prev.get('general'))} |"
        )
        prev = cur
    if rows:
        metric = {str(r.get("translation_metric")) for r in rows}
        lines += ["", f"Translation score: {', '.join(sorted(metric))} (macro over language pairs). General "
                  "score: IFEval prompt-level strict accuracy, averaged with the judged chat win rate when a "
                  "judge was configured."]  # fmt: skip
    lines += ["", "## Plots", ""] + [f"![{p.stem}]({os.path.relpath(p, root)})" for p in plots]
    if (root / "report" / "pareto.md").is_file():
        lines += ["", "Pareto report: [report/pareto.md](report/pareto.md)"]
    return "\n".join(lines) + "\n"


def write_recipe_outputs(
    root: Path, planned, evals: list[tuple[str, Path]], report: bool = True
) -> list[Path]:
    """Pareto report (``report/``), plots (``plots/``) and ``summary.md``; returns what it wrote."""
    from tower_megatron.eval.report import write_pareto_report

    written: list[Path] = []
    present = [(label, path) for label, path in evals if path.is_file()]
    rows: list[dict[str, Any]] = []
    if report and present:
        rep = write_pareto_report(
            [p for _, p in present], root / "report", labels=[lbl for lbl, _ in present]
        )
        rows = rep["rows"]
        written += [root / "report" / "pareto.md", root / "report" / "pareto.json"]
        if rep["plot"]:
            written.append(root / "report" / "pareto.png")
    trains = [(p.spec.name, read_metrics(p.run_dir)) for p in planned if p.spec.kind == "train"]
    plots = plot_curves(root / "plots", trains)
    scores = plot_scores(root / "plots", rows)
    plots += [scores] if scores else []
    written += plots
    write_text(root / "summary.md", summary_markdown(root, planned, rows, plots))
    written.append(root / "summary.md")
    return written
