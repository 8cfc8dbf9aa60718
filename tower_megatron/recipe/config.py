"""The recipe file: stages (preprocess / train / eval) in order, and how each is run.

A recipe names each stage's own config (a normal ``preprocess`` / ``train`` / ``eval`` YAML) plus
overrides; the runner adds what ties the stages together (each train stage's run directory under
the recipe's, its initial weights from the previous train stage). Every stage config is loaded and
checked here, before any stage runs, so a typo in the last stage fails in seconds, naming it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tower_megatron.config.loader import ConfigError, load_config, yaml_line

STAGE_KINDS = ("preprocess", "train", "eval")


@dataclass
class StageSpec:
    name: str = ""  # also the stage's directory under the recipe's: <recipe>/<name>/
    kind: str = "train"  # preprocess | train | eval
    config: str = ""  # that verb's YAML, relative to the recipe file
    overrides: list[str] = field(default_factory=list)  # key=value, as on the command line
    # Train stages: initial weights. "previous": the last checkpoint of the previous train stage
    # (checkpoint.load=<prev>/checkpoints, checkpoint.load_optimizer=false); "none": the stage
    # config decides (random init or its own checkpoint.load); or a train stage's name.
    init: str = "previous"
    evaluate: bool = True  # train stages: run the recipe's eval after this stage
    # Eval stages: the train stage whose weights are evaluated (default: the previous one).
    checkpoint_of: str = ""


@dataclass
class EvalSpec:
    config: str = ""  # an eval YAML (configs/eval/...), relative to the recipe file; "": no eval
    overrides: list[str] = field(default_factory=list)
    # Processes for evaluation (its own TP/PP layout: checkpoint.tensor_model_parallel_size ...);
    # 0: those of launch.nproc_per_node. Evaluation always runs on one node.
    nproc_per_node: int = 0


@dataclass
class LaunchSpec:
    """How each train/eval stage is started: one process, or torchrun (our wrapper) per stage."""

    nproc_per_node: int = 1
    nnodes: int = 1
    # This node's rank when the recipe runs on several nodes (one recipe process per node, sharing
    # the recipe directory): node 0 runs preprocess, eval and the report and writes the markers;
    # the others join each train stage's rendezvous and wait for node 0's markers otherwise.
    node_rank: int = 0
    # Extra torchrun arguments for multi-node runs, e.g. [--rdzv-backend=c10d,
    # --rdzv-endpoint=node0:29500]; --rdzv-id is set per stage (<recipe>-<stage>).
    torchrun_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # extra environment for every stage


@dataclass
class RecipeConfig:
    """Everything ``tower-megatron recipe`` reads."""

    name: str = "recipe"
    output_dir: str = "runs/recipes"  # the recipe directory is <output_dir>/<name>/
    stages: list[StageSpec] = field(default_factory=list)
    eval: EvalSpec = field(default_factory=EvalSpec)
    # Appended to every train stage's overrides (e.g. run.device=cpu, logging.progress_bar=false).
    train_overrides: list[str] = field(default_factory=list)
    # Appended to one stage's overrides, by stage name: stage_overrides.sft=[train.train_steps=5].
    stage_overrides: dict[str, list[str]] = field(default_factory=dict)
    report: bool = True  # the Pareto report over every eval, plots and summary.md at the end
    launch: LaunchSpec = field(default_factory=LaunchSpec)


@dataclass
class PlannedStage:
    """A stage with everything resolved: what runs, with which arguments, and where."""

    index: int
    spec: StageSpec
    config_path: Path
    overrides: list[str]  # user overrides + the runner's (run directory, initial weights)
    run_dir: Path
    eval_overrides: list[str] | None = None  # train stages with an eval after them
    init_from: PlannedStage | None = None  # train stages: whose last checkpoint seeds the weights
    loaded: Any = None  # the stage's typed config, as checked


def load_recipe(path: str | Path, overrides: list[str]) -> RecipeConfig:
    recipe = load_config(RecipeConfig, path, overrides)
    where = str(path)
    if not recipe.stages:
        raise ConfigError(f"stages: the recipe has no stages ({where})")
    seen: set[str] = set()
    for i, st in enumerate(recipe.stages):
        line = yaml_line(path, f"stages[{i}]")
        at = f"{where}, line {line}" if line else where
        if not st.name or "/" in st.name or st.name in (".", "..", "eval", "report", "markers"):
            raise ConfigError(
                f"stages[{i}].name={st.name!r} ({at}): a directory name, not eval/report/markers"
            )
        if st.name in seen:
            raise ConfigError(f"stages[{i}].name={st.name!r} ({at}): two stages share this name")
        seen.add(st.name)
        if st.kind not in STAGE_KINDS:
            raise ConfigError(f"stages[{i}].kind={st.kind!r} ({at}): choose from {', '.join(STAGE_KINDS)}")
        if not st.config:
            raise ConfigError(f"stages[{i}].config ({at}): stage '{st.name}' names no {st.kind} config")
    unknown = sorted(set(recipe.stage_overrides) - seen)
    if unknown:
        raise ConfigError(
            f"stage_overrides: no stage named {', '.join(unknown)} (stages: {', '.join(s.name for s in recipe.stages)})"
        )
    if recipe.launch.nproc_per_node < 1 or recipe.launch.nnodes < 1:
        raise ConfigError("launch.nproc_per_node and launch.nnodes must be ≥ 1")
    return recipe


def relative_to(recipe_path: Path, config: str) -> Path:
    p = Path(config)
    return p if p.is_absolute() else Path(os.path.normpath(recipe_path.parent / p))


def plan_stages(recipe: RecipeConfig, recipe_path: str | Path) -> list[PlannedStage]:
    """Resolves paths, initial weights and the runner's overrides of every stage (no checks)."""
    recipe_path = Path(recipe_path)
    root = Path(recipe.output_dir) / recipe.name
    planned: list[PlannedStage] = []
    last_train: PlannedStage | None = None
    trains: dict[str, PlannedStage] = {}
    for i, st in enumerate(recipe.stages):
        run_dir = root / st.name
        user = [*st.overrides, *(recipe.train_overrides if st.kind == "train" else []),
                *recipe.stage_overrides.get(st.name, [])]  # fmt: skip
        p = PlannedStage(i, st, relative_to(recipe_path, st.config), user, run_dir)
        if st.kind == "train":
            p.overrides += [f"run.output_dir={root}", f"run.name={st.name}", "checkpoint.resume=true"]
            source = _init_source(st, last_train, trains, recipe_path, i)
            p.init_from = source
            if source is not None:
                p.overrides += [
                    f"checkpoint.load={source.run_dir / 'checkpoints'}",
                    "checkpoint.load_optimizer=false",
                ]
            if recipe.eval.config and st.evaluate:
                p.eval_overrides = eval_overrides(recipe, st.name, run_dir)
            last_train = trains[st.name] = p
        elif st.kind == "eval":
            target = trains.get(st.checkpoint_of) if st.checkpoint_of else last_train
            if target is None:
                raise ConfigError(
                    f"stages[{i}] '{st.name}' ({recipe_path}): no train stage "
                    f"{repr(st.checkpoint_of) + ' ' if st.checkpoint_of else ''}before it to evaluate"
                )
            p.overrides += [
                f"checkpoint.path={target.run_dir}",
                f"output_dir={root / 'eval'}",
                f"name={st.name}",
            ]
        planned.append(p)
    return planned


