"""Trains the demo sentencepiece tokenizer shipped in ``tower_megatron/resources/tokenizer/`` on the
embedded corpus (built by ``tools/build_corpus.py``).

    python tools/build_tokenizer.py [--vocab-size 8000]

Gemma-2-like layout so the same code paths serve the demo and the real model: ``<pad>``=0,
``<eos>``=1, ``<bos>``=2, ``<unk>``=3, chat turn markers as single pieces, byte fallback (no
unknown characters), digits split, and *identity* normalization without a dummy prefix so that
``decode(encode(text)) == text`` exactly (the preprocess round-trip tests rely on it).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
from pathlib import Path

import sentencepiece as spm
import zstandard

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tower_megatron" / "resources" / "corpus"
SPECIALS = ["<start_of_turn>", "<end_of_turn>", "<mask>"]


def _lines(path: Path) -> list[str]:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    elif path.suffix == ".zst":
        raw = zstandard.ZstdDecompressor().stream_reader(raw).read()
    return raw.decode("utf-8").splitlines()


def corpus_sentences(corpus: Path) -> list[str]:
    """Every paragraph of the corpus once (sentencepiece trains on one sentence per line)."""
    out: list[str] = []
    for path in sorted(corpus.rglob("*.jsonl*")):
        for line in _lines(path):
            rec = json.loads(line)
            texts = [rec.get("text"), rec.get("src"), rec.get("tgt")]
            texts += [m["content"] for m in rec.get("messages", [])]
            out += [p for t in texts if t for p in t.split("\n") if p.strip()]
    for path in sorted(corpus.rglob("*.tsv*")):
        for line in _lines(path):
            out += [c for c in line.split("\t")[1:] if c.strip()]
    return out


def train(corpus: Path, out_dir: Path, vocab_size: int) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt", delete=False) as f:
        f.write("\n".join(corpus_sentences(corpus)) + "\n")
    prefix = out_dir / "tower_demo_sp"
    spm.SentencePieceTrainer.train(
        input=f.name,
        model_prefix=str(prefix),
        model_type="bpe",
        vocab_size=vocab_size,
        character_coverage=0.9995,
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        allow_whitespace_only_pieces=True,
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        unk_piece="<unk>",
        # "\n" is never seen in training lines; as a user symbol it stays one token, not a byte.
        user_defined_symbols=[*SPECIALS, "\n", "\t"],
        num_threads=1,  # deterministic merges
        minloglevel=2,
    )
    Path(f.name).unlink()
    prefix.with_suffix(".vocab").unlink()  # the .model holds everything; keep the package small
    return prefix.with_suffix(".model")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--out", type=Path, default=ROOT / "tower_megatron" / "resources" / "tokenizer")
    parser.add_argument("--vocab-size", type=int, default=8000)
    args = parser.parse_args(argv)
    model = train(args.corpus, args.out, args.vocab_size)
    sp = spm.SentencePieceProcessor(model_file=str(model))
    print(f"{model} vocab={sp.get_piece_size()} size={model.stat().st_size}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
