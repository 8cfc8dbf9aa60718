"""The preprocess fast paths give what the slow, obvious paths give: token files byte-identical to
Megatron's ``IndexedDatasetBuilder``, the HF tokenizer's EOD and vocabulary size as Megatron's
``HuggingFaceTokenizer`` reports them, long documents split across workers into the same files, and
a CPT job that never imports torch, Megatron-Core or transformers (their import was most of the
start-up). Speed itself is measured by ``benchmarks/bench_preprocess.py``, not here."""

from __future__ import annotations

import filecmp
import json
import subprocess
import sys

import numpy as np
import pytest
from data_helpers import make_cfg, read_docs, write_lines

from tower_megatron.data.preprocess import run_preprocess


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_token_file_equals_indexed_dataset_builder(tmp_path, dtype):
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    from tower_megatron.data.writer import TokenFile

    rng = np.random.default_rng(1)
    high = 65_000 if dtype == np.uint16 else 150_000
    docs = [rng.integers(0, high, size=n) for n in (7, 1, 300, 2, 41, 9)]
    ref = IndexedDatasetBuilder(str(tmp_path / "ref.bin"), dtype=dtype)
    for doc in docs:
        ref.add_document(doc, [len(doc)])
    ref.finalize(str(tmp_path / "ref.idx"))
    ours = TokenFile(tmp_path / "ours", dtype)
    for part in (docs[:1], docs[1:4], docs[4:]):  # appended in chunks, as the writer does
        ours.add(np.concatenate(part), [len(d) for d in part])
    ours.finalize()
    for ext in ("bin", "idx"):
        assert filecmp.cmp(tmp_path / f"ref.{ext}", tmp_path / f"ours.{ext}", shallow=False)
    assert [d.tolist() for d in read_docs(tmp_path / "ours")] == [d.tolist() for d in docs]

    empty_ref = IndexedDatasetBuilder(str(tmp_path / "empty_ref.bin"), dtype=dtype)
    empty_ref.finalize(str(tmp_path / "empty_ref.idx"))
    TokenFile(tmp_path / "empty", dtype).finalize()
    assert filecmp.cmp(tmp_path / "empty_ref.idx", tmp_path / "empty.idx", shallow=False)


def test_token_dtype_is_megatrons_choice():
    from megatron.core.datasets.indexed_dataset import DType

    from tower_megatron.data.writer import token_dtype

    for vocab in (256, 8000, 32_000, 65_499, 65_500, 151_665, 256_000):
        assert token_dtype(vocab) is DType.optimal_dtype(vocab)


def _qwen_like_tokenizer(path, special_map: bool = False):
    """A byte-level BPE with Qwen-style added special tokens, saved as a transformers directory."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.train_from_iterator(
        ["Olá mundo, bom dia.", "Hello world, good morning.", "Hallo Welt, guten Morgen."] * 20,
        trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )  # fmt: skip
    fast = PreTrainedTokenizerFast(tokenizer_object=hf, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    fast.save_pretrained(path)
    if special_map:  # another place transformers reads special tokens from: Megatron decides
        (path / "special_tokens_map.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
    return path


@pytest.mark.parametrize("special_map", [False, True])
def test_hf_eod_and_vocab_size_match_megatron(tmp_path, special_map):
    from tower_megatron.config.data import TokenizerConfig
    from tower_megatron.data.tokenizer import _hf_eod_and_vocab_size, build_tokenizer, eod_and_vocab_size

    path = _qwen_like_tokenizer(tmp_path / "tok", special_map)
    cfg = TokenizerConfig(type="huggingface", path=str(path))
    ref = build_tokenizer(cfg)
    assert eod_and_vocab_size(cfg) == (ref.eod, ref.vocab_size)
    # Read from the files for the plain directory; Megatron's answer when a second file has a say.
    assert (_hf_eod_and_vocab_size(path) is None) == special_map


def test_long_documents_split_across_workers(tmp_path, monkeypatch):
    """Long documents: tasks end at TASK_BYTES, not only at batch_size records (512 long documents
    made a few huge tasks that one worker finished alone), and two workers write the same files as
    one process."""
    import gzip

    from tower_megatron.data import preprocess
    from tower_megatron.resources import resource_path

    with gzip.open(resource_path("corpus/mono/udhr.jsonl.gz"), "rt", encoding="utf-8") as f:
        texts: dict[str, list[str]] = {}
        for line in f:
            rec = json.loads(line)
            texts.setdefault(rec["lang"], []).append(rec["text"])
    docs = [{"text": "\n".join(ts[i:] + ts[:i]), "lang": lang} for lang, ts in sorted(texts.items())[:3]
            for i in range(4)]  # fmt: skip  (12 documents of 5-20 KB)
    path = write_lines(tmp_path / "long.jsonl", docs)
    monkeypatch.setattr(preprocess, "TASK_BYTES", 30_000)
    tasks = []
    real_tasks = preprocess._tasks
    monkeypatch.setattr(preprocess, "_tasks", lambda *a: (tasks.append(len(t[3])) or t for t in real_tasks(*a)))
    sources = [{"name": "long", "kind": "mono", "files": [str(path)]}]
    one = run_preprocess(make_cfg(tmp_path / "one", sources))
    assert sum(tasks) == len(docs) and len(tasks) >= path.stat().st_size // 30_000 >= 3
    run_preprocess(make_cfg(tmp_path / "two", sources, workers=2))
    files = [p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.[bi][id][nx]")]
    assert len(files) == 6 and one["totals"]["documents"] == len(docs)
    assert all(filecmp.cmp(tmp_path / "one" / f, tmp_path / "two" / f, shallow=False) for f in files)


def test_cpt_job_imports_no_torch(tmp_path):
    """A CPT preprocess job (HF tokenizer, two workers) runs without importing torch, Megatron-Core
    or transformers in the reading process."""
    path = _qwen_like_tokenizer(tmp_path / "tok")
    data = write_lines(tmp_path / "in.jsonl", [{"text": f"Hello world {i}", "lang": "en"} for i in range(50)])
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({
        "tokenizer": {"type": "huggingface", "path": str(path)}, "output_dir": str(tmp_path / "out"),
        "sources": [{"name": "s", "kind": "mono", "files": [str(data)]}], "workers": 2, "progress": False,
    }))  # fmt: skip
    script = (
        "import sys; from tower_megatron.config import load_config;"
        "from tower_megatron.config.preprocess import PreprocessConfig;"
        "from tower_megatron.data.preprocess import run_preprocess;"
        f"stats = run_preprocess(load_config(PreprocessConfig, {str(recipe)!r}, []));"
        "print(stats['totals']['documents'], sorted(m for m in ('torch', 'megatron', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[-2] == "50 []"
