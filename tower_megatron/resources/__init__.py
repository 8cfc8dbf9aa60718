"""Files shipped inside the package: the demo corpus (``corpus/``) and the demo tokenizer
(``tokenizer/``). Configs name them as ``resource:corpus/...`` so a recipe works from a source
checkout and from an installed wheel alike."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

PREFIX = "resource:"


def resource_path(relative: str) -> Path:
    """The on-disk path of a packaged resource, e.g. ``resource_path("tokenizer/tower_demo_sp.model")``."""
    root = resources.files("tower_megatron.resources")
    # A wheel installs as plain files, so the traversable is a real directory (no zip extraction).
    return Path(str(root.joinpath(relative)))


def resolve(path: str) -> str:
    """``resource:<relative>`` → the packaged file's path; any other path is returned unchanged."""
    if path.startswith(PREFIX):
        return str(resource_path(path[len(PREFIX) :].lstrip("/")))
    return path


DEMO_TOKENIZER = f"{PREFIX}tokenizer/tower_demo_sp.model"
DEMO_CORPUS = f"{PREFIX}corpus"
