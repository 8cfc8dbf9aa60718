"""``tower-megatron <verb> CONFIG [key=value ...]`` — the one user-facing entry point.

Verbs are thin: each parses nothing itself beyond CONFIG and overrides, and hands a typed config
to the module that does the work. Imports are lazy so ``--help`` and ``preprocess`` start fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from tower_megatron import __version__

# verb -> (module:function, one-line help). Each function takes (config_path, overrides) and
# returns a process exit code.
VERBS: dict[str, tuple[str, str]] = {
    "train": (
        "tower_megatron.training.entry:train_main",
        "train a stage (cpt, sft, dpo/wpo, grpo) from a recipe",
    ),
    "convert": (
        "tower_megatron.models.convert:convert_main",
        "convert checkpoints: HF safetensors <-> Megatron torch_dist",
    ),
    "preprocess": (
        "tower_megatron.data.preprocess:preprocess_main",
        "raw JSONL/TSV sources → Megatron token files",
    ),
    "mixture": (
        "tower_megatron.data.mixture:mixture_main",
        "resolve data.mixture of a recipe and write its report",
    ),
    "eval": (
        "tower_megatron.eval.runner:eval_main",
        "evaluate a checkpoint: translation (chrF/BLEU), IFEval, IF-MT, LLM-judged chat",
    ),
    "serve": (
        "tower_megatron.eval.serve:serve_main",
        "OpenAI-compatible /v1/chat/completions and /v1/completions server on a checkpoint",
    ),
    "report": (
        "tower_megatron.eval.report:report_main",
        "table + translation-vs-general Pareto plot from several eval results",
    ),
    "generate": (
        "tower_megatron.generation.generate_cli:generate_main",
        "complete prompts/chats from JSONL with a checkpoint (any TP/PP)",
    ),
    "plan": (
        "tower_megatron.planning.planner:plan_main",
        "memory/layout plan per GPU (plan.gpus=N plan.gpu=h100 [plan.search=true])",
    ),
    "recipe": (
        "tower_megatron.recipe.runner:recipe_main",
        "run a whole recipe (preprocess → CPT → SFT → WPO → GRPO, eval after each), resumably",
    ),
    "launch": (
        "tower_megatron.runtime.launch:launch_main",
        "print/write the torchrun or sbatch command of a multi-node job (launch.nodes=N ...)",
    ),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tower-megatron",
        description="Tower+ recipe on Megatron-Core. Run multi-process jobs under torchrun.",
    )
    parser.add_argument("--version", action="version", version=f"tower-megatron {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, (_, help_text) in VERBS.items():
        p = sub.add_parser(verb, help=help_text, description=help_text)
        p.add_argument("config", help="YAML recipe (see configs/)")
        # plan/launch also take --flag style arguments (--gpus 32), which they translate into
        # overrides themselves: hand them everything after CONFIG untouched.
        nargs = argparse.REMAINDER if verb in FLAG_VERBS else "*"
        p.add_argument("overrides", nargs=nargs, metavar="key=value", help="NeMo-style overrides")
    return parser


FLAG_VERBS = ("plan", "launch")


def _quiet_known_warnings() -> None:
    """Megatron-Core warns at import about every optional kernel library it lacks; on CPU that is
    expected and the runtime reports the implementation it picked instead."""
    import logging
    import warnings

    for message in ("Transformer Engine and Apex are not installed", "Apex is not installed"):
        warnings.filterwarnings("ignore", message=f".*{message}.*")
    warnings.filterwarnings("ignore", category=FutureWarning, module="megatron")
    logging.getLogger("megatron.core.models.gpt.gpt_model").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _quiet_known_warnings()
    if args.verb is None:
        _parser().print_help()
        return 2
    target, _ = VERBS[args.verb]
    module_name, func_name = target.split(":")
    from tower_megatron.config.loader import ConfigError

    try:
        return int(getattr(importlib.import_module(module_name), func_name)(args.config, args.overrides) or 0)
    except ConfigError as exc:
        print(f"tower-megatron {args.verb}: config error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
