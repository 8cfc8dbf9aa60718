"""Preprocess speed: ``tower-megatron preprocess`` vs Megatron-LM's own ``tools/preprocess_data.py``,
with the raw tokenizer on all cores as the limit.

    .venv/bin/python benchmarks/bench_preprocess.py --megatron-lm /path/to/Megatron-LM \
        [--mb 37] [--repeats 3] [--tokenizers hf,sp] [--workers 0]

Input: a JSONL corpus of long multilingual documents (``--mb`` MiB; each document 40-160 random
paragraphs of one language drawn from the embedded corpus, NFC-normalized and stripped, so our
cleaning changes nothing and both tools see the same text). Tokenizers: a 32k byte-level BPE HF
``tokenizers`` model trained here on the embedded corpus (saved as a transformers directory, as
Megatron's ``HuggingFaceTokenizer`` loads it) and the demo sentencepiece model.

Three programs, each a whole process timed from spawn to exit (start-up counts), run in turn
``--repeats`` times so load from other users of the machine hits all alike; medians are printed:

- ours: ``python -m tower_megatron preprocess RECIPE`` with the default filters (NFC, strip, exact
  dedup) and ``workers=--workers`` (0: one per core);
- Megatron-LM: ``python tools/preprocess_data.py --input X --output-prefix P --tokenizer-type
  HuggingFaceTokenizer|SentencePieceTokenizer --tokenizer-model M --workers <cores> --append-eod``,
  run from the checkout with ``PYTHONPATH=<checkout>`` as its users run it (its ``tools/`` are not in
  the megatron-core wheel). No shims were needed for a ``core_v0.19.0`` checkout: its imports
  (``megatron.training.arguments``, ``megatron.core.tokenizers``) load from the checkout;
- limit: one process that reads the JSONL and calls the tokenizer's own batch call on all cores
  (HF ``Tokenizer.encode_batch`` with ``TOKENIZERS_PARALLELISM=true``; sentencepiece
  ``encode(texts, num_threads=cores)``) and writes nothing.

Outputs are checked token for token (read back with Megatron's ``IndexedDataset``): Megatron-LM's
one file in input order against ours, which splits by language, per language in input order; the
limit's token count must equal theirs minus the EOD tokens. It prints; it does not assert.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

LIMIT_SCRIPT = r"""
import json, os, sys
kind, model, path = sys.argv[1:4]
cores = len(os.sched_getaffinity(0))  # what tokenizers (rayon) and our workers=0 use
with open(path, encoding="utf-8") as f:
    texts = [json.loads(line)["text"] for line in f]
n = 0
if kind == "hf":
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(model, "tokenizer.json"))
    for i in range(0, len(texts), 256):
        n += sum(len(e.ids) for e in tok.encode_batch(texts[i : i + 256], add_special_tokens=False))
else:
    import sentencepiece
    sp = sentencepiece.SentencePieceProcessor(model_file=model)
    for i in range(0, len(texts), 256):
        n += sum(map(len, sp.encode(texts[i : i + 256], num_threads=cores)))
print(n)
"""


def _paragraphs() -> dict[str, list[str]]:
    """Unique NFC paragraphs (> 20 characters) per language from every file of the embedded corpus."""
    import gzip

    import zstandard

    from tower_megatron.resources import resource_path

    corpus = resource_path("corpus")
    by_lang: dict[str, set[str]] = {}

    def add(lang: str, text: str) -> None:
        for p in text.split("\n"):
            p = unicodedata.normalize("NFC", p).strip()
            if len(p) > 20:
                by_lang.setdefault(lang, set()).add(p)

    with gzip.open(corpus / "mono/udhr.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            add(rec["lang"], rec["text"])
    with zstandard.open(corpus / "parallel/udhr.jsonl.zst", "rt", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            add(rec["src_lang"], rec["src"])
            add(rec["tgt_lang"], rec["tgt"])
    with gzip.open(corpus / "parallel/django_ui.tsv.gz", "rt", encoding="utf-8") as f:
        for line in f:
            tgt_lang, src, tgt = line.rstrip("\n").split("\t")
            add("en", src)
            add(tgt_lang, tgt)
    return {lang: sorted(ps) for lang, ps in sorted(by_lang.items())}


def make_corpus(path: Path, mib: float, seed: int = 0) -> list[str]:
    """Writes unique long documents (40-160 paragraphs of one language) up to ``mib`` MiB of
    JSONL; returns each document's language in file order."""
    pool = _paragraphs()
    langs = sorted(pool)
    rng = random.Random(seed)
    order: list[str] = []
    size, seen = 0, set()
    with open(path, "w", encoding="utf-8") as out:
        while size < mib * 2**20:
            lang = rng.choice(langs)
            text = "\n".join(rng.choices(pool[lang], k=rng.randint(40, 160)))
            if text in seen:
                continue
            seen.add(text)
            line = json.dumps({"text": text, "lang": lang}, ensure_ascii=False) + "\n"
            out.write(line)
            size += len(line.encode("utf-8"))
            order.append(lang)
    return order


