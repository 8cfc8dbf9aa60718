"""``tower-megatron recipe CONFIG``: run the stages of a recipe in order, resumably.

Each stage runs as its own process (``python -m tower_megatron <verb> ...``, or our torchrun
wrapper per stage when ``launch.nproc_per_node``/``nnodes`` ask for more than one process).
Why a process per stage and not in-process: a stage owns torch.distributed, Megatron's global
parallel state, the CPU shim and reward worker pools; a fresh process starts every stage from a
clean slate, a crash or ``kill -9`` cannot leave state behind for the next stage, and the same
command line works for one process and for torchrun. The recipe itself is one process per node
(it refuses to start under torchrun, where every rank would start its own stages).

Progress lives in ``<recipe>/markers/``: ``<stage>.json`` once a stage finished,
``<stage>.eval.json`` once its evaluation did, ``recipe.json`` at the very end — each written
atomically after the work it records, so a rerun skips exactly what is complete. An interrupted
train stage is rerun with ``checkpoint.resume=true`` and continues from its newest checkpoint.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tower_megatron.config.loader import ConfigError
from tower_megatron.recipe.config import (
    PlannedStage,
    RecipeConfig,
    check_stages,
    load_recipe,
    plan_stages,
    relative_to,
    stage_env,
)
from tower_megatron.utils.atomic import write_json


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


class RecipeRunner:
    def __init__(self, recipe: RecipeConfig, recipe_path: str | Path, overrides: list[str]) -> None:
        self.recipe = recipe
        self.recipe_path = Path(recipe_path)
        self.root = Path(recipe.output_dir) / recipe.name
        self.markers = self.root / "markers"
        self.overrides = overrides
        self.planned = plan_stages(recipe, recipe_path)
        self._child: subprocess.Popen | None = None
        self._stopping = 0

    # ------------------------------------------------------------------ markers
    def marker(self, name: str) -> Path:
        return self.markers / f"{name}.json"

    def is_done(self, name: str) -> bool:
        return self.marker(name).is_file()

    def mark(self, name: str, **info) -> None:
        write_json(self.marker(name), {"finished": _now(), **info})

    def complete_stages(self) -> set[str]:
        return {p.spec.name for p in self.planned if self.is_done(p.spec.name)}

    # ------------------------------------------------------------------ output
    def say(self, text: str) -> None:
        print(f"[recipe {self.recipe.name}] {text}", flush=True)

    def position(self, p: PlannedStage) -> str:
        return f"stage {p.index + 1}/{len(self.planned)} '{p.spec.name}' ({p.spec.kind})"

    # ------------------------------------------------------------------ commands
    def command(self, verb: str, config: Path, overrides: list[str], stage: str) -> list[str]:
        """``python -m tower_megatron VERB ...``, under our torchrun wrapper for more than one process
        (a c10d rendezvous per stage, keyed ``<recipe>-<stage>``, across ``launch.nnodes``)."""
        launch = self.recipe.launch
        nproc, nnodes = launch.nproc_per_node, launch.nnodes
        if verb == "eval":
            nproc, nnodes = self.recipe.eval.nproc_per_node or nproc, 1
        tail = ["-m", "tower_megatron", verb, str(config), *overrides]
        if verb == "preprocess" or (nproc == 1 and nnodes == 1):
            return [sys.executable, *tail]
        rdzv = ["--standalone"] if nnodes == 1 else [f"--nnodes={nnodes}", f"--rdzv-id={self.recipe.name}-{stage}",
                                                     *launch.torchrun_args]  # fmt: skip
        return [
            sys.executable,
            "-m",
            "tower_megatron.runtime.torchrun",
            *rdzv,
            f"--nproc-per-node={nproc}",
            *tail,
        ]

    def run_process(self, cmd: list[str]) -> int:
        from tower_megatron.utils.process import die_with_parent

        # SIGTERM when the recipe dies (even by kill -9): the stage saves a checkpoint and stops.
        self._child = subprocess.Popen(
            cmd, env=stage_env(self.recipe), preexec_fn=lambda: die_with_parent(signal.SIGTERM)
        )
        try:
            return self._child.wait()
        finally:
            self._child = None

    def _forward(self, signum: int, frame) -> None:
        """SIGTERM/SIGINT/SIGUSR1 to the recipe reach the running stage (which saves and exits);
        the recipe then stops with that stage's exit code."""
        if self._child is not None and self._child.poll() is None:
            self._child.send_signal(signum)
        self._stopping = signum

    # ------------------------------------------------------------------ stages
    def wait_for(self, name: str, p: PlannedStage) -> int:
        """Nodes other than 0: node 0 runs this step; wait for its marker."""
        self.say(f"{self.position(p)}: waiting for node 0 ({self.marker(name)})")
        while not self.is_done(name):
            if self._stopping:
                return 128 + self._stopping
            time.sleep(5)
        return 0

    def run_stage(self, p: PlannedStage) -> int:
        st = p.spec
        verb = {"train": "train", "preprocess": "preprocess", "eval": "eval"}[st.kind]
        if self.recipe.launch.node_rank != 0 and st.kind != "train":
            return self.wait_for(st.name, p)
        if self.is_done(st.name):
            self.say(f"{self.position(p)}: complete, skipped")
        else:
            note = ""
            if st.kind == "train":
                from tower_megatron.training.checkpointing import latest_checkpoint

                ckpts = p.run_dir / "checkpoints"
                latest = latest_checkpoint(ckpts) if ckpts.is_dir() else None
                note = f", resuming from {latest.name}" if latest is not None else ""
            self.say(f"{self.position(p)}: {verb} {p.config_path}{note}")
            overrides = self.pinned_init(p)
            if overrides is None:
                return 1
            start = time.monotonic()
            code = self.run_process(self.command(verb, p.config_path, overrides, st.name))
            if code == 0 and self._stopping:  # the stage saved and stopped early on our signal
                code = 128 + self._stopping
            if code == 0 and st.kind == "train" and not self.reached_end(p):
                code = 1  # stopped early by a signal the stage received itself (e.g. Slurm's)
            if code != 0:
                self.say(
                    f"{self.position(p)}: stopped with exit code {code}; rerun the same command to resume"
                )
                return code
            seconds = time.monotonic() - start
            if self.recipe.launch.node_rank != 0:
                return 0  # node 0 marks the stage and evaluates it
            p.run_dir.mkdir(parents=True, exist_ok=True)
            self.mark(st.name, kind=st.kind, config=str(p.config_path), overrides=overrides, seconds=seconds)
            self.say(f"{self.position(p)}: done in {seconds:.0f} s")
        if p.eval_overrides is not None:
            return self.run_eval(p)
        return 0

    def pinned_init(self, p: PlannedStage) -> list[str] | None:
        """The stage's overrides with ``checkpoint.load`` naming the source stage's newest
        checkpoint itself (``iter_N``), not its checkpoints root: every consumer of the path (the
        trainer, a stage's frozen reference) then reads the same weights."""
        if p.init_from is None:
            return p.overrides
        from tower_megatron.training.checkpointing import latest_checkpoint

        root = p.init_from.run_dir / "checkpoints"
        latest = latest_checkpoint(root) if root.is_dir() else None
        if latest is None:
            self.say(
                f"{self.position(p)}: no complete checkpoint of stage '{p.init_from.spec.name}' in {root}"
            )
            return None
        return [o for o in p.overrides if not o.startswith("checkpoint.load=")] + [
            f"checkpoint.load={latest}"
        ]

    @staticmethod
    def reached_end(p: PlannedStage) -> bool:
        """Whether the stage's newest checkpoint is its last step (train_main also exits 0 after a
        pre-emption save; that stage is not complete)."""
        from tower_megatron.training.checkpointing import latest_checkpoint

        ckpts = p.run_dir / "checkpoints"
        latest = latest_checkpoint(ckpts) if ckpts.is_dir() else None
        return latest is not None and int(latest.name[len("iter_") :]) >= p.loaded.train.train_steps

    def run_eval(self, p: PlannedStage) -> int:
        name = f"{p.spec.name}.eval"
        if self.is_done(name):
            self.say(f"{self.position(p)}: evaluation complete, skipped")
            return 0
        config = relative_to(self.recipe_path, self.recipe.eval.config)
        self.say(f"{self.position(p)}: evaluating with {config}")
        start = time.monotonic()
        code = self.run_process(self.command("eval", config, p.eval_overrides, f"{p.spec.name}-eval"))
        if code != 0:
            self.say(f"{self.position(p)}: evaluation failed with exit code {code}")
            return code
        results = self.root / "eval" / p.spec.name / "results.json"
        summary = json.loads(results.read_text(encoding="utf-8")).get("summary", {})
        self.mark(name, results=str(results), seconds=time.monotonic() - start, summary=summary)
        scores = ", ".join(f"{k} {v:.2f}" for k, v in summary.items() if isinstance(v, float))
        self.say(f"{self.position(p)}: evaluated ({scores or 'no scores'})")
        return 0

    def eval_results(self) -> list[tuple[str, Path]]:
        """(label, results.json) of every evaluation, in stage order."""
        out = []
        for p in self.planned:
            if p.eval_overrides is not None or p.spec.kind == "eval":
                out.append((p.spec.name, self.root / "eval" / p.spec.name / "results.json"))
        return out

    def finish(self) -> None:
        from tower_megatron.recipe.summary import write_recipe_outputs

        written = write_recipe_outputs(
            self.root, self.planned, self.eval_results(), report=self.recipe.report
        )
        self.mark("recipe", stages=[p.spec.name for p in self.planned], outputs=[str(w) for w in written])
        for path in written:
            self.say(f"wrote {path}")

    def run(self) -> int:
        if self.is_done("recipe"):
            self.say(f"already complete ({len(self.planned)} stages, {self.marker('recipe')}); nothing to do")
            return 0
        check_stages(self.recipe, self.recipe_path, self.planned, self.complete_stages())
        self.say(f"{len(self.planned)} stages checked; recipe directory {self.root}")
        previous = {
            s: signal.signal(s, self._forward) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
        }
        try:
            for p in self.planned:
                code = self.run_stage(p)
                if code != 0 or self._stopping:
                    return code if code != 0 else 128 + self._stopping
            if self.recipe.launch.node_rank != 0:
                self.say("done on this node; node 0 writes the report")
                return 0
            self.finish()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        self.say(f"complete: {len(self.planned)} stages in {self.root}")
        return 0


def recipe_main(config_path: str, overrides: list[str]) -> int:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            "tower-megatron recipe runs as one process per node and starts each stage itself "
            "(torchrun per stage with launch.nproc_per_node=N / launch.nnodes=N); do not start it under torchrun"
        )
    recipe = load_recipe(config_path, overrides)
    return RecipeRunner(recipe, config_path, overrides).run()
