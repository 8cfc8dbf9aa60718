"""Thin entry point, named like Megatron-LM's tool: ``python tools/preprocess_data.py CONFIG [key=value ...]``
is ``tower-megatron preprocess CONFIG [key=value ...]`` (see ``configs/data/demo_corpus.yaml``)."""

from __future__ import annotations

import sys

from tower_megatron.cli import main

if __name__ == "__main__":
    sys.exit(main(["preprocess", *sys.argv[1:]]))
