"""``preprocess`` never deletes what it did not write (issue 14 item 1), cleans up after itself
when stopped or killed, and reports a full disk plainly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tower_megatron.config.data import TokenizerConfig
from tower_megatron.config.loader import ConfigError, load_config
from tower_megatron.config.preprocess import PreprocessConfig, SourceConfig
from tower_megatron.data.preprocess import run_preprocess
from tower_megatron.resources import DEMO_TOKENIZER
from tower_megatron.testing.processes import kill_tree, tmpfs

REPO = Path(__file__).resolve().parents[2]
SENTENCES = ["All human beings are born free and equal in dignity and rights.", "Where is the station?"]


def _write(path: Path, n: int, tag: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (json.dumps({"text": f"{SENTENCES[i % 2]} {tag}{i}", "lang": "en"}) for i in range(n))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _cfg(out: Path, files: list[Path], name: str = "mono") -> PreprocessConfig:
    cfg = load_config(PreprocessConfig, None, [f"output_dir={out}", "workers=1", "progress=false"])
    cfg.tokenizer = TokenizerConfig(path=DEMO_TOKENIZER)
    cfg.sources = [SourceConfig(name=name, files=[str(f) for f in files])]
    return cfg


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("where", ["same_dir", "parent_dir"])
def test_output_dir_holding_the_inputs_is_refused(tmp_path, where):
    data = tmp_path / "corpus"
    src = _write(data / "en" / "mono.jsonl", 20)
    (data / "README.txt").write_text("the user's own notes")
    out = src.parent if where == "same_dir" else data
    before = _tree(data)
    with pytest.raises(ConfigError) as info:
        run_preprocess(_cfg(out, [src]))
    assert str(info.value).startswith(f"output_dir: {out} contains the input file {src} (sources[0].files)")
    assert _tree(data) == before


def test_only_the_jobs_own_outputs_are_replaced(tmp_path):
    out = tmp_path / "tokens"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    (out / "other_source").mkdir()
    (out / "other_source" / "de.train.bin").write_bytes(b"another job's tokens")
    first = run_preprocess(_cfg(out, [_write(tmp_path / "a.jsonl", 10, "a")]))
    second = run_preprocess(_cfg(out, [_write(tmp_path / "b.jsonl", 25, "b")]))
    assert (out / "notes.txt").read_text() == "keep me"
    assert (out / "other_source" / "de.train.bin").read_bytes() == b"another job's tokens"
    assert first["sources"]["mono"]["kept"] == 10 and second["sources"]["mono"]["kept"] == 25
    assert json.loads((out / "stats.json").read_text())["sources"]["mono"]["kept"] == 25
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    assert len(IndexedDataset(str(out / "mono" / "en.train"))) == 25
    assert sorted(p.name for p in out.iterdir()) == ["mono", "notes.txt", "other_source", "stats.json"]


def test_a_dead_jobs_staging_directory_is_removed(tmp_path):
    out = tmp_path / "tokens"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = out / f".staging-{dead.pid}-deadbeef"
    (stale / "mono").mkdir(parents=True)
    (stale / "mono" / "en.train.bin").write_bytes(b"\0" * 4096)
    live = out / f".staging-{os.getpid()}-cafecafe"  # a running job's (this process is alive)
    live.mkdir()
    run_preprocess(_cfg(out, [_write(tmp_path / "a.jsonl", 5)]))
    assert not stale.exists() and live.is_dir()


def _cli(recipe: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "tower_megatron", "preprocess", str(recipe)]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def big_recipe(tmp_path_factory) -> tuple[Path, Path]:
    """A job that runs for a while with 2 worker processes (long enough to be signalled)."""
    root = tmp_path_factory.mktemp("bigpre")
    src = _write(root / "big.jsonl", 400_000)
    out = root / "tokens"
    recipe = {
        "tokenizer": {"path": DEMO_TOKENIZER},
        "output_dir": str(out),
        "workers": 2,
        "progress": False,
        "filters": {"dedup": False},
        "sources": [{"name": "mono", "files": [str(src)]}],
    }
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return root / "recipe.yaml", out


def _running_workers(proc: subprocess.Popen, out: Path, deadline_s: float = 300) -> list:
    """Waits until the job staged output and started its pool; returns its descendants."""
    import psutil

    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and proc.poll() is None:
        family = psutil.Process(proc.pid).children(recursive=True)
        if len(family) >= 3 and any(out.glob(".staging-*/mono/*.bin")):  # forkserver + 2 workers
            return family
        time.sleep(0.1)
    raise AssertionError(f"preprocess never got going (exit {proc.poll()})")


def _all_gone(procs: list, wait_s: float = 60) -> bool:
    import psutil

    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        alive = [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_sigterm_and_kill9_leave_no_workers_or_staging(big_recipe, tmp_path):
    recipe, out = big_recipe
    out.mkdir(exist_ok=True)
    (out / "notes.txt").write_text("keep me")
    # SIGTERM: the job unwinds: staging removed, pool shut down, exit 128 + 15.
    proc = _cli(recipe, tmp_path / "term.log")
    try:
        family = _running_workers(proc, out)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 128 + signal.SIGTERM, (tmp_path / "term.log").read_text()[-2000:]
    finally:
        kill_tree(proc)
    assert _all_gone(family), "worker processes outlived the stopped job"
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    # kill -9: no clean-up runs in the job, but its workers die with it (PR_SET_PDEATHSIG) and the
    # next job removes the staging directory it left.
    proc = _cli(recipe, tmp_path / "kill.log")
    try:
        family = _running_workers(proc, out)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        kill_tree(proc)
    assert _all_gone(family), "worker processes outlived the killed job"
    left = list(out.glob(".staging-*"))
    assert left, "the kill came after the job finished"
    small = _cfg(out, [_write(tmp_path / "small.jsonl", 5)])
    run_preprocess(small)
    assert not any(out.glob(".staging-*")) and (out / "notes.txt").read_text() == "keep me"


def test_full_disk_is_reported_and_leaves_nothing(tmp_path):
    """A 1 MiB tmpfs as the output filesystem (needs root to mount; skipped otherwise)."""
    with tmpfs(tmp_path / "small_fs", "1m") as mnt:
        (mnt / "notes.txt").write_text("keep me")
        src = _write(tmp_path / "in" / "big.jsonl", 60_000)
        recipe = tmp_path / "recipe.yaml"
        recipe.write_text(yaml.safe_dump({
            "tokenizer": {"path": DEMO_TOKENIZER}, "output_dir": str(mnt / "tokens"), "workers": 1,
            "progress": False, "filters": {"dedup": False}, "sources": [{"name": "mono", "files": [str(src)]}],
        }))  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "-m", "tower_megatron", "preprocess", str(recipe)],
            cwd=REPO, capture_output=True, text=True, timeout=600,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )  # fmt: skip
        assert proc.returncode == 1, proc.stderr[-2000:]
        last = proc.stderr.strip().splitlines()[-1]
        assert "No space left on device" in last and str(mnt / "tokens") in last, last
        assert "Traceback" not in proc.stderr
        assert sorted(p.name for p in mnt.iterdir()) == ["notes.txt"]
