"""Preprocessed documents read back with Megatron's IndexedDataset decode to the same text."""

from __future__ import annotations

import filecmp
import json

import pytest
from data_helpers import make_cfg, read_docs, tokenizer_cfg, write_lines

from tower_megatron.cli import main as cli_main
from tower_megatron.data.preprocess import run_preprocess
from tower_megatron.data.templates import gemma_chat

MONO = [
    {"text": "Todos os seres humanos nascem livres e iguais em dignidade e em direitos.", "lang": "pt"},
    {
        "text": "Toda a pessoa tem direito à vida, à liberdade e à segurança pessoal.\nSegunda linha.",
        "lang": "pt",
    },
    {"text": "Ninguém será mantido em escravatura ou em servidão.  Dois espaços, emoji 🦜.", "lang": "pt"},
]
PAIRS = [
    (
        "All human beings are born free and equal in dignity and rights.",
        "Todos os seres humanos nascem livres e iguais.",
    ),
    (
        "Everyone has the right to life, liberty and security of person.",
        "Toda a pessoa tem direito à vida e à liberdade.",
    ),
]
CHAT = [
    {"lang": "de", "messages": [{"role": "user", "content": "Übersetze: Hello"}, {"role": "assistant", "content": "Hallo"}]},
    {"lang": "de", "messages": [{"role": "system", "content": "Sei kurz."}, {"role": "user", "content": "2+2?"},
                                {"role": "assistant", "content": "4"}]},
]  # fmt: skip


@pytest.fixture
def sources(tmp_path):
    mono = write_lines(tmp_path / "in" / "mono.jsonl.gz", MONO)
    par = write_lines(tmp_path / "in" / "pairs.tsv.zst", ["\t".join(p) for p in PAIRS])
    chat = write_lines(tmp_path / "in" / "chat.jsonl", CHAT)
    return [
        {"name": "mono", "kind": "mono", "files": [str(mono)]},
        {"name": "pairs", "kind": "parallel", "files": [str(par)], "src_lang": "en", "tgt_lang": "pt",
         "templates": ["plain"]},
        {"name": "chat", "kind": "instruction", "files": [str(chat)]},
    ]  # fmt: skip


def test_round_trip_text_and_token_counts(tmp_path, sources, megatron_tokenizer):
    out = tmp_path / "out"
    stats = run_preprocess(make_cfg(out, sources))
    tok = megatron_tokenizer

    def texts(prefix):
        docs = read_docs(out / prefix)
        assert all(int(d[-1]) == tok.eod for d in docs)  # EOD appended to every document
        return [tok.detokenize(d[:-1].tolist()) for d in docs]

    assert texts("mono/pt.train") == [m["text"] for m in MONO]
    assert texts("pairs/en-pt.train") == [f"English: {s}\nPortuguese: {t}" for s, t in PAIRS]
    assert texts("pairs/pt-en.train") == [f"Portuguese: {t}\nEnglish: {s}" for s, t in PAIRS]
    assert texts("chat/de.train") == [gemma_chat(c["messages"]) for c in CHAT]
    assert texts("chat/de.train")[1].startswith("<start_of_turn>user\nSei kurz.\n\n2+2?<end_of_turn>\n")

    # stats.json on disk == returned stats; token counts are the sums of the sequence lengths.
    assert json.loads((out / "stats.json").read_text()) == stats
    total = 0
    for name, src in stats["sources"].items():
        for tag, splits in src["outputs"].items():
            for split, entry in splits.items():
                lengths = [len(d) for d in read_docs(out / entry["prefix"])]
                assert entry["tokens"] == sum(lengths) and entry["documents"] == len(lengths), (
                    name,
                    tag,
                    split,
                )
                total += sum(lengths)
    assert stats["totals"]["tokens"] == total
    assert stats["totals"]["documents"] == len(MONO) + 2 * len(PAIRS) + len(CHAT)
    assert stats["totals"]["by_kind"]["parallel"]["languages"]["pt-en"]["documents"] == len(PAIRS)
    assert stats["dtype"] == "uint16"  # vocab 8000 < 65500, as Megatron-LM's preprocess_data picks


