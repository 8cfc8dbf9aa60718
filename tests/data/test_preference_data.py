"""Preference data: TRL (strings and conversational) and NeMo-Aligner records → chosen/rejected
token + mask files with aligned pair indices that decode back to the rendered conversations;
dataset samples; the embedded synthetic set is what the tool generates."""

from __future__ import annotations

import gzip
import json
from types import SimpleNamespace

import pytest
import sentencepiece
from data_helpers import REPO, make_cfg, read_docs, tokenizer_cfg, write_lines

from tower_megatron.config.data import DataConfig, PreferenceDataConfig
from tower_megatron.config.loader import load_config
from tower_megatron.config.preprocess import PreprocessConfig
from tower_megatron.data.chat_format import CHAT_FORMATS
from tower_megatron.data.preference_dataset import build_preference_datasets
from tower_megatron.data.preprocess import run_preprocess
from tower_megatron.data.tokenizer import _resolve_path
from tower_megatron.resources import resource_path

HISTORY = [
    {"role": "user", "content": "Translate to German: house"},
    {"role": "assistant", "content": "Haus"},
    {"role": "user", "content": "And 'tree'?"},
]
RECORDS = [
    {"prompt": "Translate to French: cat", "chosen": "chat", "rejected": "cat"},  # TRL, strings
    {  # TRL conversational, responses repeating the prompt
        "prompt": HISTORY,
        "chosen": [*HISTORY, {"role": "assistant", "content": "Baum"}],
        "rejected": [*HISTORY, {"role": "assistant", "content": "Haus"}],
    },
    {"prompt": "1 + 1?", "chosen_response": "2", "rejected_response": "3"},  # NeMo-Aligner
]
EXPECTED = [  # (prompt messages, chosen, rejected)
    ([{"role": "user", "content": "Translate to French: cat"}], "chat", "cat"),
    (HISTORY, "Baum", "Haus"),
    ([{"role": "user", "content": "1 + 1?"}], "2", "3"),
]


@pytest.fixture(scope="module")
def prefs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pref")
    path = write_lines(tmp / "in" / "p.jsonl.zst", RECORDS)
    return tmp / "out", run_preprocess(
        make_cfg(tmp / "out", [{"name": "p", "kind": "preference", "files": [str(path)]}])
    )


def test_pairs_decode_to_the_rendered_conversations(prefs):
    out, stats = prefs
    sp = sentencepiece.SentencePieceProcessor(model_file=_resolve_path(tokenizer_cfg()))
    assert stats["sources"]["p"]["outputs"]["mul"]["train"]["documents"] == 3
    fmt = CHAT_FORMATS.get("gemma")
    for side, column in (("chosen", 1), ("rejected", 2)):
        tokens = read_docs(out / f"p/mul.train_{side}_text_document")
        masks = read_docs(out / f"p/mul.train_{side}_mask_document")
        for ids, mask, expected in zip(tokens, masks, EXPECTED, strict=True):
            prompt, response = expected[0], expected[column]
            messages = [*prompt, {"role": "assistant", "content": response}]
            assert ids[0] == sp.bos_id() and sp.decode(ids[1:].tolist()) == fmt.render(messages).text
            assert sp.decode(ids[mask == 2].tolist()) == response + "<end_of_turn>"


