"""Presets, HF config resolution, parameter counts on the meta device and training FLOPs."""

from __future__ import annotations

import json

import pytest

from tower_megatron.config.model import ModelConfig
from tower_megatron.models import PRESETS, count_parameters, flops_per_token, resolve_model_config
from tower_megatron.registry import UnknownNameError
from tower_megatron.testing import run_distributed


def test_preset_switches_the_default_arch_and_fills_gemma2_fields():
    model = resolve_model_config(ModelConfig(preset="gemma2-2b"))
    assert model.arch == "gemma2"
    assert (model.num_layers, model.hidden_size, model.kv_channels, model.vocab_size) == (
        26,
        2304,
        256,
        256000,
    )
    assert model.sliding_window == 4096
    assert model.sliding_window_pattern == [1, 0] * 13  # layers 0, 2, … slide
    assert (model.attn_logit_softcapping, model.final_logit_softcapping) == (50.0, 30.0)
    assert model.query_pre_attn_scalar == 256
    assert not model.untie_embeddings_and_output_weights
    assert resolve_model_config(ModelConfig(preset="gemma2-27b")).query_pre_attn_scalar == 144


def test_explicit_fields_override_the_preset():
    model = resolve_model_config(ModelConfig(preset="qwen2.5-7b", num_layers=2, sliding_window=16))
    assert (model.arch, model.num_layers, model.hidden_size) == ("qwen2", 2, 3584)
    assert model.sliding_window_pattern == [1, 1]
    assert model.add_qkv_bias and model.untie_embeddings_and_output_weights
    assert (
        resolve_model_config(ModelConfig(preset="qwen2.5-0.5b")).untie_embeddings_and_output_weights is False
    )


def test_unknown_preset_suggests_the_closest():
    with pytest.raises(UnknownNameError, match="Did you mean 'gemma2-9b'"):
        resolve_model_config(ModelConfig(preset="gemma2-9B"))


def test_hf_config_json_resolves_family_and_fields(tmp_path):
    config = {
        "model_type": "qwen2",
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 3,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "vocab_size": 1000,
        "rope_theta": 500000.0,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": True,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    model = resolve_model_config(ModelConfig(hf_config=str(tmp_path)), vocab_size=900)
    assert model.arch == "qwen2"
    assert (model.num_query_groups, model.kv_channels, model.rotary_base, model.norm_epsilon) == (
        2,
        16,
        5e5,
        1e-5,
    )
    assert model.vocab_size == 1000 and not model.untie_embeddings_and_output_weights
    with pytest.raises(ValueError, match="tokenizer has 1200 tokens"):
        resolve_model_config(ModelConfig(hf_config=str(tmp_path)), vocab_size=1200)
    config["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="yarn"):
        resolve_model_config(ModelConfig(hf_config=str(tmp_path)))


def test_conflicting_sources_are_refused():
    with pytest.raises(ValueError, match="not both"):
        resolve_model_config(ModelConfig(preset="gemma2-2b", hf_config="/nowhere"))
    with pytest.raises(ValueError, match="model.arch=qwen2 but model.preset=gemma2-2b"):
        resolve_model_config(ModelConfig(arch="qwen2", preset="gemma2-2b"))


def test_gpt_family_still_resolves_without_sources():
    model = resolve_model_config(ModelConfig(), vocab_size=320)
    assert (model.arch, model.vocab_size, model.num_query_groups, model.sliding_window) == ("gpt", 320, 4, 0)


def _meta_counts(names: list[str]) -> dict[str, tuple[int, int]]:
    import psutil

    from tower_megatron.models.flops import count_parameters_on_meta
    from tower_megatron.runtime import init_runtime

    init_runtime(device="cpu")
    rss = psutil.Process().memory_info().rss
    counts = {
        name: count_parameters_on_meta(resolve_model_config(ModelConfig(preset=name))) for name in names
    }
    return {"counts": counts, "rss_growth": psutil.Process().memory_info().rss - rss}


def test_parameter_counts_match_published_sizes_on_meta_device():
    names = PRESETS.names()
    [result] = run_distributed(_meta_counts, world_size=1, names=names)
    # 72.7B parameters in bf16 would be 145 GB; the meta build allocates none of it.
    assert result["rss_growth"] < 500e6, result["rss_growth"]
    for name in names:
        model = resolve_model_config(ModelConfig(preset=name))
        meta = result["counts"][name]
        assert count_parameters(model) == meta, name
        # Model cards round (Qwen's sometimes truncate): within 1% of the quoted size.
        assert meta == pytest.approx(PRESETS.get(name).published_params, rel=0.01), (name, meta)
    for name, billions in {"gemma2-2b": 2.6, "gemma2-9b": 9.2, "qwen2.5-72b": 72.7}.items():
        assert round(result["counts"][name] / 1e9, 1) == billions, name


def test_flops_per_token_gpt3_175b_by_hand():
    """GPT-3 175B (96 layers, h=12288, s=2048, V=51200 padded) — Narayanan et al. 2021, appendix:
    training FLOPs per token 72·l·h²·(1 + s/(6h) + V/(12·l·h)) without recomputation; Megatron-LM
    today halves the s/(6h) attention term for causal masking (training.py "causal mask"):
    72·96·12288² + 6·96·12288·2048 + 6·12288·51200 = 1 061 947 441 152."""
    gpt3 = resolve_model_config(
        ModelConfig(
            num_layers=96,
            hidden_size=12288,
            num_attention_heads=96,
            ffn_hidden_size=4 * 12288,
            activation="gelu",
            vocab_size=51200,
        )
    )
    assert flops_per_token(gpt3, seq_length=2048) == 1_061_947_441_152


def test_flops_per_token_gqa_swiglu_by_hand():
    """Qwen 2.5 72B at seq 4096 (GQA 64:8, d=128, SwiGLU ffn 29568, V=152064, untied), per layer
    and token: QKV 8192·(8192+2·1024) + core attention 8192·4096 (QKᵀ and AV over 4096/2 keys)
    + output 8192² + MLP 3·8192·29568 = 911 212 544; ×80 layers + LM head 8192·152064, all ×6:
    444 856 270 848. Llama-3-8B (32 layers, h=4096, 8 KV heads, ffn 14336, V=128256) at seq 8192:
    51 470 401 536."""
    qwen = resolve_model_config(ModelConfig(preset="qwen2.5-72b"))
    assert flops_per_token(qwen, seq_length=4096) == 444_856_270_848
    llama3_8b = resolve_model_config(
        ModelConfig(
            num_layers=32,
            hidden_size=4096,
            num_attention_heads=32,
            num_query_groups=8,
            ffn_hidden_size=14336,
            vocab_size=128256,
        )
    )
    assert flops_per_token(llama3_8b, seq_length=8192) == 51_470_401_536
    # Megatron-LM counts the padded vocabulary when the caller passes it.
    assert flops_per_token(llama3_8b, 8192, vocab_size=128256 + 128) == 51_470_401_536 + 6 * 4096 * 128
