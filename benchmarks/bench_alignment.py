"""DPO step time: our preference stage vs TRL's ``DPOTrainer`` on the same tiny model and pairs.

A tiny random Qwen 2 (made here with ``transformers``; no downloads) is converted with our
converter; preference pairs (prompt, a sentence in the asked language, one in another) go through
``preprocess`` with the demo tokenizer. Ours: ``run_training`` with ``train.stage=dpo``
(``dpo.reference=model``: a resident frozen reference, as TRL's ``ref_model``), one global batch
= every pair, each step timed by the trainer (``train/step_time_s``). TRL: ``DPOTrainer`` on the
HF model with a copy as ``ref_model``, the SAME token ids (TRL's text tokenization bypassed), the
same batch (one device batch = every pair), same optimizer family (AdamW, same lr), each
``train()`` step timed by a callback. Both fp32, CPU, ``--threads`` torch threads, in one
process, one after the other (ours first); medians after ``--warmup`` steps.

Per-token throughput counts the real tokens of the pairs (prompt + chosen, prompt + rejected; no
padding) per step — the same number on both sides — divided by the median step time. Target: not
slower than TRL per token (ratio ≥ 1). It prints; it does not assert. SFT vs ``SFTTrainer``:
``benchmarks/bench_sft.py`` (built on the helpers here).

    .venv/bin/python benchmarks/bench_alignment.py [--pairs 16] [--steps 8] [--warmup 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from tower_megatron.training.callbacks.base import Callback


class Samples(Callback):
    """Every row of the trainer's own dataset (``keys`` of each item), read at train start."""

    def __init__(self, keys: tuple[str, ...] = ("tokens", "loss_mask")) -> None:
        self.keys = keys
        self.rows: list[dict] = []

    def on_train_start(self, trainer) -> None:
        for i in range(len(trainer.train_dataset)):
            item = trainer.train_dataset[i]
            self.rows.append({k: torch.as_tensor(item[k]) for k in self.keys})


