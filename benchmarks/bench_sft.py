"""SFT step time: our SFT stage vs TRL's ``SFTTrainer`` on the same tiny model and conversations.

The tiny random Qwen 2 of ``bench_alignment.py`` (made with ``transformers``, converted with our
converter); two-turn translation chats from the tiny multilingual sentences go through
``preprocess`` (kind ``sft``, demo tokenizer). Ours: ``run_training`` with ``train.stage=sft`` and
``data.sft.packing=false`` (one conversation per row, so both sides see the same rows), one global
batch = every chat, each step timed by the trainer (``train/step_time_s``). TRL: ``SFTTrainer`` on
the HF model fed the SAME token ids as a pre-tokenized dataset (``input_ids`` + ``assistant_masks``,
which TRL folds into ``labels=-100`` outside the assistant turns without re-tokenizing), one device
batch = every chat, same optimizer family (AdamW, same constant lr, no weight decay), each
``train()`` step timed by a callback. Both fp32, CPU, ``--threads`` torch threads, in one process,
one after the other (ours first); medians after ``--warmup`` steps.

Per-token throughput counts the real tokens of the chats (no padding) per step — the same number
on both sides — divided by the median step time. Target: not slower than TRL per token (ratio ≥ 1).
It prints; it does not assert.

    .venv/bin/python benchmarks/bench_sft.py [--chats 16] [--steps 8] [--warmup 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_alignment import (
    Samples,
    converted_model,
    parse_step_args,
    preprocess_records,
    run_ours,
    step_timer,
)


def chats(count: int) -> list[dict]:
    """Two-turn translation chats over every language pair of the tiny sentences (assistant answers
    in two languages, so the loss mask has two spans per chat)."""
    from tower_megatron.testing.tiny import SENTENCES

    langs = list(SENTENCES)
    records = []
    for i in range(count):
        src, first, second = (langs[(i + k) % len(langs)] for k in range(3))
        text = {lang: SENTENCES[lang][i % len(SENTENCES[lang])] for lang in (src, first, second)}
        records.append({"id": f"c{i}", "messages": [
            {"role": "user", "content": f"Translate to {first}: {text[src]}"},
            {"role": "assistant", "content": text[first]},
            {"role": "user", "content": f"And to {second}?"},
            {"role": "assistant", "content": text[second]},
        ]})  # fmt: skip
    return records


def trl_row(sample: dict) -> dict:
    """One unpacked row of our dataset as TRL's pre-tokenized columns. Our ``loss_mask[i]`` marks
    ``labels[i] = tokens[i + 1]``; TRL's ``assistant_masks[j]`` marks ``input_ids[j]`` as a target
    (the model shifts), so the mask moves one position right and the last label closes the ids."""
    where = torch.nonzero(sample["segment_ids"] != 0).view(-1)
    tokens, labels, mask = (sample[k][where].tolist() for k in ("tokens", "labels", "loss_mask"))
    return {"input_ids": tokens + labels[-1:], "assistant_masks": [0] + [int(m) for m in mask]}


def run_trl(args, root: Path, hf_dir: Path, rows: list[dict]) -> tuple[list[float], float]:
    """TRL's step times after ``args.warmup`` and its first-step loss."""
    import datasets
    import transformers
    import trl

    model = transformers.AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32)
    cfg = trl.SFTConfig(
        output_dir=str(root / "trl"), per_device_train_batch_size=len(rows), max_steps=args.warmup + args.steps,
        learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, report_to=[],
        use_cpu=True, max_length=None, packing=False, logging_steps=1, save_strategy="no",
        dataloader_num_workers=0, seed=0, dataset_num_proc=None,
    )  # fmt: skip
    timer = step_timer()
    trainer = trl.SFTTrainer(model=model, args=cfg, train_dataset=datasets.Dataset.from_list(rows),
                             processing_class=transformers.AutoTokenizer.from_pretrained(str(hf_dir)),
                             callbacks=[timer])  # fmt: skip
    # The assistant-only mask reached TRL's labels: same targets as ours (checked, not timed).
    counted = [sum(x != -100 for x in lab) for lab in trainer.train_dataset["labels"]]
    if counted != [sum(r["assistant_masks"]) for r in rows]:
        raise RuntimeError(f"TRL's labels do not keep our assistant targets: {counted}")
    trainer.train()  # one epoch = one batch = every chat, as on our side (max_steps cycles the epochs)
    first_loss = next(r["loss"] for r in trainer.state.log_history if "loss" in r)
    return timer.times[args.warmup :], first_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chats", type=int, default=16)
    args = parse_step_args(parser, seq=128)

    from tower_megatron.resources import DEMO_TOKENIZER

    tokenizer = str(DEMO_TOKENIZER)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        hf_dir = converted_model(root, args)
        tokens = preprocess_records(root, chats(args.chats), "sft", tokenizer)
        samples = Samples(("tokens", "labels", "loss_mask", "segment_ids"))
        sft = ["train.stage=sft", f"data.paths=[{tokens}/*.train]", "data.sft.packing=false"]
        ours = run_ours(args, root, root / "mcore", tokenizer, args.chats, sft, samples)
        rows = [trl_row(s) for s in samples.rows[: args.chats]]  # the first global batch: every chat once
        theirs, trl_loss = run_trl(args, root, hf_dir, rows)
        logged = (json.loads(line) for line in (root / "ours" / "metrics.jsonl").read_text().splitlines())
        our_loss = next(r["train/loss"] for r in logged if "train/loss" in r)
    per_step = sum(len(r["input_ids"]) for r in rows)
    targets = sum(sum(r["assistant_masks"]) for r in rows)
    ours_s, theirs_s = statistics.median(ours), statistics.median(theirs)
    load = os.getloadavg()
    print(
        f"SFT, Qwen 2 {args.layers} layers hidden {args.hidden} vocab 8064, {len(rows)} chats per step "
        f"({per_step} real tokens, {targets} assistant targets), unpacked, fp32, {args.threads} threads; "
        f"{args.warmup} warm-up + {args.steps} timed steps; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
    print(f"  TRL SFTTrainer        median {theirs_s * 1e3:8.1f} ms/step  {per_step / theirs_s:9.1f} tokens/s")
    print(f"  tower-megatron sft    median {ours_s * 1e3:8.1f} ms/step  {per_step / ours_s:9.1f} tokens/s")
    # Same work on both sides: the first step's assistant-only loss agrees (same weights, ids, targets).
    print(f"  first-step loss: TRL {trl_loss:.6f}, ours {our_loss:.6f}")
    print(f"  ratio ours/TRL tokens/s: {theirs_s / ours_s:.2f}x (target >= 1.0x)")


if __name__ == "__main__":
    main()
