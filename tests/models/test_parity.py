"""Converted tiny Gemma 2 / Qwen 2 checkpoints give ``transformers``' logits (fp32, ≤ 1e-4 max abs)
in Megatron-Core at TP=1, TP=2, TP=2 with sequence parallelism and PP=2, on two gloo processes; and
checkpoints the Megatron model saves at TP=2 / PP=2 export back to the original HF tensors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_hf import CASES, load_hf, make_hf_checkpoint, token_batch

from tower_megatron.models.convert import hf_to_megatron, megatron_to_hf
from tower_megatron.testing import run_distributed

TOL = 1e-4
LAYOUTS = {
    "tp1": dict(tp=1, pp=1, sp=False),  # DP=2: both ranks run the whole model
    "tp2": dict(tp=2, pp=1, sp=False),
    "tp2_sp": dict(tp=2, pp=1, sp=True),
    "pp2": dict(tp=1, pp=2, sp=False),
}
SAVE_FROM = ("tp2", "pp2")  # layouts whose Megatron-saved checkpoints are exported back


def megatron_logits(
    ckpt: str, layout: dict, ids: torch.Tensor
) -> tuple[torch.Tensor | None, torch.nn.Module]:
    """Loads the checkpoint at ``layout``; returns the real-vocabulary logits [b, s, V] on the
    last pipeline stage (None elsewhere) and this rank's model."""
    import torch.distributed as dist
    from megatron.core import parallel_state as ps

    from tower_megatron.config.model import ModelConfig
    from tower_megatron.config.schema import ParallelConfig, TrainConfig
    from tower_megatron.models import MODEL_FAMILIES, load_model_checkpoint, pad_vocab, resolve_model_config

    model_cfg = resolve_model_config(ModelConfig(hf_config=ckpt, transformer_impl="local"))
    family = MODEL_FAMILIES.get(model_cfg.arch)
    parallel = ParallelConfig(
        tensor_model_parallel_size=layout["tp"],
        pipeline_model_parallel_size=layout["pp"],
        sequence_parallel=layout["sp"],
    )
    config = family.transformer_config(model_cfg, parallel, TrainConfig(precision="fp32"))
    first, last = ps.is_pipeline_first_stage(), ps.is_pipeline_last_stage()
    padded = pad_vocab(model_cfg.vocab_size, model_cfg.make_vocab_size_divisible_by, layout["tp"])
    model = family.build(model_cfg, config, first, last, None, padded).eval()
    load_model_checkpoint([model], ckpt)
    pos = torch.arange(ids.shape[1]).unsqueeze(0).expand_as(ids)
    hidden_shape = (ids.shape[1], ids.shape[0], model_cfg.hidden_size)
    with torch.no_grad():
        if not first:
            received = torch.empty(hidden_shape)
            dist.recv(received, src=ps.get_pipeline_model_parallel_prev_rank())
            model.set_input_tensor(received)
        out = model(ids, pos, None, runtime_gather_output=True)
        if not last:
            dist.send(out.contiguous(), dst=ps.get_pipeline_model_parallel_next_rank())
            return None, model
    return out[..., : model_cfg.vocab_size], model


def _worker(cases: dict[str, tuple[str, str]], layouts: dict[str, dict], save_dir: str) -> dict:
    import torch.distributed as dist
    from megatron.core import dist_checkpointing

    from tower_megatron.runtime import init_runtime

    ids = {name: token_batch(CASES[name][1]["vocab_size"]) for name in cases}
    with torch.no_grad():
        reference = {name: load_hf(hf_dir)(ids[name]).logits for name, (hf_dir, _) in cases.items()}
    diffs: dict[str, float] = {}
    keys: dict[str, list[str]] = {}
    for layout_name, layout in layouts.items():
        init_runtime(tp=layout["tp"], pp=layout["pp"], device="cpu")
        for name, (_, ckpt) in cases.items():
            logits, model = megatron_logits(ckpt, layout, ids[name])
            if logits is not None:
                diffs[f"{layout_name}/{name}"] = (logits - reference[name]).abs().max().item()
            if layout_name == "tp1":
                keys[name] = sorted(_tensor_keys(model.sharded_state_dict()))
            if layout_name in SAVE_FROM:
                # What the trainer does: save the model's own sharded state dict at this layout.
                target = Path(save_dir) / layout_name / name
                if dist.get_rank() == 0:
                    target.mkdir(parents=True)
                dist.barrier()
                dist_checkpointing.save({"model": model.sharded_state_dict()}, str(target))
            dist.barrier()
    return {"diffs": diffs, "keys": keys}