def step_timer():
    """A ``transformers.TrainerCallback`` whose ``times`` are the wall seconds of each ``train()`` step."""
    import transformers

    class StepTimer(transformers.TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.mark = 0.0

        def on_step_begin(self, *a, **k) -> None:
            self.mark = time.perf_counter()

        def on_step_end(self, *a, **k) -> None:
            self.times.append(time.perf_counter() - self.mark)

    return StepTimer()


def _split(tokens: torch.Tensor, mask: torch.Tensor) -> tuple[list[int], list[int]]:
    where = torch.nonzero(mask).view(-1).tolist()
    ids = tokens.tolist()
    return ids[: where[0] + 1], ids[where[0] + 1 : where[-1] + 2]


def make_model(directory: Path, vocab: int, hidden: int, layers: int, max_positions: int = 256) -> Path:
    """The tiny random Qwen 2 every benchmark here uses (made by transformers; no downloads)."""
    import transformers

    config = transformers.Qwen2Config(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=3 * hidden, num_hidden_layers=layers,
        num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=max_positions,
        tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.Qwen2ForCausalLM(config).save_pretrained(str(directory))
    return directory


def parse_step_args(parser: argparse.ArgumentParser, seq: int) -> argparse.Namespace:
    """The step-time benchmarks' common options; applies ``--threads`` to this process."""
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--seq", type=int, default=seq)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    return args


def converted_model(root: Path, args: argparse.Namespace) -> Path:
    """The tiny HF model in ``root/hf`` (vocab 8064: the demo tokenizer's 8000, padded) and its
    Megatron conversion in ``root/mcore``; returns the HF directory."""
    from tower_megatron.models.convert import hf_to_megatron

    hf_dir = make_model(root / "hf", 8064, args.hidden, args.layers)
    hf_to_megatron(hf_dir, root / "mcore", log=lambda _: None)
    return hf_dir


def preprocess_records(root: Path, records: list[dict], kind: str, tokenizer: str) -> Path:
    """``records`` as JSONL through ``preprocess`` (source ``kind``, demo tokenizer); the token folder."""
    from tower_megatron.config.loader import load_config
    from tower_megatron.config.preprocess import PreprocessConfig, SourceConfig
    from tower_megatron.data.preprocess import run_preprocess

    source = root / f"{kind}.jsonl"
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    cfg = load_config(PreprocessConfig, None, [f"output_dir={root / 'tokens'}", "workers=1", "progress=false",
                                               "valid_fraction=0.0", f"tokenizer.path={tokenizer}"])  # fmt: skip
    cfg.sources = [SourceConfig(name=kind, kind=kind, files=[str(source)])]
    run_preprocess(cfg)
    return root / "tokens" / kind


def preprocess(root: Path, pairs: int, tokenizer: str) -> Path:
    from tower_megatron.testing.tiny import SENTENCES

    langs = list(SENTENCES)
    records = []
    for i in range(pairs):
        lang, other = langs[i % len(langs)], langs[(i + 1) % len(langs)]
        chosen = SENTENCES[lang][i % len(SENTENCES[lang])]
        rejected = SENTENCES[other][(i + 1) % len(SENTENCES[other])]
        records.append({"id": f"p{i}", "prompt": f"Write sentence {i} ({lang}).", "chosen": chosen, "rejected": rejected})
    return preprocess_records(root, records, "preference", tokenizer)


def run_ours(
    args, root: Path, ckpt: Path, tokenizer: str, batch: int, stage: list[str], samples: Samples
) -> list[float]:
    """``run_training`` from ``ckpt``: one global batch of ``batch`` rows, ``stage`` overrides (stage, data
    paths, stage options); the trainer's step times after ``args.warmup``, the rows land in ``samples``."""
    from tower_megatron.config import JobConfig, load_config
    from tower_megatron.training.entry import run_training

    job = load_config(JobConfig, None, [
        f"run.output_dir={root}", "run.name=ours", "run.device=cpu", f"model.hf_config={ckpt}",
        f"checkpoint.load={ckpt}", "checkpoint.load_optimizer=false", "checkpoint.save_at_end=false",
        f"train.train_steps={args.warmup + args.steps}", f"train.micro_batch_size={batch}",
        f"train.global_batch_size={batch}", f"train.seq_length={args.seq}", "train.precision=fp32",
        f"optimizer.lr={args.lr}", f"optimizer.min_lr={args.lr}", "scheduler.warmup_steps=0",
        "scheduler.decay_style=constant", "data.tokenizer.type=sentencepiece", f"data.tokenizer.path={tokenizer}",
        "logging.progress_bar=false", "logging.console=false", "logging.tensorboard=false", *stage,
    ])  # fmt: skip
    history = run_training(job, extra_callbacks=[samples])["history"]
    times = [r["train/step_time_s"] for r in history if "train/step_time_s" in r]
    return times[args.warmup :]


def run_trl(args, root: Path, hf_dir: Path, rows: list[dict]) -> list[float]:
    import datasets
    import transformers
    import trl

    load = lambda: transformers.AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32)
    cfg = trl.DPOConfig(
        output_dir=str(root / "trl"), beta=0.1, loss_type=["sigmoid"], per_device_train_batch_size=args.pairs,
        max_steps=args.warmup + args.steps, learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=0.0, report_to=[], use_cpu=True, max_length=None, logging_steps=1, save_strategy="no",
        dataloader_num_workers=0, seed=0,
    )  # fmt: skip
    timer = step_timer()
    unused = datasets.Dataset.from_list([{"prompt": "a", "chosen": " b", "rejected": " c"}])
    trainer = trl.DPOTrainer(model=load(), ref_model=load(), args=cfg, train_dataset=unused, callbacks=[timer],
                             processing_class=transformers.AutoTokenizer.from_pretrained(str(hf_dir)))  # fmt: skip
    # One epoch = one batch = every pair, as on our side (max_steps cycles the epochs).
    trainer.train_dataset = datasets.Dataset.from_list(rows)
    trainer.train()
    return timer.times[args.warmup :]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=16)
    args = parse_step_args(parser, seq=64)

    from tower_megatron.resources import DEMO_TOKENIZER

    tokenizer = str(DEMO_TOKENIZER)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        hf_dir = converted_model(root, args)
        tokens = preprocess(root, args.pairs, tokenizer)
        samples = Samples()
        dpo = ["train.stage=dpo", f"data.paths=[{tokens}/mul.train]", "dpo.reference=model",
               "dpo.ref_policy_kl_penalty=0.1"]  # fmt: skip
        ours = run_ours(args, root, root / "mcore", tokenizer, args.pairs, dpo, samples)
        rows = []
        for s in samples.rows[: args.pairs]:  # the first global batch: every pair once
            prompt, chosen = _split(s["tokens"][0], s["loss_mask"][0])
            _, rejected = _split(s["tokens"][1], s["loss_mask"][1])
            rows.append({"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected})
        theirs = run_trl(args, root, hf_dir, rows)
    unique = len({json.dumps(r) for r in rows})
    per_step = sum(2 * len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in rows)
    ours_s, theirs_s = statistics.median(ours), statistics.median(theirs)
    load = os.getloadavg()
    print(
        f"DPO, Qwen 2 {args.layers} layers hidden {args.hidden} vocab 8064, {len(rows)} pairs per step ({unique} distinct) "
        f"({per_step} real tokens), fp32, {args.threads} threads; {args.warmup} warm-up + {args.steps} timed "
        f"steps; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
    print(f"  TRL DPOTrainer        median {theirs_s * 1e3:8.1f} ms/step  {per_step / theirs_s:9.1f} tokens/s")
    print(f"  tower-megatron dpo    median {ours_s * 1e3:8.1f} ms/step  {per_step / ours_s:9.1f} tokens/s")
    print(f"  ratio ours/TRL tokens/s: {theirs_s / ours_s:.2f}x (target >= 1.0x)")


if __name__ == "__main__":
    main()
