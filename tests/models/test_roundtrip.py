"""HF → Megatron → HF is bit-exact; the export loads in ``transformers``, generates the original's
greedy tokens and carries the tokenizer and a chat template; bad inputs fail with a clear message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_hf import CASES, load_hf, make_hf_checkpoint, token_batch

from tower_megatron.cli import main as cli_main
from tower_megatron.models.checkpoint import MODEL_CONFIG_KEY, CheckpointReader
from tower_megatron.models.convert import hf_to_megatron, megatron_to_hf
from tower_megatron.models.hf_weights import ConversionError

QUIET = dict(log=lambda _: None)


def _tensors(directory: Path) -> dict[str, torch.Tensor]:
    return {k: v for f in sorted(directory.glob("*.safetensors")) for k, v in load_file(f).items()}


@pytest.fixture(scope="module")
def roundtrips(tmp_path_factory) -> dict[str, tuple[Path, Path, Path]]:
    root = tmp_path_factory.mktemp("roundtrip")
    out = {}
    for name in CASES:
        hf_dir = make_hf_checkpoint(name, root / f"hf_{name}")
        mcore = root / f"mcore_{name}"
        hf_to_megatron(hf_dir, mcore, **QUIET)
        # A tiny shard limit makes the export write several shards and an index.
        exported = megatron_to_hf(mcore, root / f"out_{name}", max_shard_bytes=40_000, **QUIET)
        out[name] = (hf_dir, mcore, exported)
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_every_tensor_round_trips_bit_exact(roundtrips, case):
    hf_dir, _, exported = roundtrips[case]
    original, back = _tensors(hf_dir), _tensors(exported)
    assert sorted(back) == sorted(original)
    for key, tensor in original.items():
        assert back[key].dtype == tensor.dtype and torch.equal(back[key], tensor), key
    index = json.loads((exported / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(original)


@pytest.mark.parametrize("case", list(CASES))
def test_export_loads_and_generates_the_same_greedy_tokens(roundtrips, case):
    hf_dir, _, exported = roundtrips[case]
    original, reloaded = load_hf(hf_dir), load_hf(exported)
    assert reloaded.config.to_dict()["layer_types"] == original.config.to_dict()["layer_types"]
    prompt = token_batch(CASES[case][1]["vocab_size"], batch=1, seq=6)
    kwargs = dict(max_new_tokens=10, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        want = original.generate(prompt, **kwargs)
        got = reloaded.generate(prompt, **kwargs)
    assert torch.equal(got, want)


@pytest.mark.parametrize("case", list(CASES))
def test_tokenizer_and_chat_template_are_carried(roundtrips, case):
    from transformers import AutoTokenizer

    from tower_megatron.config.data import TokenizerConfig
    from tower_megatron.data.tokenizer import build_tokenizer

    hf_dir, mcore, exported = roundtrips[case]
    text = "hello world translate the data"
    source, back = AutoTokenizer.from_pretrained(str(hf_dir)), AutoTokenizer.from_pretrained(str(exported))
    assert back(text).input_ids == source(text).input_ids
    chat = back.apply_chat_template(
        [{"role": "user", "content": "hello"}], tokenize=False, add_generation_prompt=True
    )
    marker = "<start_of_turn>model\n" if CASES[case][0] == "gemma2" else "<|im_start|>assistant\n"
    assert chat.endswith(marker)
    # The Megatron side: the trainer's tokenizer reads <checkpoint>/hf directly.
    kind = "sentencepiece" if CASES[case][0] == "gemma2" else "huggingface"
    megatron_tok = build_tokenizer(TokenizerConfig(type=kind, path=str(mcore / "hf")))
    assert megatron_tok.tokenize(text) == source(text, add_special_tokens=False).input_ids


def test_checkpoint_records_the_resolved_model_config(roundtrips):
    _, mcore, _ = roundtrips["gemma2_gqa_window"]
    stored = CheckpointReader(mcore).common_state()[MODEL_CONFIG_KEY]
    assert stored["arch"] == "gemma2"
    assert stored["sliding_window_pattern"] == [1, 0, 1, 0]
    assert stored["query_pre_attn_scalar"] == 20


def test_dtype_conversion(roundtrips, tmp_path):
    hf_dir, _, _ = roundtrips["qwen2_tied"]
    mcore = tmp_path / "bf16"
    hf_to_megatron(hf_dir, mcore, dtype="bfloat16", **QUIET)
    assert CheckpointReader(mcore).dtype("embedding.word_embeddings.weight") == torch.bfloat16
    out = megatron_to_hf(mcore, tmp_path / "out", dtype="float32", **QUIET)
    original = _tensors(hf_dir)
    for key, tensor in _tensors(out).items():
        assert torch.equal(tensor, original[key].to(torch.bfloat16).float()), key


# ---------------------------------------------------------------------------------- errors
@pytest.fixture
def gemma_copy(roundtrips, tmp_path) -> Path:
    import shutil

    hf_dir, _, _ = roundtrips["gemma2_mha_nocap"]
    copy = tmp_path / "hf"
    shutil.copytree(hf_dir, copy)
    return copy


def _edit_config(directory: Path, **changes) -> None:
    path = directory / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_unknown_architecture_is_named(gemma_copy, tmp_path, capsys):
    _edit_config(gemma_copy, model_type="llama", architectures=["LlamaForCausalLM"])
    yaml = tmp_path / "convert.yaml"
    yaml.write_text(f"direction: hf_to_megatron\ninput: {gemma_copy}\noutput: {tmp_path / 'out'}\n")
    code = cli_main(["convert", str(yaml)])
    assert code == 1
    err = capsys.readouterr().err
    assert "model_type='llama'" in err and "gemma2" in err and "qwen2" in err
    assert not (tmp_path / "out").exists()


def test_shape_mismatch_names_the_tensor(gemma_copy, tmp_path):
    _edit_config(gemma_copy, intermediate_size=96)
    with pytest.raises(
        ConversionError, match=r"model\.layers\.0\.mlp\.gate_proj\.weight.*\[80, 48\].*\[96, 48\]"
    ):
        hf_to_megatron(gemma_copy, tmp_path / "out", **QUIET)
    assert not (tmp_path / "out").exists()


def test_missing_shard_is_named(roundtrips, tmp_path):
    _, mcore, _ = roundtrips["qwen2_tied"]
    sharded = megatron_to_hf(mcore, tmp_path / "sharded", max_shard_bytes=30_000, **QUIET)
    victim = sorted(sharded.glob("model-*.safetensors"))[1]
    victim.unlink()
    with pytest.raises(ConversionError, match=victim.name):
        hf_to_megatron(sharded, tmp_path / "out", **QUIET)


def test_unsupported_dtype_is_named(gemma_copy, tmp_path):
    tensors = load_file(gemma_copy / "model.safetensors")
    tensors["model.norm.weight"] = tensors["model.norm.weight"].to(torch.int8)
    save_file(tensors, gemma_copy / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ConversionError, match=r"model\.norm\.weight.*I8"):
        hf_to_megatron(gemma_copy, tmp_path / "out", **QUIET)


def test_unexpected_tensor_is_refused(gemma_copy, tmp_path):
    tensors = load_file(gemma_copy / "model.safetensors")
    tensors["model.layers.0.mlp.extra_proj.weight"] = torch.zeros(2, 2)
    save_file(tensors, gemma_copy / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ConversionError, match="extra_proj"):
        hf_to_megatron(gemma_copy, tmp_path / "out", **QUIET)


def test_existing_output_needs_overwrite(roundtrips, tmp_path):
    hf_dir, _, _ = roundtrips["qwen2_tied"]
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError, match="overwrite"):
        hf_to_megatron(hf_dir, tmp_path / "out", **QUIET)
    hf_to_megatron(hf_dir, tmp_path / "out", overwrite=True, **QUIET)
    assert (tmp_path / "out" / "metadata.json").is_file()


def test_cli_with_the_example_configs(roundtrips, tmp_path):
    hf_dir, _, _ = roundtrips["gemma2_mha_nocap"]
    configs = Path(__file__).resolve().parents[2] / "configs" / "convert"
    mcore, back = tmp_path / "mcore", tmp_path / "back"
    assert (
        cli_main(["convert", str(configs / "hf_to_megatron.yaml"), f"input={hf_dir}", f"output={mcore}"]) == 0
    )
    assert (
        cli_main(["convert", str(configs / "megatron_to_hf.yaml"), f"input={mcore}", f"output={back}"]) == 0
    )
    original, exported = _tensors(hf_dir), _tensors(back)
    assert all(torch.equal(exported[k], v) for k, v in original.items()) and len(exported) == len(original)


def test_qwen2_export_keeps_max_window_layers(roundtrips):
    """Windows on layers ≥ 2 (``max_window_layers=2``) come back as 2, not HF's default 28, so a
    reader that derives the windows from ``max_window_layers`` sees the trained layout."""
    from transformers import Qwen2Config

    hf_dir, _, exported = roundtrips["qwen2_untied_window"]
    source = json.loads((hf_dir / "config.json").read_text())
    written = json.loads((exported / "config.json").read_text())
    assert source["max_window_layers"] == 2
    assert written["max_window_layers"] == 2
    assert written["layer_types"] == ["full_attention"] * 2 + ["sliding_attention"] * 2
    without_layer_types = {k: v for k, v in written.items() if k != "layer_types"}
    assert Qwen2Config(**without_layer_types).layer_types == written["layer_types"]
