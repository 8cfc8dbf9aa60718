"""GRPO rollout throughput: our stage's path vs ``transformers`` ``generate`` + the same rewards.

One rollout = ``--prompts`` prompts spread over ``configs/grpo/tiny_cpu.yaml``'s four embedded
prompt sets (toy IFEval, translation, IFEval, math: every reward type but code), rendered through the Gemma chat format with the demo tokenizer, each sampled
``--group`` times (temperature 1, ``--new-tokens`` new tokens, no EOS stop on either side so both
produce the same number of tokens), then scored by the verifiable rewards.

- ours: what ``GRPOStage.train_step`` runs — :class:`MegatronGenerator` (our KV-cache decode loop
  over Megatron-Core modules; ``load_generator`` on the converted model, the same class GRPO wraps
  around the live policy with ``from_model``) + :class:`RewardPool` (worker processes);
- HF: ``model.generate(do_sample=True, use_cache=True)`` on the left-padded batch with an
  attention mask — the way HF users (and TRL's GRPOTrainer without vLLM) generate — + the same
  ``RewardPool`` call.

Same tiny random Qwen 2 model (made here; no downloads), same prompts, CPU, fp32, ``--threads``
torch threads on both sides. One warm-up rollout each, then ``--repeats`` timed rollouts each,
interleaved; medians count. Prints tokens/s (generated tokens per second of generation + rewards),
the ratio and the target (≥ 3×), and the time split per phase. It prints; it does not assert.

    .venv/bin/python benchmarks/bench_rollout.py [--prompts 8] [--group 4] [--new-tokens 48] [--threads 1]
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

TARGET = 3.0  # ours / HF rollout tokens per second
# configs/grpo/tiny_cpu.yaml's prompt sets: toy IFEval, translation (chrF × language), IFEval, math
PROMPT_FILES = [f"resource:corpus/grpo/{name}.jsonl" for name in ("toy_letter_e", "translation", "ifeval", "math")]


class Rollout:
    """Generation then rewards; keeps the time of each phase."""

    def __init__(self, generate, pool, specs: list[dict], tokenizer) -> None:
        self.generate, self.pool, self.specs, self.tokenizer = generate, pool, specs, tokenizer

    def __call__(self) -> dict[str, float]:
        start = time.perf_counter()
        ids = self.generate()
        mid = time.perf_counter()
        texts = [self.tokenizer.detokenize(row) for row in ids]
        rewards = self.pool.score_batch(texts, self.specs).values
        end = time.perf_counter()
        return {"generate": mid - start, "rewards": end - mid, "total": end - start,
                "tokens": sum(len(r) for r in ids), "mean_reward": sum(rewards) / len(rewards)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=4, help="samples per prompt")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reward-workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)

    import transformers

    from tower_megatron.alignment.prompts import load_prompts
    from tower_megatron.config.data import TokenizerConfig
    from tower_megatron.data.chat_format import encode_chat
    from tower_megatron.data.tokenizer import build_tokenizer
    from tower_megatron.generation import SamplingParams, load_generator
    from tower_megatron.resources import DEMO_TOKENIZER, resolve
    from tower_megatron.rewards.pool import RewardPool

    tokenizer = build_tokenizer(TokenizerConfig(type="sentencepiece", path=str(DEMO_TOKENIZER)))
    every = load_prompts([str(resolve(f)) for f in PROMPT_FILES])
    prompts = every[:: max(1, len(every) // args.prompts)][: args.prompts]  # spread over the four sets
    encoded = [encode_chat(list(p.messages), tokenizer, "gemma") for p in prompts]
    batch = [ids for ids in encoded for _ in range(args.group)]
    specs = [p.reward for p in prompts for _ in range(args.group)]
    n = args.new_tokens
    pool = RewardPool(args.reward_workers, 10.0)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = make_model(Path(tmp) / "qwen2_tiny", tokenizer.vocab_size, args.hidden, args.layers, max_positions=1024)
            ours_gen = load_generator(model_dir, device="cpu", tokenizer=str(DEMO_TOKENIZER), eos_ids=[])
            seed = iter(range(1_000_000))

            def ours() -> list[list[int]]:
                params = SamplingParams(max_new_tokens=n, temperature=1.0, seed=next(seed))
                return [o.token_ids for o in ours_gen.generate(batch, params)]

            hf = transformers.AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
            longest = max(map(len, batch))
            ids = torch.tensor([[0] * (longest - len(p)) + p for p in batch])
            mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in batch])

            def theirs() -> list[list[int]]:
                out = hf.generate(ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                                  max_new_tokens=n, min_new_tokens=n, use_cache=True, pad_token_id=0)  # fmt: skip
                return out[:, longest:].tolist()

            runs = {"hf": Rollout(theirs, pool, specs, tokenizer), "ours": Rollout(ours, pool, specs, tokenizer)}
            results: dict[str, list[dict]] = {k: [] for k in runs}
            for run in runs.values():
                run()  # warm-up
            for _ in range(args.repeats):
                for name, run in runs.items():
                    results[name].append(run())
    finally:
        pool.close()
    med = {k: {f: statistics.median(r[f] for r in v) for f in ("generate", "rewards", "total")} for k, v in results.items()}
    tokens = results["ours"][0]["tokens"]
    assert tokens == results["hf"][0]["tokens"] == len(batch) * n
    load = os.getloadavg()
    print(
        f"model: Qwen 2 {args.layers} layers, hidden {args.hidden}, vocab {tokenizer.vocab_size}; "
        f"{args.prompts} prompts × {args.group} samples, prompt lengths {min(map(len, encoded))}-"
        f"{max(map(len, encoded))}, {n} new tokens each, temperature 1, fp32, {args.threads} threads, "
        f"{args.reward_workers} reward workers; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
    for name, label in (("hf", "transformers generate + rewards"), ("ours", "tower-megatron rollout      ")):
        m = med[name]
        print(f"{label}: {tokens / m['total']:9.1f} tokens/s   generate {m['generate']:.2f} s, "
              f"rewards {m['rewards']:.2f} s (medians of {args.repeats})")  # fmt: skip
    ratio = med["hf"]["total"] / med["ours"]["total"]
    print(f"ratio ours/HF: {ratio:.2f}x (target >= {TARGET:.1f}x); generation only: "
          f"{med['hf']['generate'] / med['ours']['generate']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
