"""Cases and prompts shared by the generation tests (a module of its own: spawned test workers
import test modules by name, and ``conftest`` is ambiguous across test folders)."""

from __future__ import annotations

# Gemma 2 with a 6-token sliding window, GQA and both soft-caps; Qwen 2 with tied embeddings;
# Qwen 2 with a sliding window on some layers (Megatron's stock softmax: equal-length batches).
GENERATION_CASES = ("gemma2_gqa_window", "qwen2_tied", "qwen2_untied_window")


def prompt_batch(vocab: int, lengths: tuple[int, ...], seed: int = 0) -> list[list[int]]:
    """Random prompts of the given lengths over ids [4, vocab) (no BOS/EOS/PAD/UNK)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(4, vocab, (n,), generator=gen).tolist() for n in lengths]