def test_worker_processes_write_identical_files(tmp_path, sources):
    """Two worker processes (and small chunks, so results interleave) give byte-identical output."""
    one, two = tmp_path / "one", tmp_path / "two"
    run_preprocess(make_cfg(one, sources, batch_size=1))
    run_preprocess(make_cfg(two, sources, batch_size=1, workers=2))
    files = sorted(p.relative_to(one) for p in one.rglob("*.bin")) + sorted(
        p.relative_to(one) for p in one.rglob("*.idx")
    )
    assert files and all(filecmp.cmp(one / f, two / f, shallow=False) for f in files)


def test_cli_verb(tmp_path, sources):
    cfg = tmp_path / "recipe.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump({"tokenizer": {"type": "sentencepiece", "path": tokenizer_cfg().path},
                                   "output_dir": str(tmp_path / "cli_out"), "sources": sources}))  # fmt: skip
    assert cli_main(["preprocess", str(cfg), "workers=1", "progress=false"]) == 0
    assert (tmp_path / "cli_out" / "stats.json").is_file()
    assert cli_main(["preprocess", str(cfg), "sourcez=[]"]) == 2  # config error → exit 2


def test_batch_encoder_matches_megatron_sentencepiece(megatron_tokenizer):
    from tower_megatron.data.tokenizer import BatchEncoder, eod_and_vocab_size

    assert eod_and_vocab_size(tokenizer_cfg()) == (megatron_tokenizer.eod, megatron_tokenizer.vocab_size)

    texts = [m["text"] for m in MONO] + ["<start_of_turn>user\n人人生而自由<end_of_turn>\n", "  x  y  ", ""]
    assert BatchEncoder(tokenizer_cfg()).encode(texts) == [megatron_tokenizer.tokenize(t) for t in texts]


def test_batch_encoder_matches_megatron_huggingface(tmp_path):
    """A small HF BPE tokenizer (trained here) through both paths gives the same ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from tower_megatron.config.data import TokenizerConfig
    from tower_megatron.data.tokenizer import BatchEncoder, build_tokenizer, eod_and_vocab_size

    hf = Tokenizer(models.BPE(unk_token="<unk>"))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    corpus = [m["text"] for m in MONO] + [s for p in PAIRS for s in p]
    hf.train_from_iterator(
        corpus * 5, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<|endoftext|>"])
    )
    PreTrainedTokenizerFast(
        tokenizer_object=hf, eos_token="<|endoftext|>", unk_token="<unk>"
    ).save_pretrained(tmp_path)
    cfg = TokenizerConfig(type="huggingface", path=str(tmp_path))
    ref = build_tokenizer(cfg)
    texts = corpus + ["Olá, mundo! 123"]
    assert BatchEncoder(cfg).encode(texts) == [list(ref.tokenize(t)) for t in texts]
    assert eod_and_vocab_size(cfg) == (ref.eod, ref.vocab_size) and ref.eod == hf.token_to_id("<|endoftext|>")


def test_bulk_append_equals_add_document(tmp_path):
    """The writer's chunked append produces the same files as Megatron's add_document."""
    import filecmp

    import numpy as np
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    from tower_megatron.data.writer import TokenFile

    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 8000, size=n).astype(np.int32) for n in (5, 1, 17, 3)]
    ref = IndexedDatasetBuilder(str(tmp_path / "ref.bin"), dtype=np.uint16)
    for doc in docs:
        ref.add_document(doc, [len(doc)])
    ref.finalize(str(tmp_path / "ref.idx"))
    bulk = TokenFile(tmp_path / "bulk", np.uint16)
    bulk.add(np.concatenate(docs[:2]), [5, 1])
    bulk.add(np.concatenate(docs[2:]), [17, 3])
    bulk.finalize()
    for ext in ("bin", "idx"):
        assert filecmp.cmp(tmp_path / f"ref.{ext}", tmp_path / f"bulk.{ext}", shallow=False)
