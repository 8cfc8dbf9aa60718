"""Generation throughput: our Megatron backend vs ``transformers`` ``generate`` on the same model.

One tiny random Qwen 2 model (made here with ``transformers``; no downloads), a batch of 16
prompts of different lengths, greedy decoding of a fixed number of new tokens (no EOS stop on
either side), CPU, fp32. HF runs the way its users run it: left-padded batch with an attention
mask, ``model.generate(..., use_cache=True)`` (KV cache), default attention implementation.
Both run with the same number of torch threads (``--threads``, default 1: on a shared machine
oversubscribed OpenMP threads make every figure noise). One warm-up call each (the same call),
then ``--repeats`` timed runs each, interleaved so load changes hit both alike, in one process;
the medians count. Prints both tokens/s, the ratio and the target; also how many rows generated
identical tokens (batched fp32 kernels can differ in the last bits, so a late near-tie may flip a
token).

    .venv/bin/python benchmarks/bench_generation.py [--batch 16] [--new-tokens 64] [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_alignment import make_model

TARGET = 2.0  # ours / HF new tokens per second


def prompts(batch: int, vocab: int, seed: int = 0) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(16, 49, (batch,), generator=gen).tolist()
    return [torch.randint(4, vocab, (n,), generator=gen).tolist() for n in lengths]


class HFRunner:
    def __init__(self, model_dir: Path, batch: list[list[int]], new_tokens: int) -> None:
        import transformers

        self.model = transformers.AutoModelForCausalLM.from_pretrained(
            str(model_dir), dtype=torch.float32
        ).eval()
        longest = max(len(p) for p in batch)
        self.start = longest
        self.ids = torch.tensor([[0] * (longest - len(p)) + p for p in batch])
        mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in batch])
        self.kwargs = dict(
            attention_mask=mask,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            use_cache=True,
            pad_token_id=0,
        )

    def __call__(self) -> list[list[int]]:
        return self.model.generate(self.ids, **self.kwargs)[:, self.start :].tolist()


class OurRunner:
    def __init__(self, model_dir: Path, tokenizer: str, batch: list[list[int]], new_tokens: int) -> None:
        from tower_megatron.generation import SamplingParams, load_generator

        self.gen = load_generator(model_dir, device="cpu", tokenizer=tokenizer, eos_ids=[])
        self.batch, self.params = batch, SamplingParams(max_new_tokens=new_tokens)

    def __call__(self) -> list[list[int]]:
        return [o.token_ids for o in self.gen.generate(self.batch, self.params)]


def timed(run) -> tuple[float, list[list[int]]]:
    start = time.perf_counter()
    out = run()
    return time.perf_counter() - start, out


def main() -> None:
    import sentencepiece as spm

    from tower_megatron.resources import resolve

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs each; the median is reported")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # init_runtime keeps an explicit setting
    torch.set_num_threads(args.threads)
    tokenizer = str(resolve("resource:tokenizer/tower_demo_sp.model"))
    vocab = spm.SentencePieceProcessor(model_file=tokenizer).get_piece_size()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_model(Path(tmp) / "qwen2_tiny", vocab, args.hidden, args.layers, max_positions=1024)
        batch = prompts(args.batch, vocab)
        runners = {
            "hf": HFRunner(model_dir, batch, args.new_tokens),
            "ours": OurRunner(model_dir, tokenizer, batch, args.new_tokens),
        }
        times: dict[str, list[float]] = {"hf": [], "ours": []}
        ids = {name: run() for name, run in runners.items()}  # warm-up: the same call
        for _ in range(args.repeats):  # interleaved, so load changes hit both alike
            for name, run in runners.items():
                seconds, ids[name] = timed(run)
                times[name].append(seconds)
    total = args.batch * args.new_tokens
    hf_s, our_s = statistics.median(times["hf"]), statistics.median(times["ours"])
    hf_tps, our_tps = total / hf_s, total / our_s
    same = sum(a == b for a, b in zip(ids["hf"], ids["ours"], strict=True))
    print(
        f"model: Qwen 2, {args.layers} layers, hidden {args.hidden}, vocab {vocab}; batch {args.batch}, "
        f"prompt lengths {min(map(len, batch))}-{max(map(len, batch))}, {args.new_tokens} new tokens each, "
        f"greedy, fp32, {torch.get_num_threads()} threads"
    )
    runs = {k: ", ".join(f"{t:.2f}" for t in v) for k, v in times.items()}
    print(f"transformers generate (KV cache): {hf_tps:10.1f} new tokens/s (median of {runs['hf']} s)")
    print(f"tower-megatron (Megatron-Core):   {our_tps:10.1f} new tokens/s (median of {runs['ours']} s)")
    print(f"ratio ours/HF: {our_tps / hf_tps:.2f}x (target >= {TARGET:.1f}x)")
    print(f"rows with identical tokens: {same}/{args.batch}")


if __name__ == "__main__":
    main()
