"""Tiny random Gemma 2 / Qwen 2 checkpoints made with ``transformers`` itself (no downloads).

Weights are re-drawn larger than HF's 0.02 init so attention is peaked, soft-caps bend (tanh far
from linear) and norms/biases are far from their identity values: a mapping or masking mistake
then moves the logits by much more than the 1e-4 tolerance.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import torch

SEQ = 16  # test sequence length; windows below are shorter

CASES: dict[str, tuple[str, dict]] = {
    # sliding window 6 < 16, GQA 4:2, head_dim 24 ≠ 64/4, query_pre_attn_scalar ≠ head_dim, caps
    "gemma2_gqa_window": (
        "gemma2",
        dict(
            vocab_size=160,
            hidden_size=64,
            intermediate_size=96,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=24,
            sliding_window=6,
            query_pre_attn_scalar=20,
            attn_logit_softcapping=2.0,
            final_logit_softcapping=1.5,
            max_position_embeddings=64,
        ),
    ),
    # multi-head (kv = heads), vocab 173 (padded on the Megatron side), window longer than the
    # sequence, no soft-capping
    "gemma2_mha_nocap": (
        "gemma2",
        dict(
            vocab_size=173,
            hidden_size=48,
            intermediate_size=80,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=32,
            sliding_window=64,
            query_pre_attn_scalar=32,
            attn_logit_softcapping=None,
            final_logit_softcapping=None,
            max_position_embeddings=64,
        ),
    ),
    # tied embeddings, GQA 4:2, QKV bias, RoPE 1e6
    "qwen2_tied": (
        "qwen2",
        dict(
            vocab_size=320,
            hidden_size=64,
            intermediate_size=112,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
            rope_theta=1000000.0,
            max_position_embeddings=64,
        ),
    ),
    # untied, GQA 6:2 (head_dim 8), sliding window 5 on layers ≥ 2 (Qwen's max_window_layers)
    "qwen2_untied_window": (
        "qwen2",
        dict(
            vocab_size=310,
            hidden_size=48,
            intermediate_size=64,
            num_hidden_layers=4,
            num_attention_heads=6,
            num_key_value_heads=2,
            tie_word_embeddings=False,
            use_sliding_window=True,
            sliding_window=5,
            max_window_layers=2,
            rope_theta=10000.0,
            max_position_embeddings=64,
        ),
    ),
}

_WORDS = ["hello", "world", "tower", "model", "gemma", "qwen", "translate", "english", "the", "of", "data"]


def _sentences(n: int = 1500) -> list[str]:
    rng = random.Random(0)
    return [" ".join(rng.choice(_WORDS) for _ in range(12)) for _ in range(n)]


def write_gemma_tokenizer(directory: Path) -> None:
    """A sentencepiece ``tokenizer.model`` laid out like Gemma's (pad 0, eos 1, bos 2, unk 3)."""
    import sentencepiece as spm

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_sentences()),
        model_writer=buffer,
        vocab_size=128,
        hard_vocab_limit=False,
        model_type="bpe",
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        user_defined_symbols=["<start_of_turn>", "<end_of_turn>"],
        # Gemma's normalisation: none, no dummy prefix (so HF's converted tokenizer agrees).
        add_dummy_prefix=False,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        minloglevel=2,
    )
    (directory / "tokenizer.model").write_bytes(buffer.getvalue())
    config = dict(
        tokenizer_class="GemmaTokenizer",
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    (directory / "tokenizer_config.json").write_text(json.dumps(config))


def write_qwen_tokenizer(directory: Path) -> None:
    """A byte-level BPE ``tokenizer.json`` with Qwen's special tokens."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_sentences(500), trainer)
    wrapped = transformers.Qwen2Tokenizer(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    wrapped.save_pretrained(str(directory))


@torch.no_grad()
def _randomize(model: torch.nn.Module, arch: str, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        noise = torch.randn(param.shape, generator=gen)
        if "norm" in name:
            # Gemma scales by (1 + w) with w around 0; Qwen by w around 1.
            param.copy_(0.3 * noise if arch == "gemma2" else 1.0 + 0.3 * noise)
        elif name.endswith("bias"):
            param.copy_(0.3 * noise)
        else:
            param.copy_(noise / param.shape[-1] ** 0.5)


def make_hf_checkpoint(
    name: str, directory: Path, seed: int = 0, shard_bytes: int | None = None, **overrides
) -> Path:
    """Saves case ``name`` (weights, config, tokenizer) under ``directory``; returns it.
    ``overrides`` change the case's config fields."""
    import transformers

    arch, kwargs = CASES[name]
    kwargs = {**kwargs, **overrides}
    config_cls = transformers.Gemma2Config if arch == "gemma2" else transformers.Qwen2Config
    config = config_cls(**kwargs)
    model_cls = transformers.Gemma2ForCausalLM if arch == "gemma2" else transformers.Qwen2ForCausalLM
    torch.manual_seed(seed)
    model = model_cls(config)
    _randomize(model, arch, seed)
    directory.mkdir(parents=True, exist_ok=True)
    save_kwargs = {"max_shard_size": shard_bytes} if shard_bytes else {}
    model.save_pretrained(str(directory), **save_kwargs)
    (write_gemma_tokenizer if arch == "gemma2" else write_qwen_tokenizer)(directory)
    return directory


def load_hf(directory: str | Path):
    """The HF model in fp32 eval mode with eager attention (soft-capping needs it)."""
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(directory), attn_implementation="eager", dtype=torch.float32
    )
    return model.eval()


def token_batch(vocab: int, batch: int = 2, seq: int = SEQ, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))