def train_hf_tokenizer(out_dir: Path, vocab_size: int = 32_000) -> Path:
    """A byte-level BPE (GPT-2 / Qwen style, NFC normalizer) trained on the embedded corpus."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [p for ps in _paragraphs().values() for p in ps]
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(out_dir)
    return out_dir


def _become_subreaper() -> None:
    """Orphaned descendants (a forkserver and its workers) are re-parented to this process, so
    their CPU time reaches ``RUSAGE_CHILDREN`` once reaped (Linux ``PR_SET_CHILD_SUBREAPER``)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)


def _cpu_of_children() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> tuple[float, float, float, str]:
    """(wall seconds, CPU seconds of the whole process tree, 1-minute load average before the
    start, stdout) of one program."""
    load, cpu = os.getloadavg()[0], _cpu_of_children()
    start = time.perf_counter()
    with open(log, "w") as err:
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
    elapsed = time.perf_counter() - start
    while True:  # reap what the program left behind (orphans re-parented to us)
        try:
            os.wait()
        except ChildProcessError:
            break
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{log.read_text()[-3000:]}")
    return elapsed, _cpu_of_children() - cpu, load, proc.stdout


def _read(prefix: Path) -> list:
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    ds = IndexedDataset(str(prefix))
    return [ds[i].tolist() for i in range(len(ds))]


def check_outputs(ours_dir: Path, megatron_prefix: Path, order: list[str]) -> tuple[int, str]:
    """(tokens, verdict): Megatron-LM's documents split by language must equal ours, in order."""
    theirs = _read(megatron_prefix)
    if len(theirs) != len(order):
        return 0, f"DIFFERENT: Megatron-LM wrote {len(theirs)} documents, the input has {len(order)}"
    stats = json.loads((ours_dir / "stats.json").read_text())
    by_lang: dict[str, list] = {}
    for lang, doc in zip(order, theirs, strict=True):
        by_lang.setdefault(lang, []).append(doc)
    outputs = stats["sources"]["bench"]["outputs"]
    if sorted(outputs) != sorted(by_lang):
        return 0, f"DIFFERENT: languages {sorted(outputs)} vs {sorted(by_lang)}"
    for lang, docs in by_lang.items():
        mine = _read(ours_dir / outputs[lang]["train"]["prefix"])
        if mine != docs:
            return 0, f"DIFFERENT tokens for language {lang}"
    return sum(map(len, theirs)), "identical, token for token"


