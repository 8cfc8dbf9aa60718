"""Our SFT stage's first-step loss equals ``transformers``' assistant-only loss on the same
conversations and the same tiny Gemma 2 model (converted from HF), packed and unpacked.

Our side is the user path: chat JSONL → ``preprocess`` (kind ``sft``) → ``run_training`` with
``train.stage=sft`` from the converted checkpoint. The independent side runs the HF model on each
conversation of the first global batch alone (split by ``segment_ids``, unpadded) and averages
``-log p(label)`` over the tokens whose label is an assistant token (``loss_mask``), as an
assistant-only ``labels=-100`` mask does in transformers/TRL.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from tiny_hf import load_hf, make_hf_checkpoint

from tower_megatron.models.convert import hf_to_megatron
from tower_megatron.testing import run_distributed
from tower_megatron.testing.tiny import SENTENCES, build_tiny_assets, tiny_job
from tower_megatron.training.callbacks.base import Callback

HF_CASE = dict(num_hidden_layers=2, vocab_size=8064, head_dim=16, sliding_window=16)  # no vocab padding
BATCH = 4


class FirstBatch(Callback):
    def __init__(self) -> None:
        self.rows: list[dict] = []

    def on_train_start(self, trainer) -> None:
        keys = ("tokens", "labels", "loss_mask", "segment_ids")
        items = [trainer.train_dataset[i] for i in range(trainer.job.train.global_batch_size)]
        self.rows = [{k: torch.as_tensor(it[k]).numpy() for k in keys} for it in items]


def _chats(path: Path) -> Path:
    en, pt, de = SENTENCES["en"], SENTENCES["pt"], SENTENCES["de"]
    records = [
        {"messages": [{"role": "user", "content": f"Translate to Portuguese: {en[i]}"},
                      {"role": "assistant", "content": pt[i]},
                      {"role": "user", "content": "And to German?"},
                      {"role": "assistant", "content": de[i % len(de)]}]}
        for i in range(6)
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def _ours(assets_dir: str, tokens: str, policy: str, run_dir: str, packing: bool) -> dict:
    from tower_megatron.resources import DEMO_TOKENIZER
    from tower_megatron.training.entry import run_training

    first = FirstBatch()
    job = tiny_job(
        build_tiny_assets(assets_dir), run_dir,
        f"model.hf_config={policy}", f"checkpoint.load={policy}", "checkpoint.load_optimizer=false",
        "train.stage=sft", "train.train_steps=1", f"train.micro_batch_size={BATCH // 2}",
        f"train.global_batch_size={BATCH}", "train.seq_length=96", f"data.tokenizer.path={DEMO_TOKENIZER}",
        f"data.paths=[{tokens}/*.train]", f"data.sft.packing={str(packing).lower()}",
    )  # fmt: skip
    [metrics] = [r for r in run_training(job, extra_callbacks=[first])["history"] if "train/loss" in r]
    return {"loss": metrics["train/loss"], "rows": first.rows}


def _transformers_loss(hf_dir: Path, rows: list[dict]) -> tuple[float, int]:
    model = load_hf(hf_dir)
    total, count = 0.0, 0
    for row in rows:
        for segment in sorted(set(row["segment_ids"].tolist()) - {0}):
            where = (row["segment_ids"] == segment).nonzero()[0]
            ids = torch.as_tensor(row["tokens"][where]).unsqueeze(0)
            labels = torch.as_tensor(row["labels"][where])
            mask = torch.as_tensor(row["loss_mask"][where]).bool()
            with torch.no_grad():
                logp = torch.log_softmax(model(ids).logits[0].double(), dim=-1)
            nll = -logp.gather(-1, labels.unsqueeze(-1))[:, 0]
            total, count = total + float(nll[mask].sum()), count + int(mask.sum())
    return total / count, count


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from tower_megatron.config.loader import load_config
    from tower_megatron.config.preprocess import PreprocessConfig, SourceConfig
    from tower_megatron.data.preprocess import run_preprocess
    from tower_megatron.resources import DEMO_TOKENIZER

    root = tmp_path_factory.mktemp("sft_parity")
    build_tiny_assets(root / "assets")
    cfg = load_config(PreprocessConfig, None, [f"output_dir={root / 'tokens'}", "workers=1", "progress=false",
                                               "valid_fraction=0.0", f"tokenizer.path={DEMO_TOKENIZER}"])  # fmt: skip
    cfg.sources = [SourceConfig(name="chats", kind="sft", files=[str(_chats(root / "chats.jsonl"))])]
    run_preprocess(cfg)
    hf = make_hf_checkpoint("gemma2_gqa_window", root / "hf", seed=0, **HF_CASE)
    hf_to_megatron(hf, root / "mcore", log=lambda _: None)
    return root, hf


@pytest.mark.parametrize("packing", [False, True], ids=["unpacked", "packed"])
def test_first_step_sft_loss_equals_transformers(setup, tmp_path, packing):
    root, hf = setup
    [ours] = run_distributed(
        _ours, world_size=1, assets_dir=str(root / "assets"), tokens=str(root / "tokens" / "chats"),
        policy=str(root / "mcore"), run_dir=str(tmp_path / "run"), packing=packing,
    )  # fmt: skip
    want, tokens = _transformers_loss(hf, ours["rows"])
    assert tokens > 20  # assistant tokens in the batch: the comparison covers real answers
    assert ours["loss"] == pytest.approx(want, rel=1e-5)
