"""Preprocess throughput (tokens/s): ``tower-megatron preprocess`` vs a baseline written like
Megatron-LM's ``tools/preprocess_data.py`` run one document at a time.

Same input (multilingual JSONL documents made of real paragraphs from the embedded corpus), same
tokenizer file, same ``IndexedDatasetBuilder``; one run each; prints both rates and their ratio.
Ours runs its normal pipeline (NFC normalization, exact dedup, worker processes, batching); the
baseline does json → ``MegatronTokenizer.tokenize`` → EOD → ``add_document`` per line.
Tokenizer: the demo sentencepiece model (Gemma 2's library), loaded by the baseline through
Megatron's ``MegatronTokenizer`` as training does.

    python benchmarks/bench_preprocess.py [--docs 40000] [--workers 0]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from tower_megatron.config.data import TokenizerConfig


def make_input(path: Path, n_docs: int, seed: int = 0) -> int:
    """Unique documents of 2–6 random paragraphs of one language (real text)."""
    from tower_megatron.resources import resource_path

    by_lang: dict[str, list[str]] = {}
    with gzip.open(resource_path("corpus/mono/udhr.jsonl.gz"), "rt", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            by_lang.setdefault(rec["lang"], []).extend(p for p in rec["text"].split("\n") if len(p) > 40)
    rng = random.Random(seed)
    langs = sorted(by_lang)
    seen: set[str] = set()  # unique, so dedup drops nothing and both sides tokenize the same text
    with open(path, "w", encoding="utf-8") as out:
        while len(seen) < n_docs:
            lang = rng.choice(langs)
            text = "\n".join(rng.sample(by_lang[lang], rng.randint(2, 6)))
            if text not in seen:
                seen.add(text)
                out.write(json.dumps({"text": text, "lang": lang}, ensure_ascii=False) + "\n")
    return path.stat().st_size


def baseline(input_path: Path, prefix: Path, tok_cfg: TokenizerConfig) -> tuple[int, int, float]:
    """Megatron-LM preprocess_data.py's Encoder.encode + builder loop, one document at a time."""
    from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder

    from tower_megatron.data.tokenizer import build_tokenizer

    start = time.perf_counter()
    tokenizer = build_tokenizer(tok_cfg)
    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=DType.optimal_dtype(tokenizer.vocab_size))
    docs = tokens = 0
    with open(input_path, encoding="utf-8") as fin:
        for line in fin:
            text = json.loads(line)["text"]
            doc_ids = tokenizer.tokenize(text)
            doc_ids.append(tokenizer.eod)
            builder.add_document(doc_ids, [len(doc_ids)])
            docs += 1
            tokens += len(doc_ids)
    builder.finalize(f"{prefix}.idx")
    return docs, tokens, time.perf_counter() - start


def ours(input_path: Path, out_dir: Path, tok_cfg: TokenizerConfig, workers: int) -> tuple[int, int, float]:
    from tower_megatron.config.loader import load_config
    from tower_megatron.config.preprocess import PreprocessConfig, SourceConfig
    from tower_megatron.data.preprocess import run_preprocess

    cfg = load_config(
        PreprocessConfig, None, [f"output_dir={out_dir}", f"workers={workers}", "progress=false"]
    )
    cfg.tokenizer = tok_cfg
    cfg.sources = [SourceConfig(name="bench", kind="mono", files=[str(input_path)])]
    start = time.perf_counter()
    stats = run_preprocess(cfg)
    elapsed = time.perf_counter() - start
    return stats["totals"]["documents"], stats["totals"]["tokens"], elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=40_000)
    parser.add_argument("--workers", type=int, default=0, help="ours: worker processes (0: one per core)")
    args = parser.parse_args()
    # Import time is not preprocessing time: load Megatron and its tokenizer libraries up front.
    import megatron.core.datasets.indexed_dataset
    import megatron.core.tokenizers.text.libraries  # noqa: F401

    from tower_megatron.resources import DEMO_TOKENIZER

    tok_cfg = TokenizerConfig(type="sentencepiece", path=DEMO_TOKENIZER)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        size = make_input(tmp / "input.jsonl", args.docs)
        print(f"input: {args.docs:,} documents, {size / 2**20:.1f} MiB JSONL; {os.cpu_count()} CPU cores")
        b_docs, b_tokens, b_time = baseline(tmp / "input.jsonl", tmp / "baseline", tok_cfg)
        o_docs, o_tokens, o_time = ours(tmp / "input.jsonl", tmp / "ours", tok_cfg, args.workers)
    b_rate, o_rate = b_tokens / b_time, o_tokens / o_time
    print(
        f"baseline (Megatron-LM style, one document at a time): {b_tokens:,} tokens in {b_time:.2f} s = {b_rate:,.0f} tokens/s"
    )
    print(
        f"tower-megatron preprocess:                            {o_tokens:,} tokens in {o_time:.2f} s = {o_rate:,.0f} tokens/s"
    )
    print(f"documents: {b_docs:,} vs {o_docs:,}; tokens differ by {o_tokens - b_tokens:+,}")
    print(f"speed-up: {o_rate / b_rate:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
