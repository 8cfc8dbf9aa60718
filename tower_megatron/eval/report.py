"""``tower-megatron report CONFIG``: eval results of several stages/runs → a table and the Tower+
Pareto plot (translation score vs general score).

Every number in the table links to the eval JSON it was read from, with a JSON pointer to the
field (``results.json#/summary/translation_score``); ``pareto.json`` carries the same sources.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tower_megatron.config.loader import ConfigError, load_config
from tower_megatron.eval.config import ReportConfig
from tower_megatron.utils.atomic import atomic_path, write_json, write_text

# Columns: (title, JSON pointer into results.json).
COLUMNS = (
    ("translation", "/summary/translation_score"),
    ("general", "/summary/general_score"),
    ("chrF", "/suites/translation/overall/chrf"),
    ("chrF++", "/suites/translation/overall/chrf++"),
    ("BLEU", "/suites/translation/overall/bleu"),
    ("IFEval prompt strict", "/suites/ifeval/overall/prompt_level_strict_acc"),
    ("IFEval inst loose", "/suites/ifeval/overall/inst_level_loose_acc"),
    ("IF-MT combined", "/suites/ifmt/overall/combined"),
    ("chat win rate", "/suites/chat/overall/win_rate"),
)


def resolve_results(path: str | Path) -> Path:
    """An eval's ``results.json`` from the file itself or the eval output directory."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise ConfigError(f"report input not found: {path} (an eval results.json or its directory)")
    return path


def pointer_get(obj: Any, pointer: str) -> Any:
    """RFC 6901 lookup (``~1`` is ``/``, ``~0`` is ``~``); None where the path does not exist."""
    for part in pointer.lstrip("/").split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (higher is better on both)."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (ox >= x and oy >= y) and (ox > x or oy > y) for j, (ox, oy) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return front


def _rows(eval_jsons: list[str | Path], labels: list[str] | None) -> list[dict]:
    rows = []
    for i, item in enumerate(eval_jsons):
        path = resolve_results(item)
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
        if not isinstance(results, dict) or "summary" not in results:
            raise ConfigError(f"{path}: not a tower-megatron eval results file (no 'summary')")
        label = labels[i] if labels else results.get("name") or path.parent.name
        values = {}
        for title, pointer in COLUMNS:
            value = pointer_get(results, pointer)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                values[title] = {"value": float(value), "source": f"{path.resolve()}#{pointer}"}
        metric = pointer_get(results, "/summary/translation_metric")
        rows.append(
            {"label": label, "results": str(path.resolve()), "translation_metric": metric, "values": values}
        )
    return rows


def _plot(rows: list[dict], front: list[int], plotted: list[int], target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    xs = [rows[i]["values"]["general"]["value"] for i in plotted]
    ys = [rows[i]["values"]["translation"]["value"] for i in plotted]
    ax.scatter(xs, ys, color="tab:blue", zorder=3)
    for i, x, y in zip(plotted, xs, ys, strict=True):
        ax.annotate(rows[i]["label"], (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    frontier = sorted(
        (rows[i]["values"]["general"]["value"], rows[i]["values"]["translation"]["value"]) for i in front
    )
    if frontier:
        ax.step(
            [p[0] for p in frontier],
            [p[1] for p in frontier],
            where="pre",
            color="tab:red",
            linestyle="--",
            label="Pareto frontier",
            zorder=2,
        )
        ax.legend(loc="best")
    metrics = sorted({str(rows[i]["translation_metric"]) for i in plotted})
    ax.set_xlabel("general score (IFEval prompt-strict / chat win rate, %)")
    ax.set_ylabel(f"translation score ({', '.join(metrics)})")
    ax.set_title("Translation vs general capability")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(target, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_pareto_report(
    eval_jsons: list[str | Path], out_dir: str | Path, labels: list[str] | None = None
) -> dict:
    """Writes ``pareto.md`` (table, every number linked to its source), ``pareto.json`` and
    ``pareto.png`` into ``out_dir``; returns the report (as in ``pareto.json``)."""
    if not eval_jsons:
        raise ConfigError("report: no inputs (set inputs=[path/to/results.json, ...])")
    if labels and len(labels) != len(eval_jsons):
        raise ConfigError(f"report: {len(labels)} labels for {len(eval_jsons)} inputs")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = _rows(eval_jsons, labels)
    plotted = [i for i, r in enumerate(rows) if "translation" in r["values"] and "general" in r["values"]]
    points = [
        (rows[i]["values"]["general"]["value"], rows[i]["values"]["translation"]["value"]) for i in plotted
    ]
    front = [plotted[k] for k in pareto_front(points)]
    for i, row in enumerate(rows):
        row["pareto"] = i in front
    report = {"columns": [c for c, _ in COLUMNS], "rows": rows, "plot": "pareto.png" if plotted else None}
    if plotted:
        _plot(rows, front, plotted, out / "pareto.png")

    def cell(row: dict, title: str) -> str:
        if title not in row["values"]:
            return "–"
        v = row["values"][title]
        path, _, pointer = v["source"].partition("#")
        return f"[{v['value']:.2f}]({os.path.relpath(path, out.resolve())}#{pointer})"

    lines = ["# Translation vs general capability", ""]
    lines += [
        "| run | " + " | ".join(c for c, _ in COLUMNS) + " | Pareto |",
        "|---" * (len(COLUMNS) + 2) + "|",
    ]
    for row in rows:
        cells = " | ".join(cell(row, c) for c, _ in COLUMNS)
        lines.append(f"| {row['label']} | {cells} | {'★' if row['pareto'] else ''} |")
    lines += [
        "",
        "Translation score: COMET when configured, else chrF (macro over language pairs); general "
        "score: mean of IFEval prompt-level strict accuracy and the judged chat win rate, whichever ran.",
    ]
    if plotted:
        lines += ["", "![Pareto plot](pareto.png)"]
    missing = [r["label"] for i, r in enumerate(rows) if i not in plotted]
    if missing:
        lines += ["", f"Not plotted (no translation or general score): {', '.join(missing)}"]
    write_text(out / "pareto.md", "\n".join(lines) + "\n")
    write_json(out / "pareto.json", report)
    return report


def report_main(config_path: str, overrides: list[str]) -> int:
    cfg = load_config(ReportConfig, config_path, overrides)
    report = write_pareto_report(cfg.inputs, cfg.output_dir, cfg.labels or None)
    print((Path(cfg.output_dir) / "pareto.md").read_text(encoding="utf-8"))
    print(f"report: {len(report['rows'])} runs -> {cfg.output_dir}")
    return 0
