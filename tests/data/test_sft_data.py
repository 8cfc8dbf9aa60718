"""SFT data: preprocess (three input formats, gzip/zstd) → token + mask files that decode back to
the rendered conversations; the training dataset's samples, packing (fill, determinism, segments
equal to the unpacked conversations), overflow and loss-on-last."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import sentencepiece
from data_helpers import REPO, make_cfg, read_docs, tokenizer_cfg, write_lines

from tower_megatron.config.data import DataConfig, SFTDataConfig
from tower_megatron.config.loader import ConfigError, load_config
from tower_megatron.config.preprocess import PreprocessConfig
from tower_megatron.data.chat_format import CHAT_FORMATS
from tower_megatron.data.preprocess import run_preprocess
from tower_megatron.data.sft_dataset import SFTDataset, build_sft_datasets
from tower_megatron.data.tokenizer import _resolve_path

GEMMA = CHAT_FORMATS.get("gemma")
CHAT = [
    {"role": "system", "content": "Be brief. "},
    {"role": "user", "content": "  Traduz: good morning\n"},  # kept as is: chat contents are never stripped
    {"role": "assistant", "content": "Bom dia"},
    {"role": "user", "content": "E em japonês?"},
    {"role": "assistant", "content": "おはようございます"},
]
NEMO = {  # NeMo-Aligner's SFT chat format
    "system": "",
    "mask": "User",
    "type": "VALUE_TO_TEXT",
    "conversations": [{"from": "User", "value": "2 + 3 = ?"}, {"from": "Assistant", "value": "5"}],
}
PROMPT_COMPLETION = {"prompt": "Capital of Portugal?", "completion": "Lisbon"}
EXPECTED = [  # what each record means as messages
    CHAT,
    [{"role": "user", "content": "2 + 3 = ?"}, {"role": "assistant", "content": "5"}],
    [{"role": "user", "content": "Capital of Portugal?"}, {"role": "assistant", "content": "Lisbon"}],
]


@pytest.fixture(scope="module")
def sp():
    return sentencepiece.SentencePieceProcessor(model_file=_resolve_path(tokenizer_cfg()))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The three formats in one gzip and one zstd file, preprocessed: (output dir, stats)."""
    tmp = tmp_path_factory.mktemp("sft")
    a = write_lines(tmp / "in" / "chat.jsonl.gz", [{"messages": CHAT}, NEMO])
    b = write_lines(tmp / "in" / "pc.jsonl.zst", [PROMPT_COMPLETION])
    cfg = make_cfg(tmp / "out", [{"name": "s", "kind": "sft", "files": [str(a), str(b)]}])
    assert cfg.filters.strip  # the default, which applies to CPT kinds only
    return tmp / "out", run_preprocess(cfg)


def _job(paths, valid=None, **sft) -> SimpleNamespace:
    return SimpleNamespace(
        data=DataConfig(paths=list(paths), valid_paths=valid or {}, sft=SFTDataConfig(**sft))
    )


def test_token_files_decode_to_the_rendered_conversations(small, sp):
    out, stats = small
    assert stats["sources"]["s"]["outputs"]["mul"]["train"]["documents"] == 3
    tokens, masks = read_docs(out / "s/mul.train_text_document"), read_docs(out / "s/mul.train_mask_document")
    assert [len(t) for t in tokens] == [len(m) for m in masks]
    for ids, mask, messages in zip(tokens, masks, EXPECTED, strict=True):
        assert ids[0] == sp.bos_id()
        assert sp.decode(ids[1:].tolist()) == GEMMA.render(messages).text
        answers = [m["content"] for m in messages if m["role"] == "assistant"]
        # every assistant turn (+ its end-of-turn marker) is masked; the final one with value 2
        assert sp.decode(ids[mask > 0].tolist()) == "".join(a + "<end_of_turn>" for a in answers)
        assert sp.decode(ids[mask == 2].tolist()) == answers[-1] + "<end_of_turn>"
    assert stats["totals"]["tokens"] == sum(len(t) for t in tokens)


def test_sample_layout_and_loss_on_last(small, sp, tmp_path):
    out, _ = small
    prefix = str(out / "s/mul.train")
    for loss_on in ("all", "last"):
        ds = SFTDataset([(1.0, prefix)], SFTDataConfig(packing=False, loss_on=loss_on), seq_length=64,
                        num_samples=0, seed=3, cache_dir=str(tmp_path), pad_id=0)  # fmt: skip
        assert len(ds) == 3
        sample = next(ds[i] for i in range(3) if int(ds.row(i)[0]) == 0)  # the two-answer chat
        assert {k: (str(v.dtype), tuple(v.shape)) for k, v in sample.items()} == {
            "tokens": ("torch.int64", (64,)), "labels": ("torch.int64", (64,)),
            "loss_mask": ("torch.float32", (64,)), "position_ids": ("torch.int64", (64,)),
            "segment_ids": ("torch.int64", (64,)),
        }  # fmt: skip
        n = int((sample["segment_ids"] == 1).sum())
        assert (
            sample["tokens"][: n - 1].tolist()
            == read_docs(out / "s/mul.train_text_document")[0][: n - 1].tolist()
        )
        assert sample["labels"][: n - 1].tolist() == sample["tokens"][1:n].tolist()
        assert sample["position_ids"][:n].tolist() == list(range(n))
        assert sample["segment_ids"][n:].eq(0).all() and sample["loss_mask"][n - 1 :].eq(0).all()
        learned = sample["labels"][sample["loss_mask"] == 1].tolist()
        want = ["Bom dia<end_of_turn>", "おはようございます<end_of_turn>"]
        assert sp.decode(learned) == ("".join(want) if loss_on == "all" else want[1])


