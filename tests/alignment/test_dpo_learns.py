"""DPO and WPO teach a tiny random model a preference it must read from the prompt, measured on
HELD-OUT pairs by the trainer's own evaluation (``valid/rewards/accuracy/<name>``).

The task: a request written in English, Portuguese or German ("Write one sentence.") —
chosen: a real sentence in the request's language, rejected: one in another of the three (the
tiny test corpus). Every language is chosen as often as it is rejected, so a model that ignores
the prompt stays at chance (0.5); held-out pairs are new (prompt, chosen, rejected) combinations,
split by id at preprocessing. Data goes through the real path: JSONL → ``tower-megatron preprocess`` (gemma chat
format, demo tokenizer) → preference token files → the preference stage.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest

from tower_megatron.testing import run_distributed
from tower_megatron.testing.tiny import SENTENCES

PROMPTS = {
    "en": ("Write one sentence.", "Say something, please.", "Tell me something."),
    "pt": ("Escreve uma frase.", "Diz alguma coisa, por favor.", "Conta-me alguma coisa."),
    "de": ("Schreib einen Satz.", "Sag bitte etwas.", "Erzähl mir etwas."),
}


def _records() -> list[dict]:
    records = []
    for target, other in itertools.permutations(PROMPTS, 2):
        pairs = itertools.product(SENTENCES[target][:4], SENTENCES[other][:4])
        for i, (chosen, rejected) in enumerate(pairs):
            prompt = PROMPTS[target][i % 3]
            records.append(
                {"id": f"{target}-{other}-{i}", "prompt": prompt, "chosen": chosen, "rejected": rejected}
            )
    return records


def _preprocess(root: Path) -> Path:
    from tower_megatron.config.loader import load_config
    from tower_megatron.config.preprocess import PreprocessConfig, SourceConfig
    from tower_megatron.data.preprocess import run_preprocess
    from tower_megatron.resources import DEMO_TOKENIZER

    source = root / "pairs.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in _records()), encoding="utf-8")
    out = root / "tokens"
    cfg = load_config(PreprocessConfig, None, [f"output_dir={out}", "workers=1", "progress=false",
                                               "valid_fraction=0.25", f"tokenizer.path={DEMO_TOKENIZER}"])  # fmt: skip
    cfg.sources = [SourceConfig(name="lang", kind="preference", files=[str(source)])]
    run_preprocess(cfg)
    return out / "lang"


def _train(tokens: str, run_dir: str, loss: str, reference: str) -> list[dict]:
    from tower_megatron.config import JobConfig, load_config
    from tower_megatron.resources import DEMO_TOKENIZER
    from tower_megatron.training.entry import run_training

    run = Path(run_dir)
    job = load_config(JobConfig, None, [
        f"run.output_dir={run.parent}", f"run.name={run.name}", "run.device=cpu", "run.seed=7",
        "model.num_layers=2", "model.hidden_size=64", "model.num_attention_heads=4",
        "model.max_position_embeddings=64",
        f"train.stage={loss}", "train.train_steps=24", "train.micro_batch_size=8", "train.global_batch_size=16",
        "train.seq_length=48", "train.precision=fp32", "train.eval_interval=8", "train.eval_steps=2",
        "optimizer.lr=1e-3", "optimizer.min_lr=1e-3", "optimizer.weight_decay=0.0", "scheduler.warmup_steps=0", "scheduler.decay_style=constant",
        "data.tokenizer.type=sentencepiece", f"data.tokenizer.path={DEMO_TOKENIZER}",
        f"data.paths=[{tokens}/mul.train]", f"data.valid_paths={{heldout: {tokens}/mul.valid}}",
        f"dpo.reference={reference}", "dpo.ref_policy_kl_penalty=0.1",
        "logging.log_interval=1", "logging.progress_bar=false", "logging.console=false",
        "logging.tensorboard=false", "checkpoint.save_at_end=false",
    ])  # fmt: skip
    return run_training(job)["history"]


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> Path:
    return _preprocess(tmp_path_factory.mktemp("dpo_data"))


@pytest.mark.slow
# Both reference modes, one each: precomputed tables (train and held-out sets) and a resident copy.
@pytest.mark.parametrize(("loss", "reference"), [("dpo", "precompute"), ("wpo", "model")])
def test_preference_training_generalizes_to_held_out_pairs(tokens, tmp_path, loss, reference):
    assert len((tokens.parent.parent / "pairs.jsonl").read_text().splitlines()) == 96
    [history] = run_distributed(
        _train, world_size=1, tokens=str(tokens), run_dir=str(tmp_path / loss), loss=loss, reference=reference
    )
    lines = [json.loads(line) for line in (tmp_path / loss / "metrics.jsonl").read_text().splitlines()]
    curve = [r["valid/rewards/accuracy/heldout"] for r in lines if "valid/rewards/accuracy/heldout" in r]
    assert curve == [
        r["valid/rewards/accuracy/heldout"] for r in history if "valid/rewards/accuracy/heldout" in r
    ]
    assert len(curve) == 3, curve  # steps 8, 16, 24
    assert curve[-1] >= 0.9, curve  # chance: 0.5 (each language is chosen and rejected equally)
    train_loss = [r["train/loss"] for r in lines if "train/loss" in r]
    assert len(train_loss) == 24
    # Step 1 scores the pairs before any update: policy == reference, every margin 0, so the
    # DPO loss is log 2 per pair and WPO's is w·log 2 (the logged weight is the pairs' mean w).
    first_weight = lines[0].get("train/wpo_weight", 1.0)
    assert train_loss[0] == pytest.approx(math.log(2) * first_weight, rel=1e-5)
    held_out = [r["valid/loss/heldout"] for r in lines if "valid/loss/heldout" in r]
    assert held_out[-1] < 0.5 * math.log(2), held_out
    if reference == "precompute":  # one table per set, written before step 1
        assert {p.name for p in (tmp_path / loss).glob("reference_logps_*.npy")} == {
            "reference_logps_train.npy",
            "reference_logps_valid_heldout.npy",
        }
    if loss == "wpo":
        weights = [r["train/wpo_weight"] for r in lines if "train/wpo_weight" in r]
        assert weights and all(0 < w <= 1 for w in weights)
