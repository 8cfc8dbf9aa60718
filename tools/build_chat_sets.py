"""Writes the embedded translation SFT chats and translation preference pairs, generated from the
embedded parallel corpus by :mod:`tower_megatron.data.sft_synthetic` (deterministic output):

    python tools/build_chat_sets.py [--seed 0]

- ``tower_megatron/resources/corpus/sft/translation_chat.jsonl.gz`` (``sft`` source kind)
- ``tower_megatron/resources/corpus/preference/translation.jsonl.gz`` (``preference`` source kind)
"""

from __future__ import annotations

import argparse

from tower_megatron.data.sft_synthetic import (
    parallel_pairs,
    translation_chats,
    translation_preferences,
    write_jsonl_gz,
)
from tower_megatron.resources import resource_path

SFT_FILE = "corpus/sft/translation_chat.jsonl.gz"
PREFERENCE_FILE = "corpus/preference/translation.jsonl.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pairs = parallel_pairs()
    for relative, records in (
        (SFT_FILE, translation_chats(pairs, args.seed)),
        (PREFERENCE_FILE, translation_preferences(pairs, args.seed)),
    ):
        path = resource_path(relative)
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"{path}: {write_jsonl_gz(records, str(path))} records")


if __name__ == "__main__":
    main()
