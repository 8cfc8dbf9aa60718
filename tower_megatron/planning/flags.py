"""``--gpus 32`` style flags for the ``plan`` and ``launch`` verbs, as ``section.key=value`` overrides.

The CLI's shape is ``tower-megatron <verb> CONFIG [key=value ...]``; argparse stops at an
unknown ``--flag`` unless it follows ``--`` (``tower-megatron plan CONFIG -- --gpus 32``), so
the verbs accept both spellings and translate flags here.
"""

from __future__ import annotations

from tower_megatron.config.loader import ConfigError


def flags_to_overrides(section: str, args: list[str], aliases: dict[str, str] | None = None) -> list[str]:
    """``["--gpus", "32", "--search", "x=1"]`` → ``["plan.gpus=32", "plan.search=true", "x=1"]``.

    ``--key value`` and ``--key=value`` set ``section.key`` (dashes become underscores); a flag
    followed by nothing or by another flag is ``true``; ``aliases`` maps a flag to a full key
    (``{"slurm": "launch.mode=slurm"}`` for value-less switches).
    """
    aliases = aliases or {}
    out: list[str] = []
    i = 0
    while i < len(args):
        item = args[i]
        if not item.startswith("--") or item == "--":
            if item != "--":
                out.append(item)
            i += 1
            continue
        name, eq, value = item[2:].partition("=")
        if name in aliases and not eq:
            out.append(aliases[name])
            i += 1
            continue
        if not name:
            raise ConfigError(f"cannot read flag {item!r}")
        key = f"{section}.{name.replace('-', '_')}"
        if not eq:
            nxt = args[i + 1] if i + 1 < len(args) else None
            if nxt is None or nxt.startswith("--") or "=" in nxt:
                value = "true"
            else:
                value, i = nxt, i + 1
        out.append(f"{key}={value}")
        i += 1
    return out
