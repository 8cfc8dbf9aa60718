"""The planner's arithmetic against independent figures: the parameter count of the model zoo
(pinned to the built Megatron model by tests/models), Megatron's documented bytes per parameter,
Megatron-Core's own schedule tables, and published 70B-class layouts on 80 GB GPUs."""

from __future__ import annotations

import json

import pytest

from tower_megatron.cli import main
from tower_megatron.config.model import ModelConfig
from tower_megatron.models import resolve_model_config
from tower_megatron.models.flops import count_parameters
from tower_megatron.planning.activations import schedule_order
from tower_megatron.planning.estimate import Cluster, estimate
from tower_megatron.planning.gpus import GPUS, GiB, parse_bytes
from tower_megatron.planning.params import Layout, chunk_params, padded_vocab, rank_state_bytes
from tower_megatron.planning.planner import load_plan_job, plan, workload

RECIPE_72B = "configs/cpt_qwen2.5_72b_fp8.yaml"


def _model(preset: str) -> ModelConfig:
    return resolve_model_config(ModelConfig(preset=preset))


@pytest.mark.parametrize(
    "preset,layout",
    [
        ("qwen2.5-72b", Layout(tp=8, pp=4, vpp=5)),
        ("qwen2.5-72b", Layout(tp=4, pp=8, vpp=5)),
        ("gemma2-2b", Layout(tp=2, pp=2)),  # tied embeddings: the last stage keeps a copy
        ("qwen2.5-0.5b", Layout(tp=1, pp=1)),  # tied, one stage: no output weight
    ],
)
def test_rank_inventories_add_up_to_the_model(preset, layout):
    """TP shards × TP + the norms every TP rank replicates = the whole model."""
    model = _model(preset)
    params = [
        p
        for pp in range(layout.pp)
        for vp in range(layout.chunks)
        for p in chunk_params(model, layout, pp, vp)
    ]
    sharded = sum(p.numel for p in params if "norm" not in p.name)
    replicated = sum(p.numel for p in params if "norm" in p.name)
    tied_copy = layout.pp > 1 and not model.untie_embeddings_and_output_weights
    vocab = padded_vocab(model, layout.tp)
    want = count_parameters(model, vocab) + (vocab * model.hidden_size if tied_copy else 0)
    assert sharded * layout.tp + replicated == want


def test_bytes_per_parameter_match_megatron_docs():
    """Megatron's distributed-optimizer guide: bf16 params with fp32 grads take 18 bytes per
    parameter without the distributed optimizer, 6 + 12/d with it (plus the 4-byte Adam step
    counter per tensor that torch's Adam keeps)."""
    model = _model("qwen2.5-72b")
    plain = Layout(tp=8, pp=4)
    params = chunk_params(model, plain, 1)
    st = rank_state_bytes(model, plain, 1, 0, 2, True)
    numel = sum(p.numel for p in params)
    assert st.params + st.grads + st.optimizer == 18 * numel + 4 * len(params)
    dist = Layout(tp=8, pp=4, dp=8, dist_opt=True)
    shards = [rank_state_bytes(model, dist, 1, r, 2, True) for r in range(8)]
    padded = shards[0].params // 2
    assert all(s.params == 2 * padded and s.grads == 4 * padded for s in shards)
    adam_and_main = sum(s.optimizer for s in shards)  # every element is owned by one DP rank
    steps = (adam_and_main - 12 * numel) // 4  # one step counter per parameter shard
    assert adam_and_main - 12 * numel == 4 * steps
    assert len(params) <= steps <= len(params) + 7  # each of the 7 shard boundaries splits ≤ 1


@pytest.mark.parametrize("pp,vpp,micro", [(4, 1, 8), (4, 5, 8), (2, 2, 4), (8, 5, 16)])
def test_schedule_in_flight_matches_megatron_warmup(pp, vpp, micro):
    """Forward chunks before the first backward = Megatron's warm-up + 1 (Narayanan et al.)."""
    for rank in range(pp):
        order = schedule_order(pp, vpp, rank, micro)
        first_backward = next(i for i, (kind, _) in enumerate(order) if kind == "B")
        if vpp == 1:
            want = min(pp - rank - 1, micro) + 1
        else:
            want = min((pp - rank - 1) * 2 + (vpp - 1) * pp, micro * vpp) + 1
        assert first_backward == want
        assert [k for k, _ in order].count("F") == micro * vpp


def _search(gpus: int):
    job = load_plan_job(
        RECIPE_72B, [f"plan.gpus={gpus}", "plan.search=true", "plan.gpu=h100", "plan.gpu_memory=80GiB"]
    )
    return job, plan(job)


