"""``tower-megatron eval CONFIG``: generate on every configured suite, score, write results.

Test sets are read (and rejected with ``file:line: field`` errors) before the model is loaded.
Outputs in ``<output_dir>/<name>/``, each written atomically: ``results.json`` (scores, sacrebleu
signatures, checkpoint, generation settings), ``results.md``, ``generations.jsonl`` (every prompt
and output, traceable to its test-set line) and a line appended to ``metrics.jsonl``.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from pathlib import Path
from typing import Any

from tower_megatron.config.loader import ConfigError, load_config, to_yaml
from tower_megatron.eval.config import EvalConfig
from tower_megatron.eval.prompts import ChatPrompter
from tower_megatron.eval.suites import SUITES, skipped_reason, suite_config
from tower_megatron.eval.translation import METRICS
from tower_megatron.utils.atomic import atomic_open, write_json, write_text

RESULTS_SCHEMA = "tower-megatron-eval/1"
SUITE_ORDER = ("translation", "ifmt", "ifeval", "chat")


def read_suites(cfg: EvalConfig) -> tuple[dict[str, list], dict[str, str]]:
    """Examples of every suite that runs, and the reasons the others do not."""
    unknown = [m for m in cfg.translation.metrics if m not in METRICS]
    if unknown or not cfg.translation.metrics:
        raise ConfigError(f"translation.metrics: {unknown or 'empty'}; choose from {list(METRICS)}")
    examples, skipped = {}, {}
    for name in SUITE_ORDER:
        reason = skipped_reason(cfg, name)
        if reason:
            skipped[name] = reason
            continue
        examples[name] = SUITES.get(name).read(suite_config(cfg, name))
        if not examples[name]:
            raise ConfigError(f"{name}.files: no usable examples in {suite_config(cfg, name).files}")
    return examples, skipped


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def generate_all(
    backend, prompts: list[list[int]], params, batch_size: int, desc: str, progress: bool
) -> list:
    from tqdm.auto import tqdm

    outputs = []
    with tqdm(total=len(prompts), desc=desc, unit="prompt", disable=not progress) as bar:
        for start in range(0, len(prompts), max(1, batch_size)):
            batch = prompts[start : start + batch_size]
            outputs.extend(backend.generate(batch, params))
            bar.update(len(batch))
    return outputs


def sampling_params(cfg: EvalConfig, prompter: ChatPrompter):
    from tower_megatron.generation import SamplingParams

    g = cfg.generation
    return SamplingParams(
        max_new_tokens=g.max_new_tokens,
        temperature=g.temperature,
        top_p=g.top_p,
        top_k=g.top_k,
        seed=g.seed,
        stop_token_ids=prompter.stop_token_ids,
        stop_strings=prompter.stop_strings,
    )


def summarize(suites: dict[str, dict]) -> dict[str, Any]:
    """The two axes of the Tower+ trade-off. Translation: COMET/XCOMET when configured, else chrF
    (macro over pairs). General: the mean of IFEval prompt-level strict accuracy and the judged
    chat win rate, whichever ran (both in %)."""
    summary: dict[str, Any] = {}
    tr = suites.get("translation", {}).get("overall")
    if tr:
        metric = next(m for m in ("comet", "chrf", "chrf++", "bleu") if tr.get(m) is not None)
        summary.update(translation_score=tr[metric], translation_metric=metric)
    general = {}
    if "ifeval" in suites:
        general["ifeval.prompt_level_strict_acc"] = suites["ifeval"]["overall"]["prompt_level_strict_acc"]
    if "chat" in suites and suites["chat"]["overall"]["win_rate"] is not None:
        general["chat.win_rate"] = suites["chat"]["overall"]["win_rate"]
    if general:
        summary.update(general_score=sum(general.values()) / len(general), general_components=sorted(general))
    if "ifmt" in suites:
        summary["ifmt_combined"] = suites["ifmt"]["overall"]["combined"]
    return summary


def evaluate(
    cfg: EvalConfig, backend, examples: dict[str, list], skipped: dict[str, str]
) -> tuple[dict, list[dict]]:
    """Results dict and generation records for already-read ``examples`` on a loaded backend."""
    prompter = ChatPrompter.for_backend(backend, cfg.prompt)
    params = sampling_params(cfg, prompter)
    suites, records = {}, []
    for name, exs in examples.items():
        suite = SUITES.get(name)
        section = suite_config(cfg, name)
        texts = [suite.prompt(ex, prompter) for ex in exs]
        prompts = [prompter.user_turn(t) for t in texts]
        progress = cfg.progress_bar and _rank() == 0
        outputs = generate_all(backend, prompts, params, cfg.generation.batch_size, name, progress)
        if _rank() != 0:
            continue  # every rank generates (model parallel); rank 0 alone scores and writes
        responses = [o.text for o in outputs]
        suites[name] = suite.score(exs, responses, section)
        suites[name]["files"] = list(section.files)
        for ex, text, out in zip(exs, texts, outputs, strict=True):
            records.append(
                {
                    "suite": name,
                    "origin": ex.origin,
                    "prompt": text,
                    "output": out.text,
                    "finish_reason": out.finish_reason,
                    "new_tokens": len(out.token_ids),
                }
            )
    results = {
        "schema": RESULTS_SCHEMA,
        "name": cfg.name,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "checkpoint": dataclasses.asdict(cfg.checkpoint),
        "backend": type(backend).__name__,
        "generation": dataclasses.asdict(cfg.generation),
        "prompt": {
            **dataclasses.asdict(cfg.prompt),
            "chat_format": prompter.chat_format,
            "add_bos": prompter.add_bos,
        },
        "summary": summarize(suites),
        "suites": suites,
        "skipped": skipped,
    }
    return results, records


def _fmt(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else ("–" if value is None else str(value))


def markdown(results: dict) -> str:
    lines = [
        f"# Evaluation `{results['name']}`",
        "",
        f"Checkpoint: `{results['checkpoint']['path']}` ({results['backend']}, "
        f"{results['prompt']['chat_format']} chat format, temperature {results['generation']['temperature']})",
        "",
    ]
    if results["summary"]:
        lines += (
            ["| summary | value |", "|---|---|"]
            + [f"| {k} | {_fmt(v)} |" for k, v in results["summary"].items()]
            + [""]
        )
    for name, suite in results["suites"].items():
        lines += [f"## {name}", ""]
        overall = {k: v for k, v in suite["overall"].items() if not isinstance(v, (dict, list))}
        lines += [
            "| " + " | ".join(["", *overall]) + " |",
            "|" + "---|" * (len(overall) + 1),
            "| overall | " + " | ".join(_fmt(v) for v in overall.values()) + " |",
        ]
        groups = {"by_pair": "", "by_target_language": "into ", "by_language": "", "by_constraint": ""}
        for group, prefix in groups.items():
            for key, row in suite.get(group, {}).items():
                lines.append(f"| {prefix}{key} | " + " | ".join(_fmt(row.get(k)) for k in overall) + " |")
        for metric, sigs in suite.get("signatures", {}).items():
            lines.append(f"\n{metric} signature(s): " + "; ".join(f"`{s}`" for s in sigs))
        lines.append("")
    for name, reason in results["skipped"].items():
        lines.append(f"- {name}: skipped — {reason}")
    return "\n".join(lines) + "\n"


def flat_metrics(results: dict) -> dict[str, float]:
    """Numeric scalars of the summary and each suite's overall block, as ``eval/<suite>/<metric>``."""
    flat = {f"eval/{k}": v for k, v in results["summary"].items() if isinstance(v, (int, float))}
    for name, suite in results["suites"].items():
        flat.update(
            {
                f"eval/{name}/{k}": v
                for k, v in suite["overall"].items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)
            }
        )
    return flat


