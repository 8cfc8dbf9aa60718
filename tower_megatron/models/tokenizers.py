"""Tokenizer files and chat templates carried through conversion.

A converted Megatron checkpoint keeps the HF side (``config.json``, tokenizer files, generation
config) in ``<checkpoint>/hf``; an export copies them back next to the weights. Gemma's
sentencepiece (``tokenizer.model``) and Qwen's byte-level BPE (``tokenizer.json``,
``vocab.json``/``merges.txt``) are plain files, so carrying them is copying them.

Chat templates: a checkpoint's own template always wins. Base checkpoints often ship none, and SFT
needs one, so each family's instruction format (:data:`CHAT_TEMPLATES`, generated from
:mod:`tower_megatron.data.chat_format`) is written into ``tokenizer_config.json`` when the source
has no template.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tower_megatron.data.chat_format import CHAT_FORMATS
from tower_megatron.registry import Registry

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)

CHAT_TEMPLATES: Registry[str] = Registry("chat template")

# Generated from the one definition per family in data/chat_format.py, which also renders the
# training data, so an exported checkpoint formats chats exactly as it was trained (no default
# system prompt, no trimming; tests/data/test_chat_format.py checks token-level parity).
CHAT_TEMPLATES.register("gemma", "gemma2")(CHAT_FORMATS.get("gemma").jinja())
CHAT_TEMPLATES.register("chatml", "qwen2", "qwen2.5")(CHAT_FORMATS.get("chatml").jinja())


def resolve_chat_template(spec: str | None, arch: str) -> str | None:
    """``spec``: a registered name or a ``.jinja`` file; None → the family's template, if any."""
    if spec is None:
        return CHAT_TEMPLATES.get(arch) if arch in CHAT_TEMPLATES else None
    path = Path(spec)
    if path.suffix == ".jinja" or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"chat_template: no such file: {path}")
        return path.read_text(encoding="utf-8")
    return CHAT_TEMPLATES.get(spec)


def has_tokenizer(directory: Path) -> bool:
    return any((directory / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "vocab.json"))


def copy_tokenizer_files(source: Path, target: Path) -> list[str]:
    """Copies the tokenizer (and generation config) files found in ``source``; returns their names."""
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)
            copied.append(name)
    return copied


def ensure_chat_template(directory: Path, template: str | None, override: bool = False) -> bool:
    """Writes ``template`` into ``tokenizer_config.json`` unless the tokenizer already has one
    (or ``override``). Returns True when it wrote."""
    config_file = directory / "tokenizer_config.json"
    if template is None or not config_file.is_file():
        return False
    config = json.loads(config_file.read_text(encoding="utf-8"))
    has_own = bool(config.get("chat_template")) or (directory / "chat_template.jinja").is_file()
    if has_own and not override:
        return False
    if override:
        (directory / "chat_template.jinja").unlink(missing_ok=True)  # it would win over the config
    config["chat_template"] = template
    config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return True