@pytest.fixture(scope="module")
def demo_sft(tmp_path_factory):
    """configs/data/demo_sft.yaml (the embedded translation chats + math chats) preprocessed."""
    out = tmp_path_factory.mktemp("demo_sft") / "demo_sft"
    cfg = load_config(
        PreprocessConfig,
        REPO / "configs/data/demo_sft.yaml",
        [f"output_dir={out}", "workers=1", "progress=false"],
    )
    return out, run_preprocess(cfg)


def test_demo_recipe_counts(demo_sft):
    _, stats = demo_sft
    assert {n: s["kept"] for n, s in stats["sources"].items()} == {"translation_chat": 4766, "chat": 572}
    assert stats["totals"]["errors"] == {}


def test_packing_fill_determinism_and_segments(demo_sft, tmp_path):
    out, _ = demo_sft
    train = [f"{out}/*/*.train"]
    build = dict(seq_length=512, train_samples=0, valid_samples=0, seed=7)
    packed, _ = build_sft_datasets(_job(train), None, cache_dir=str(tmp_path / "a"), **build)
    assert packed.stats["fill_rate"] >= 0.95, packed.stats
    again, _ = build_sft_datasets(_job(train), None, cache_dir=str(tmp_path / "b"), **build)
    assert np.array_equal(again.row_offsets, packed.row_offsets) and np.array_equal(
        again.row_docs, packed.row_docs
    )
    cached, _ = build_sft_datasets(_job(train), None, cache_dir=str(tmp_path / "a"), **build)
    assert len(list((tmp_path / "a").glob("*.npy"))) == 2 and np.array_equal(cached.row_docs, packed.row_docs)
    other, _ = build_sft_datasets(_job(train), None, cache_dir=str(tmp_path / "a"), **{**build, "seed": 8})
    assert not np.array_equal(other.row_docs[:100], packed.row_docs[:100])
    # every kept conversation exactly once per epoch
    kept = packed.stats["documents"] - packed.stats["dropped_no_loss_after_truncation"]
    assert (
        sorted(packed.row_docs.tolist()) == sorted(set(packed.row_docs.tolist()))
        and len(packed.row_docs) == kept
    )

    unpacked, _ = build_sft_datasets(_job(train, packing=False), None, cache_dir=str(tmp_path / "a"), **build)
    where = {int(unpacked.row(i)[0]): i for i in range(len(unpacked))}
    for index in (0, 1, len(packed) // 2, len(packed) - 1):
        row, docs = packed[index], packed.row(index)
        assert row["segment_ids"].max() == len(docs) >= 1
        for k, doc in enumerate(docs, start=1):
            seg = (row["segment_ids"] == k).nonzero().flatten()
            alone = unpacked[where[int(doc)]]
            n = len(seg)
            for key in ("tokens", "loss_mask", "position_ids"):
                assert row[key][seg].tolist() == alone[key][:n].tolist(), key
            assert row["labels"][seg[:-1]].tolist() == alone["labels"][: n - 1].tolist()


def test_epochs_weights_and_validation_sets(demo_sft, tmp_path):
    out, _ = demo_sft
    prefix = f"{out}/chat/de.train"
    n_docs = len(read_docs(f"{prefix}_text_document"))
    ds, valid = build_sft_datasets(
        _job([prefix], {"translation": f"{out}/translation_chat/*.valid"}, packing=False),
        None, seq_length=1024, train_samples=2 * n_docs + 5, valid_samples=0, seed=1, cache_dir=str(tmp_path),
    )  # fmt: skip
    assert len(ds) == 2 * n_docs + 5 and ds.stats["epochs"] == 3
    first, second = ds.row_docs[:n_docs], ds.row_docs[n_docs : 2 * n_docs]
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(n_docs))
    assert first.tolist() != second.tolist()  # a new shuffle per epoch
    assert len(valid["translation"]) == sum(
        len(read_docs(p.with_name(p.name[: -len(".idx")])))
        for p in Path(out, "translation_chat").glob("*.valid_text_document.idx")
    )
    doubled, _ = build_sft_datasets(_job(["2", prefix], packing=False), None, seq_length=1024, train_samples=0,
                                    valid_samples=0, seed=1, cache_dir=str(tmp_path))  # fmt: skip
    assert sorted(doubled.row_docs.tolist()) == sorted(list(range(n_docs)) * 2)


