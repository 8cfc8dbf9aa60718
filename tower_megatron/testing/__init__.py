"""Helpers for tests that run real distributed code on CPU (also usable by plugin authors)."""

from tower_megatron.testing.distributed import run_distributed

__all__ = ["run_distributed"]