def write_outputs(out_dir: Path, cfg: EvalConfig, results: dict, records: list[dict]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / "config.yaml", to_yaml(cfg))
    with atomic_open(out_dir / "generations.jsonl", "w", encoding="utf-8") as handle:
        for rec in records:
            handle.write(json.dumps(rec, ensure_ascii=False) + "\n")
    write_json(out_dir / "results.json", results)
    write_text(out_dir / "results.md", markdown(results))
    # metrics.jsonl is a log every run appends to (as training's): one complete line per eval.
    line = json.dumps({"time": results["created"], "name": cfg.name, **flat_metrics(results)}) + "\n"
    with open(out_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
        handle.write(line)


def eval_main(config_path: str, overrides: list[str]) -> int:
    cfg = load_config(EvalConfig, config_path, overrides)
    if not cfg.checkpoint.path:
        raise ConfigError(f"checkpoint.path is not set ({config_path})")
    examples, skipped = read_suites(cfg)
    if not examples:
        raise ConfigError(
            f"no suite has test files ({config_path}): set translation.files, ifeval.files, ifmt.files or chat.files"
        )
    backend = cfg.checkpoint.load()
    results, records = evaluate(cfg, backend, examples, skipped)
    if _rank() == 0:
        out_dir = Path(cfg.output_dir) / cfg.name
        write_outputs(out_dir, cfg, results, records)
        print(markdown(results))
        print(f"eval: results in {out_dir / 'results.json'}")
    return 0