def run_tokenizer(name: str, model: Path, args: argparse.Namespace, tmp: Path, order: list[str]) -> None:
    cores = len(os.sched_getaffinity(0))  # Megatron-LM: --workers = cores
    data = tmp / "input.jsonl"
    py = sys.executable
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    tok_type = {"hf": "huggingface", "sp": "sentencepiece"}[name]
    recipe = tmp / f"ours_{name}.yaml"
    recipe.write_text(
        json.dumps(
            {
                "tokenizer": {"type": tok_type, "path": str(model)},
                "output_dir": str(tmp / f"ours_{name}"),
                "sources": [{"name": "bench", "kind": "mono", "files": [str(data)]}],
                "workers": args.workers,
                "progress": False,
            }
        )
    )  # JSON is YAML
    megatron_type = {"hf": "HuggingFaceTokenizer", "sp": "SentencePieceTokenizer"}[name]
    programs = {
        "ours": ([py, "-m", "tower_megatron", "preprocess", str(recipe)], REPO, env),
        "megatron-lm": (
            [py, "tools/preprocess_data.py", "--input", str(data), "--output-prefix",
             str(tmp / f"megatron_{name}"), "--tokenizer-type", megatron_type, "--tokenizer-model",
             str(model), "--workers", str(cores), "--append-eod", "--log-interval", "100000"],
            args.megatron_lm, dict(env, PYTHONPATH=str(args.megatron_lm)),
        ),  # fmt: skip
        "limit": ([py, "-c", LIMIT_SCRIPT, name, str(model), str(data)], tmp, env),
    }
    times: dict[str, list[float]] = {p: [] for p in programs}
    cpus: dict[str, list[float]] = {p: [] for p in programs}
    loads: list[float] = []
    limit_tokens = 0
    for r in range(args.repeats):
        for prog, (cmd, cwd, penv) in programs.items():
            elapsed, cpu, load, out = _timed(cmd, cwd, penv, tmp / f"{prog}_{name}.log")
            times[prog].append(elapsed)
            cpus[prog].append(cpu)
            loads.append(load)
            if prog == "limit":
                limit_tokens = int(out.split()[-1])
            print(f"  [{name}] run {r + 1} {prog:<12} {elapsed:7.2f} s, {cpu:6.2f} CPU s  (load {load:.1f})", flush=True)
    tokens, verdict = check_outputs(tmp / f"ours_{name}", tmp / f"megatron_{name}_text_document", order)
    label = {"hf": "HF tokenizers 32k byte-level BPE", "sp": "sentencepiece (demo model)"}[name]
    print(f"\n{label}: {tokens:,} tokens with EOD; outputs ours vs Megatron-LM: {verdict}")
    eod_free = tokens - len(order)
    print(f"  limit counted {limit_tokens:,} tokens without EOD ({'same' if limit_tokens == eod_free else 'DIFFERENT'})")
    # CPU seconds of the whole process tree beside wall time: on a machine shared with other jobs
    # a program's wall time also depends on how many runnable threads it has.
    for what, runs in (("wall", times), ("CPU", cpus)):
        med = {p: statistics.median(t) for p, t in runs.items()}
        for prog in programs:
            each = ", ".join(f"{t:.1f}" for t in runs[prog])
            print(f"  {what:<4} {prog:<12} median {med[prog]:6.2f} s = {tokens / med[prog] / 1e6:5.2f} M tokens/s  [{each}]")
        print(
            f"  {what}: ours is {med['megatron-lm'] / med['ours']:.2f}x Megatron-LM's speed; "
            f"ours / limit = {med['ours'] / med['limit']:.2f}x (target <= 1.10); "
            f"Megatron-LM / limit = {med['megatron-lm'] / med['limit']:.2f}x"
        )
    print(f"  1-minute load average at the starts: median {statistics.median(loads):.1f}, max {max(loads):.1f} "
          f"on {len(os.sched_getaffinity(0))} cores\n", flush=True)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megatron-lm", type=Path, default=os.environ.get("MEGATRON_LM"),
                        help="a Megatron-LM checkout (its tools/preprocess_data.py); env MEGATRON_LM")  # fmt: skip
    parser.add_argument("--mb", type=float, default=37.0, help="corpus size in MiB of JSONL")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokenizers", default="hf,sp", help="comma list of hf, sp")
    parser.add_argument("--workers", type=int, default=0, help="ours: workers= (0: one per core)")
    args = parser.parse_args()
    tool = (args.megatron_lm or Path("<unset>")) / "tools" / "preprocess_data.py"
    if not tool.is_file():
        print(
            f"Megatron-LM's preprocess tool not found at {tool}. Its tools/ are not in the megatron-core "
            "wheel: pass --megatron-lm PATH (or set MEGATRON_LM) to a Megatron-LM checkout, e.g.\n"
            "  git clone --depth 1 --branch core_v0.19.0 https://github.com/NVIDIA/Megatron-LM",
            file=sys.stderr,
        )
        return 2
    args.megatron_lm = args.megatron_lm.resolve()
    _become_subreaper()
    from tower_megatron.resources import DEMO_TOKENIZER, resolve

    with tempfile.TemporaryDirectory(prefix="bench_preprocess_") as tmp_name:
        tmp = Path(tmp_name)
        order = make_corpus(tmp / "input.jsonl", args.mb)
        size = (tmp / "input.jsonl").stat().st_size
        print(f"input: {len(order):,} documents, {size / 2**20:.1f} MiB JSONL, {len(set(order))} languages; "
              f"{len(os.sched_getaffinity(0))} CPU cores; Megatron-LM at {args.megatron_lm}", flush=True)  # fmt: skip
        models = {"hf": lambda: train_hf_tokenizer(tmp / "hf_tokenizer"), "sp": lambda: Path(resolve(DEMO_TOKENIZER))}
        for name in args.tokenizers.split(","):
            run_tokenizer(name, models[name](), args, tmp, order)
    return 0


if __name__ == "__main__":
    sys.exit(main())
