"""Which directory is a checkpoint: the completion mark decides, interrupted saves are never read.
(Plain files only; the end-to-end checks with real processes are in the other test_checkpoint_*.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from tower_megatron.training.checkpointing import (
    META_FILE,
    CheckpointError,
    latest_checkpoint,
    remove_incomplete,
    resolve_load_path,
)


def _ckpt(root: Path, name: str, complete: bool) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "__0_0.distcp").write_bytes(b"shard")
    if complete:
        (path / "metadata.json").write_text("{}")
        (path / META_FILE).write_text('{"train_state": {"step": 1}}')
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    _ckpt(tmp_path, "iter_0000003", complete=True)
    _ckpt(tmp_path, "iter_0000006", complete=True)
    _ckpt(tmp_path, "iter_0000009", complete=False)  # a foreign or damaged directory
    _ckpt(tmp_path, ".tmp_iter_0000012", complete=False)  # a save killed midway
    # killed between the rename of iter_6 and the rewrite of the pointer
    (tmp_path / "latest").write_text("iter_0000003\n")
    return tmp_path


def test_latest_is_the_newest_complete_checkpoint(root):
    assert latest_checkpoint(root) == root / "iter_0000006"
    assert latest_checkpoint(root / "nothing_here") is None


def test_remove_incomplete_only_touches_tmp(root):
    removed = remove_incomplete(root)
    assert [p.name for p in removed] == [".tmp_iter_0000012"]
    assert sorted(p.name for p in root.iterdir()) == [
        "iter_0000003",
        "iter_0000006",
        "iter_0000009",
        "latest",
    ]


def test_resolve_load_path(root):
    assert resolve_load_path(root) == root / "iter_0000006"
    assert resolve_load_path(root / "iter_0000003") == root / "iter_0000003"
    with pytest.raises(CheckpointError, match=r"no such directory: .*/missing"):
        resolve_load_path(root / "missing")
    with pytest.raises(CheckpointError, match=r"\.tmp_iter_0000012 is an incomplete checkpoint"):
        resolve_load_path(root / ".tmp_iter_0000012")
    with pytest.raises(CheckpointError, match=r"iter_0000009 is an incomplete checkpoint"):
        resolve_load_path(root / "iter_0000009")
    only_tmp = root / "only_tmp"
    _ckpt(only_tmp, ".tmp_iter_0000001", complete=False)
    with pytest.raises(CheckpointError, match=r"only_tmp holds no complete checkpoint \(only interrupted"):
        resolve_load_path(only_tmp)