def test_samples(prefs, tmp_path):
    out, _ = prefs
    job = SimpleNamespace(data=DataConfig(paths=[f"{out}/p/*.train"], preference=PreferenceDataConfig()))
    train, valid = build_preference_datasets(job, None, seq_length=48, train_samples=7, valid_samples=0, seed=5,
                                             cache_dir=str(tmp_path))  # fmt: skip
    assert len(train) == 7 and valid == {}
    sp = sentencepiece.SentencePieceProcessor(model_file=_resolve_path(tokenizer_cfg()))
    seen = []
    for i in range(len(train)):
        s = train[i]
        assert {k: (str(v.dtype), tuple(v.shape)) for k, v in s.items()} == {
            "tokens": ("torch.int64", (2, 48)), "labels": ("torch.int64", (2, 48)),
            "loss_mask": ("torch.float32", (2, 48)), "position_ids": ("torch.int64", (2, 48)),
            "index": ("torch.int64", ()),
        }  # fmt: skip
        pair = int(s["index"])
        seen.append(pair)
        _, chosen, rejected = EXPECTED[pair]  # the index is the pair's position in the files
        for row, response in enumerate((chosen, rejected)):
            assert (
                sp.decode(s["labels"][row][s["loss_mask"][row] == 1].tolist()) == response + "<end_of_turn>"
            )
            n = len(read_docs(out / f"p/mul.train_{('chosen', 'rejected')[row]}_text_document")[pair])
            assert s["labels"][row][: n - 1].tolist() == s["tokens"][row][1:n].tolist()
    assert sorted(seen[:3]) == [0, 1, 2] and sorted(seen[3:6]) == [0, 1, 2]  # whole epochs, reshuffled


def test_overflow(prefs, tmp_path):
    out, _ = prefs
    lengths = [len(x) for x in read_docs(out / "p/mul.train_chosen_text_document")]
    seq = sorted(lengths)[-2] + 1  # only the conversational pair is longer
    stats = {}
    for policy in ("drop", "truncate"):
        job = SimpleNamespace(data=DataConfig(paths=[str(out / "p/mul.train")],
                                              preference=PreferenceDataConfig(overflow=policy)))  # fmt: skip
        ds, _ = build_preference_datasets(job, None, seq_length=seq, train_samples=0, valid_samples=0, seed=0,
                                          cache_dir=str(tmp_path))  # fmt: skip
        stats[policy] = (ds.stats.get("dropped_overflow", 0) + ds.stats.get("dropped_no_loss_after_truncation", 0),
                         len(ds))  # fmt: skip
    assert stats == {"drop": (1, 2), "truncate": (1, 2)}  # the cut keeps the prompt only: nothing to prefer


def test_embedded_sets_are_what_the_tool_generates():
    from tower_megatron.data.sft_synthetic import parallel_pairs, translation_chats, translation_preferences

    pairs = parallel_pairs()
    for relative, records in (
        ("corpus/sft/translation_chat.jsonl.gz", translation_chats(pairs)),
        ("corpus/preference/translation.jsonl.gz", translation_preferences(pairs)),
    ):
        with gzip.open(resource_path(relative), "rt", encoding="utf-8") as f:
            assert f.read().splitlines() == [json.dumps(r, ensure_ascii=False) for r in records], relative


def test_demo_preference_recipe(tmp_path, monkeypatch):
    """demo_preference.yaml preprocesses the embedded set; demo_preference_data.yaml (a recipe's
    data: section) reads the result."""
    from tower_megatron.config.schema import JobConfig
    from tower_megatron.data.sft_dataset import chat_data_errors

    out = tmp_path / "outputs/data/demo_preference"
    cfg = load_config(PreprocessConfig, REPO / "configs/data/demo_preference.yaml",
                      [f"output_dir={out}", "workers=1", "progress=false"])  # fmt: skip
    stats = run_preprocess(cfg)
    with gzip.open(resource_path("corpus/preference/translation.jsonl.gz"), "rt", encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    src = stats["sources"]["translation_preference"]
    assert src["kept"] == len(records) and src["errors"] == {}
    kinds = {r["rejected_kind"] for r in records}
    assert kinds == {"untranslated", "other_segment", "truncated"}
    assert all(r["chosen"] != r["rejected"] for r in records)
    monkeypatch.chdir(tmp_path)
    job = load_config(JobConfig, REPO / "configs/data/demo_preference_data.yaml")
    assert chat_data_errors(job.data, "preference") == []
    train, valid = build_preference_datasets(job, None, seq_length=256, train_samples=0, valid_samples=0, seed=0,
                                             cache_dir=str(tmp_path / "cache"))  # fmt: skip
    n_train = sum(
        s["documents"] for t in src["outputs"].values() for split, s in t.items() if split == "train"
    )
    assert train.stats["documents"] == n_train and set(valid) == {"translation"}