def eval_overrides(recipe: RecipeConfig, stage: str, run_dir: Path) -> list[str]:
    root = Path(recipe.output_dir) / recipe.name
    return [
        *recipe.eval.overrides,
        f"checkpoint.path={run_dir}",
        f"output_dir={root / 'eval'}",
        f"name={stage}",
    ]


def _init_source(st: StageSpec, last: PlannedStage | None, trains: dict, recipe_path: Path, i: int):
    if st.init == "none" or (st.init == "previous" and last is None):
        return None
    if st.init == "previous":
        return last
    if st.init in trains:
        return trains[st.init]
    raise ConfigError(
        f"stages[{i}].init={st.init!r} ({recipe_path}): 'previous', 'none' or an earlier train stage "
        f"({', '.join(trains) or 'none before this one'})"
    )


def world_size(recipe: RecipeConfig) -> int:
    return recipe.launch.nproc_per_node * recipe.launch.nnodes


def check_stages(recipe: RecipeConfig, recipe_path: str | Path, planned: list[PlannedStage],
                 complete: set[str]) -> None:  # fmt: skip
    """Loads and checks every stage's config; raises one :class:`ConfigError` naming the stage,
    its file and the key. Checks that need an earlier stage's output (its checkpoint, or the token
    files a preprocess stage will write) are left to the stage itself when it starts."""
    from tower_megatron.config.preprocess import PreprocessConfig
    from tower_megatron.eval.config import EvalConfig

    pending_preprocess = False  # an earlier preprocess stage has yet to write its data
    for p in planned:
        st = p.spec
        label = f"recipe {recipe_path}: stage '{st.name}' ({st.kind}, {p.config_path})"
        try:
            if st.kind == "preprocess":
                p.loaded = load_config(PreprocessConfig, p.config_path, p.overrides)
                pending_preprocess |= st.name not in complete
            elif st.kind == "eval":
                p.loaded = load_config(EvalConfig, p.config_path, p.overrides)
            else:
                p.loaded = check_train_stage(p, world_size(recipe), check_data=not pending_preprocess)
                if not p.loaded.checkpoint.save_at_end:
                    raise ConfigError("checkpoint.save_at_end=false: a recipe stage ends with a checkpoint")
            if p.eval_overrides is not None:
                load_config(EvalConfig, relative_to(Path(recipe_path), recipe.eval.config), p.eval_overrides)
        except ConfigError as exc:
            raise ConfigError(f"{label}: {exc}") from None


def check_train_stage(p: PlannedStage, world: int, check_data: bool) -> Any:
    """The train verb's checks (:func:`tower_megatron.config.validate.validate_job`) minus those
    on files an earlier stage writes: the initial checkpoint, and token files when a preprocess
    stage comes first. The full check runs again when the stage starts."""
    from tower_megatron.config import JobConfig
    from tower_megatron.config.validate import validate_job

    job = load_config(JobConfig, p.config_path, p.overrides)
    probe = dataclasses.replace(job, checkpoint=dataclasses.replace(job.checkpoint, load=None))
    validate_job(probe, world_size=world, check_data=check_data)
    return job


def stage_env(recipe: RecipeConfig) -> dict[str, str]:
    env = dict(os.environ)
    env.update({k: str(v) for k, v in recipe.launch.env.items()})
    return env
