"""``tower-megatron launch CONFIG launch.nodes=N [launch.gpus_per_node=8] [launch.scheduler=...]``

Renders — and unless ``launch.dry_run`` runs — the multi-node command of a training job:

- ``torchrun`` (default): the command to run on every node (c10d rendezvous keyed by the run
  name, per-node log directories); without ``dry_run`` it runs it on this node;
- ``slurm``: an sbatch script (one torchrun per node through ``srun``, ``--signal=B:USR1@120``
  so the script can ask for a checkpoint and ``scontrol requeue`` on pre-emption; see
  ``examples/slurm_cpt_qwen72b.sbatch``), written under ``<run_dir>/launch/`` and submitted;
- ``nemo_run``: a NeMo-Run executor (``pip install 'tower-megatron[launch]'``) for teams coming
  from NeMo — ``LocalExecutor`` (torchrun launcher) for one node, ``SlurmExecutor`` for more.

Flags work too: ``tower-megatron launch CONFIG -- --nodes 2 --slurm --dry-run``. Every other
``key=value`` is passed to ``tower-megatron train`` unchanged.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from tower_megatron.config.loader import ConfigError, load_config
from tower_megatron.config.schema import JobConfig
from tower_megatron.planning.flags import flags_to_overrides

SCHEDULERS = ("torchrun", "slurm", "nemo_run")
FLAG_ALIASES = {
    "slurm": "launch.scheduler=slurm",
    "torchrun": "launch.scheduler=torchrun",
    "nemo-run": "launch.scheduler=nemo_run",
    "dry-run": "launch.dry_run=true",
}
# Why each default is set (documented in docs/launch.md).
DEFAULT_ENV = {
    "CUDA_DEVICE_MAX_CONNECTIONS": "1",  # Megatron orders TP communication before compute
    "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",  # a failed collective aborts instead of hanging
    "TORCH_NCCL_AVOID_RECORD_STREAMS": "1",  # frees NCCL buffers promptly (less fragmentation)
    "NCCL_NVLS_ENABLE": "0",  # NVLink SHARP buffers cost GPU memory; NeMo's default
    "NCCL_DEBUG": "WARN",
    "OMP_NUM_THREADS": "8",
}
SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"


@dataclass
class LaunchConfig:
    nodes: int = 1
    gpus_per_node: int = 8
    scheduler: str = "torchrun"  # torchrun | slurm | nemo_run
    dry_run: bool = False  # print what would run; start and write nothing
    master_addr: Optional[str] = None  # torchrun: default $MASTER_ADDR (slurm: the first node)
    master_port: int = 29500
    # torchrun itself, or this wrapper: the same arguments, exit 0 after a clean pre-emption save
    # (so Slurm does not mark it failed) and SIGUSR1 forwarded (runtime/torchrun.py).
    torchrun: str = "python -m tower_megatron.runtime.torchrun"
    log_dir: str = "logs"  # per-node logs under <log_dir>/<run.name>/
    env: dict[str, str] = field(default_factory=dict)  # extra/overriding variables (NCCL_IB_HCA, ...)
    # slurm
    time: str = "24:00:00"
    partition: Optional[str] = None
    account: Optional[str] = None
    cpus_per_task: int = 64
    preempt_warning_s: int = 120  # USR1 this long before the time limit → save, requeue
    shutdown_timeout_s: int = 110  # torchrun waits this long for the save before SIGKILL
    script: Optional[str] = None  # sbatch script path (default <run_dir>/launch/<run.name>.sbatch)


@dataclass
class LaunchJob(JobConfig):
    launch: LaunchConfig = field(default_factory=LaunchConfig)


def _check(job: LaunchJob) -> None:
    opts, par = job.launch, job.parallel
    if opts.scheduler not in SCHEDULERS:
        raise ConfigError(f"launch.scheduler={opts.scheduler!r} is not one of {', '.join(SCHEDULERS)}")
    if opts.nodes < 1 or opts.gpus_per_node < 1:
        raise ConfigError("launch.nodes and launch.gpus_per_node must be ≥ 1")
    world = opts.nodes * opts.gpus_per_node
    replica = par.tensor_model_parallel_size * par.pipeline_model_parallel_size * par.context_parallel_size
    if world % replica:
        raise ConfigError(
            f"launch.nodes × launch.gpus_per_node = {world} GPUs is not divisible by TP × PP × CP = {replica}"
        )


def environment(opts: LaunchConfig) -> dict[str, str]:
    return {**DEFAULT_ENV, **{str(k): str(v) for k, v in opts.env.items()}}


def train_command(config: str, train_overrides: list[str]) -> list[str]:
    return ["-m", "tower_megatron", "train", config, *train_overrides]


def torchrun_options(
    opts: LaunchConfig, endpoint: str, nnodes: str, rdzv_id: str, log_dir: str | None
) -> list[str]:
    options = [
        f"--nnodes={nnodes}",
        f"--nproc-per-node={opts.gpus_per_node}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={endpoint}",
        f"--rdzv-id={rdzv_id}",
        f"--signals-to-handle={SIGNALS}",
        f"--shutdown-timeout={opts.shutdown_timeout_s}",
    ]
    if log_dir:  # torchrun's per-rank files (stdout and stderr), also shown on the console
        options += [f"--log-dir={log_dir}", "--redirects=3", "--tee=3"]
    return options


def _q(arg: str) -> str:
    # $VARS and $(...) stay unquoted so the shell expands them on each node.
    return arg if "$" in arg else shlex.quote(arg)


def _command(program: str, options: list[str], config: str, train_overrides: list[str]) -> str:
    """One option per line, then ``-m tower_megatron train CONFIG overrides`` on the last."""
    train = " ".join(_q(a) for a in train_command(config, train_overrides))
    return " \\\n    ".join([program, *(_q(o) for o in options), train])


def render_torchrun(job: LaunchJob, config: str, train_overrides: list[str]) -> str:
    opts = job.launch
    addr = opts.master_addr or os.environ.get("MASTER_ADDR", "127.0.0.1")
    logs = f"{opts.log_dir}/{job.run.name}"
    options = torchrun_options(
        opts, f"{addr}:{opts.master_port}", str(opts.nodes), job.run.name, f"{logs}/$(hostname)"
    )
    lines = [
        f"# {opts.nodes} node(s) × {opts.gpus_per_node} GPUs = {opts.nodes * opts.gpus_per_node} ranks;"
        f" run this on every node (c10d rendezvous at {addr}:{opts.master_port}).",
        f"# Logs: {logs}/<host>/ (one directory per node, one file per rank).",
        *(f"export {k}={shlex.quote(v)}" for k, v in environment(opts).items()),
        f"mkdir -p {logs}",
        _command(opts.torchrun, options, config, train_overrides),
    ]
    return "\n".join(lines) + "\n"


def render_sbatch(job: LaunchJob, config: str, train_overrides: list[str]) -> str:
    opts = job.launch
    logs = f"{opts.log_dir}/{job.run.name}"
    directives = [
        f"--job-name={job.run.name}",
        f"--nodes={opts.nodes}",
        "--ntasks-per-node=1",
        f"--gpus-per-node={opts.gpus_per_node}",
        f"--cpus-per-task={opts.cpus_per_task}",
        "--exclusive",
        f"--time={opts.time}",
        f"--signal=B:USR1@{opts.preempt_warning_s}",
        "--requeue",
        "--open-mode=append",
        f"--output={logs}/%x-%j.out",
    ]
    if opts.partition:
        directives.append(f"--partition={opts.partition}")
    if opts.account:
        directives.append(f"--account={opts.account}")
    # srun starts one torchrun per node; its %N names each node's log file.
    options = torchrun_options(
        opts, '"$MASTER_ADDR:$MASTER_PORT"', '"$SLURM_JOB_NUM_NODES"', '"$SLURM_JOB_ID"', None
    )
    srun = f"srun --kill-on-bad-exit=1 --cpu-bind=none --output={logs}/%x-%j-%N.out {opts.torchrun}"
    body = [
        "#!/bin/bash",
        f"# Written by `tower-megatron launch {config}`: {opts.nodes} × {opts.gpus_per_node} GPUs.",
        "# USR1 arrives at this script before the time limit (or from `scancel --signal=USR1 --batch`):",
        "# it is forwarded to the job step, the trainer saves and stops, and the job is requeued;",
        "# the requeued job resumes from that checkpoint.",
        *(f"#SBATCH {d}" for d in directives),
        "set -euo pipefail",
        f"mkdir -p {logs}",
        *(f"export {k}={shlex.quote(v)}" for k, v in environment(opts).items()),
        'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        f"MASTER_PORT={opts.master_port}",
        "export MASTER_ADDR MASTER_PORT",
        "PREEMPTED=0",
        'forward_usr1() { PREEMPTED=1; scancel --signal=USR1 "$SLURM_JOB_ID" || true; }',
        "trap forward_usr1 USR1",
        _command(srun, options, config, train_overrides) + " &",
        "SRUN_PID=$!",
        "set +e",
        'while true; do wait "$SRUN_PID"; RC=$?; kill -0 "$SRUN_PID" 2>/dev/null || break; done',
        "set -e",
        'if [[ $PREEMPTED == 1 ]]; then scontrol requeue "$SLURM_JOB_ID"; fi',
        'exit "$RC"',
    ]
    return "\n".join(body) + "\n"


def nemo_run_executor(job: LaunchJob, config: str, train_overrides: list[str]):
    """(NeMo-Run task, executor) for this job; ImportError → a ConfigError naming the extra."""
    try:
        import nemo_run as run
    except ImportError:
        raise ConfigError(
            "launch.scheduler=nemo_run needs NeMo-Run: pip install 'tower-megatron[launch]' (or nemo-run)"
        ) from None
    opts = job.launch
    task = run.Script(
        path="tower_megatron", args=["train", config, *train_overrides], entrypoint="python", m=True
    )
    if opts.nodes == 1:
        executor = run.LocalExecutor(
            ntasks_per_node=opts.gpus_per_node, launcher="torchrun", env_vars=environment(opts)
        )
    else:
        executor = run.SlurmExecutor(
            account=opts.account or "",
            partition=opts.partition,
            nodes=opts.nodes,
            ntasks_per_node=opts.gpus_per_node,
            gpus_per_node=opts.gpus_per_node,
            time=opts.time,
            env_vars=environment(opts),
            tunnel=run.LocalTunnel(job_dir=str(Path(opts.log_dir) / job.run.name)),
        )
        executor.launcher = "torchrun"
    return run, task, executor


def split_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """(all overrides for loading, the ones passed on to ``train``)."""
    translated = flags_to_overrides("launch", list(overrides), FLAG_ALIASES)
    return translated, [o for o in translated if not o.lstrip("+").startswith("launch.")]


def launch_main(config_path: str, overrides: list[str]) -> int:
    everything, train_overrides = split_overrides(overrides)
    job = load_config(LaunchJob, config_path, everything)
    _check(job)
    opts = job.launch
    if opts.scheduler == "nemo_run":
        run, task, executor = nemo_run_executor(job, config_path, train_overrides)
        run.run(task, executor=executor, name=job.run.name, dryrun=opts.dry_run)
        return 0
    if opts.scheduler == "slurm":
        text = render_sbatch(job, config_path, train_overrides)
        if opts.dry_run:
            print(text, end="")
            return 0
        script = Path(
            opts.script or Path(job.run.output_dir) / job.run.name / "launch" / f"{job.run.name}.sbatch"
        )
        from tower_megatron.utils.atomic import write_text

        script.parent.mkdir(parents=True, exist_ok=True)
        write_text(script, text)
        if shutil.which("sbatch") is None:
            print(f"wrote {script}; `sbatch` is not on PATH here: submit it from a Slurm login node")
            return 1
        return subprocess.call(["sbatch", str(script)])
    if opts.dry_run:
        print(render_torchrun(job, config_path, train_overrides), end="")
        return 0
    addr = opts.master_addr or os.environ.get("MASTER_ADDR", "127.0.0.1")
    logs = Path(opts.log_dir) / job.run.name / os.uname().nodename
    logs.mkdir(parents=True, exist_ok=True)
    options = torchrun_options(opts, f"{addr}:{opts.master_port}", str(opts.nodes), job.run.name, str(logs))
    argv = [*shlex.split(opts.torchrun), *options, *train_command(config_path, train_overrides)]
    return subprocess.call(argv, env={**os.environ, **environment(opts)})