def test_overflow_policies(small, tmp_path):
    out, _ = small
    prefix = str(out / "s/mul.train")
    lengths = [len(t) for t in read_docs(f"{prefix}_text_document")]
    mask = read_docs(f"{prefix}_mask_document")[0]  # the two-answer chat, the longest
    assert np.argmax(lengths) == 0
    seq = int(np.flatnonzero(mask == 1)[0]) + 3  # cut inside the first answer
    assert sorted(lengths)[1] < seq < lengths[0]
    kw = dict(seq_length=seq, num_samples=0, seed=0, cache_dir=str(tmp_path), pad_id=0)
    drop = SFTDataset([(1.0, prefix)], SFTDataConfig(overflow="drop", packing=False), **kw)
    assert drop.stats["dropped_overflow"] == 1 and len(drop) == 2
    cut = SFTDataset([(1.0, prefix)], SFTDataConfig(overflow="truncate", packing=False), **kw)
    assert (cut.stats["truncated"], cut.stats["dropped_no_loss_after_truncation"], len(cut)) == (1, 0, 3)
    # loss on the last turn only: the cut conversation lost its final answer, nothing to learn
    last = SFTDataset(
        [(1.0, prefix)], SFTDataConfig(overflow="truncate", loss_on="last", packing=False), **kw
    )
    assert (last.stats["truncated"], last.stats["dropped_no_loss_after_truncation"], len(last)) == (0, 1, 2)
    with pytest.raises(ConfigError, match="data.sft.overflow: must be truncate or drop"):
        SFTDataset([(1.0, prefix)], SFTDataConfig(overflow="clip"), **kw)
    with pytest.raises(ConfigError, match="data.sft.loss_on: must be all or last"):
        build_sft_datasets(_job([prefix], loss_on="first"), None, seq_length=64, train_samples=1,
                           valid_samples=0, seed=0, cache_dir=str(tmp_path))  # fmt: skip
    with pytest.raises(ConfigError, match="data.paths: no token files match"):
        build_sft_datasets(_job([f"{out}/nope/*.train"]), None, seq_length=64, train_samples=1,
                           valid_samples=0, seed=0, cache_dir=str(tmp_path))  # fmt: skip


def test_config_check_messages(small, tmp_path):
    from tower_megatron.data.sft_dataset import chat_data_errors

    out, _ = small
    ok = DataConfig(paths=[str(out / "s/mul.train")], valid_paths={"v": f"{out}/s/*.train"})
    assert chat_data_errors(ok, "sft") == []
    bad = DataConfig(paths=["0.5", str(out / "s/xx.train")], valid_paths={"v": f"{out}/none/*.valid"})
    assert chat_data_errors(bad, "sft") == [
        f"data.paths: missing {out}/s/xx.train_text_document.bin (and 3 more)",
        f"data.valid_paths.v: no token files match '{out}/none/*.valid' "
        f"(looked for {out}/none/*.valid_text_document.idx)",
    ]
    assert chat_data_errors(DataConfig(paths=[str(out / "s/mul.train")]), "preference") == [
        f"data.paths: missing {out}/s/mul.train_chosen_text_document.bin (and 7 more)"
    ]


def test_worker_processes_write_the_same_files(small, tmp_path):
    out, _ = small
    files = sorted(p.relative_to(out) for p in out.rglob("*_document.*"))
    cfg = make_cfg(tmp_path / "out", [{"name": "s", "kind": "sft", "files": sorted(
        str(p) for p in (out.parent / "in").iterdir())}], workers=2, batch_size=1)  # fmt: skip
    run_preprocess(cfg)
    assert sorted(p.relative_to(tmp_path / "out") for p in (tmp_path / "out").rglob("*_document.*")) == files
    for f in files:
        assert (tmp_path / "out" / f).read_bytes() == (out / f).read_bytes(), f


def test_demo_data_section_reads_the_demo_recipe_output(demo_sft, tmp_path, monkeypatch):
    """configs/data/demo_sft_data.yaml (a recipe's data: section) finds what demo_sft.yaml writes."""
    from tower_megatron.config.schema import JobConfig
    from tower_megatron.data.sft_dataset import chat_data_errors

    out, stats = demo_sft
    (tmp_path / "outputs/data").mkdir(parents=True)
    (tmp_path / "outputs/data/demo_sft").symlink_to(out)
    monkeypatch.chdir(tmp_path)
    job = load_config(JobConfig, REPO / "configs/data/demo_sft_data.yaml")
    assert chat_data_errors(job.data, "sft") == []
    train, valid = build_sft_datasets(job, None, seq_length=256, train_samples=0, valid_samples=0, seed=0,
                                      cache_dir=str(tmp_path / "cache"))  # fmt: skip
    train_docs = sum(s["documents"] for src in stats["sources"].values() for t in src["outputs"].values()
                     for split, s in t.items() if split == "train")  # fmt: skip
    assert train.stats["documents"] == train_docs and set(valid) == {"translation", "chat"}