def _tensor_keys(obj) -> set[str]:
    """ShardedTensor keys of a sharded state dict (factories expanded)."""
    from megatron.core.dist_checkpointing.mapping import ShardedTensor, ShardedTensorFactory

    if isinstance(obj, dict):
        return set().union(*(_tensor_keys(v) for v in obj.values())) if obj else set()
    if isinstance(obj, list | tuple):
        return set().union(*(_tensor_keys(v) for v in obj)) if obj else set()
    if isinstance(obj, ShardedTensorFactory):
        return _tensor_keys(obj.build())
    return {obj.key} if isinstance(obj, ShardedTensor) else set()


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, tuple[str, str]]:
    root = tmp_path_factory.mktemp("parity")
    out = {}
    for name in CASES:
        # One checkpoint sharded with an index, to exercise that reader path.
        shard = 20_000 if name == "qwen2_untied_window" else None
        hf_dir = make_hf_checkpoint(name, root / f"hf_{name}", shard_bytes=shard)
        ckpt = root / f"mcore_{name}"
        hf_to_megatron(hf_dir, ckpt, log=lambda _: None)
        out[name] = (str(hf_dir), str(ckpt))
    return out


@pytest.fixture(scope="module")
def parity(converted, tmp_path_factory) -> tuple[dict[str, float], Path, dict[str, list[str]]]:
    save_dir = tmp_path_factory.mktemp("saved")
    results = run_distributed(_worker, world_size=2, cases=converted, layouts=LAYOUTS, save_dir=str(save_dir))
    merged = {**results[0]["diffs"], **results[1]["diffs"]}
    print("max |logits - HF logits|:", {k: f"{v:.2e}" for k, v in sorted(merged.items())})
    return merged, save_dir, results[0]["keys"]


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_transformers(parity, layout, case):
    diffs, _, _ = parity
    assert diffs[f"{layout}/{case}"] <= TOL


@pytest.mark.parametrize("layout", SAVE_FROM)
@pytest.mark.parametrize("case", list(CASES))
def test_checkpoint_saved_in_parallel_exports_to_the_original(parity, converted, layout, case, tmp_path):
    from safetensors.torch import load_file

    from tower_megatron.config.model import ModelConfig

    _, save_dir, _ = parity
    hf_dir, _ = converted[case]
    out = megatron_to_hf(
        save_dir / layout / case, tmp_path / "hf", model=ModelConfig(hf_config=hf_dir), log=lambda _: None
    )
    original = {k: v for f in Path(hf_dir).glob("*.safetensors") for k, v in load_file(f).items()}
    exported = {k: v for f in out.glob("*.safetensors") for k, v in load_file(f).items()}
    assert sorted(exported) == sorted(original)
    for key, tensor in original.items():
        assert torch.equal(exported[key], tensor), key


@pytest.mark.parametrize("case", list(CASES))
def test_converted_checkpoint_holds_exactly_the_model_tensors(parity, converted, case):
    from tower_megatron.models.checkpoint import CheckpointReader

    _, _, keys = parity
    assert CheckpointReader(converted[case][1]).tensor_keys() == keys[case]


def test_export_needs_the_architecture_when_the_checkpoint_does_not_record_it(parity, tmp_path):
    from tower_megatron.models.hf_weights import ConversionError

    _, save_dir, _ = parity
    with pytest.raises(ConversionError, match="does not record its architecture"):
        megatron_to_hf(save_dir / "tp2" / "qwen2_tied", tmp_path / "hf", log=lambda _: None)