@pytest.mark.parametrize(
    "gpus,published",
    [
        # Megatron-Bridge Qwen2.5-72B H100 recipe: TP 8, PP 4, seq 4096, 32 GPUs (VP 5 as ours).
        (32, dict(tp=8, pp=4, vpp=5)),
        # Megatron-Bridge Llama3-70B, 64 H100: TP 4, PP 8, VP 5.
        (64, dict(tp=4, pp=8, vpp=5)),
    ],
)
def test_72b_on_80gb_gpus_picks_a_layout_that_fits_and_admits_the_published_one(gpus, published):
    job, result = _search(gpus)
    usable = int(80 * GiB * 0.9)
    assert result["fits"]
    best = result["layouts"][0]
    assert best["peak_bytes"] <= usable
    assert best["layout"]["tp"] * best["layout"]["pp"] * best["layout"]["dp"] == gpus
    chosen = {
        (d["layout"]["tp"], d["layout"]["pp"], d["layout"]["vpp"], d["layout"]["recompute"])
        for d in result["layouts"]
    }
    assert (published["tp"], published["pp"], published["vpp"], None) in chosen
    # Without model parallelism 72.7B parameters need > 6 bytes each per GPU: never feasible.
    assert not any(d["layout"]["tp"] == 1 and d["layout"]["pp"] == 1 for d in result["layouts"])

    # The published layout's state agrees with the memory arithmetic behind it: bf16 weights,
    # fp32 grads, Adam + fp32 main params sharded over DP (6 + 12/d bytes per parameter) for
    # the ~72.7B/(TP·PP) parameters of a GPU (the first stage also holds the embedding).
    model = _model("qwen2.5-72b")
    lay = Layout(**published, dp=gpus // (published["tp"] * published["pp"]), sp=True, dist_opt=True)
    est = estimate(model, lay, workload(job, "te"), Cluster(GPUS.get("h100"), gpus))
    per_gpu = count_parameters(model, padded_vocab(model, lay.tp)) / (lay.tp * lay.pp)
    state = sum(est.ranks[1].__dict__[k] for k in ("params", "grads", "optimizer"))  # a middle stage
    assert state == pytest.approx(per_gpu * (6 + 12 / lay.dp), rel=0.05)
    assert est.peak.total <= usable


def test_bubble_is_narayanan_formula():
    model = _model("qwen2.5-72b")
    job = load_plan_job(RECIPE_72B, ["plan.gpus=32"])
    est = estimate(
        model,
        Layout(tp=8, pp=4, vpp=5, dp=1, sp=True, dist_opt=True),
        workload(job, "te"),
        Cluster(GPUS.get("h100"), 32),
    )
    assert est.bubble == (4 - 1) / (5 * 512)


def test_plan_cli_flag_and_override_spellings_agree(tmp_path, capsys):
    out_a, out_b = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["plan", RECIPE_72B, "plan.gpus=32", "plan.gpu=h100", f"plan.output={out_a}"]) == 0
    text = capsys.readouterr().out
    assert "layout: TP8 PP4×VP5 DP1 SP distopt no recompute" in text
    assert main(["plan", RECIPE_72B, "--", "--gpus", "32", "--gpu=h100", "--output", str(out_b)]) == 0
    assert json.loads(out_a.read_text()) == json.loads(out_b.read_text())


def test_plan_cli_errors_name_the_key(capsys):
    assert main(["plan", RECIPE_72B, "plan.gpu=h900"]) == 2
    err = capsys.readouterr().err
    assert "plan.gpu: unknown GPU 'h900'" in err and "Known: a100, b200, h100, h200" in err
    assert main(["plan", RECIPE_72B, "plan.gpus=30"]) == 2
    assert "plan.gpus=30 is not divisible by TP × PP = 32" in capsys.readouterr().err
    assert main(["plan", RECIPE_72B, "plan.gpu_memory=lots"]) == 2
    assert "plan.gpu_memory: cannot read 'lots'" in capsys.readouterr().err
    assert main(["plan", RECIPE_72B, "plan.gpus=24", "parallel.pipeline_model_parallel_size=3"]) == 2
    assert "layers not divisible by PP×VP (80 layers, PP×VP=3×5)" in capsys.readouterr().err
    assert main(["plan", RECIPE_72B, "plan.gpu=a100"]) == 2
    assert "no FP8 on this GPU (a100 has no FP8 tensor cores)" in capsys.readouterr().err


def test_a_layout_that_does_not_fit_exits_1(capsys):
    # TP8 PP4 on 40 GiB cards: ~39 GiB of state alone per GPU.
    assert main(["plan", RECIPE_72B, "plan.gpus=32", "plan.gpu_memory=40GiB"]) == 1
    assert "DOES NOT FIT: memory:" in capsys.readouterr().out


def test_parse_bytes():
    assert parse_bytes("80GiB") == 80 * 2**30
    assert parse_bytes("141GB") == 141 * 10**9
    assert parse_bytes("80") == 80 * 2**30
