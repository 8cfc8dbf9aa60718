"""data.mixture → Megatron blend weights, temperature sampling, repetition warning, report."""

from __future__ import annotations

import json
import math

import pytest
from data_helpers import DEMO_RECIPE, REPO, tokenizer_cfg

from tower_megatron.config.data import DataConfig, MixtureConfig, MixtureSourceConfig
from tower_megatron.config.loader import ConfigError, load_config
from tower_megatron.data.mixture import RepetitionWarning, resolve_mixture, temperature_weights
from tower_megatron.data.tokenizer import tokenizer_fingerprint

MONO = {"en": 8000, "pt": 1000, "is": 125}


def write_stats(directory, sources: dict[str, tuple[str, dict[str, int]]], sha=None, valid=True):
    """A stats.json as `tower-megatron preprocess` writes it: {name: (kind, {tag: train tokens})}."""
    out = {}
    for name, (kind, tags) in sources.items():
        outputs = {}
        for tag, n in tags.items():
            outputs[tag] = {"train": {"prefix": f"{name}/{tag}.train", "documents": 1, "tokens": n}}
            if valid:
                outputs[tag]["valid"] = {"prefix": f"{name}/{tag}.valid", "documents": 1, "tokens": 10}
        out[name] = {"kind": kind, "outputs": outputs}
    stats = {
        "tokenizer": {"path": "t", "sha256": sha or tokenizer_fingerprint(tokenizer_cfg())},
        "sources": out,
    }
    path = directory / "stats.json"
    path.write_text(json.dumps(stats))
    return path


def data_cfg(stats_path, sources, **mix) -> DataConfig:
    return DataConfig(
        tokenizer=tokenizer_cfg(),
        mixture=MixtureConfig(
            stats=[str(stats_path)], sources=[MixtureSourceConfig(**s) for s in sources], **mix
        ),
    )


def weights_by_tag(resolved):
    return {c.tag: c.weight for c in resolved.components}


@pytest.mark.parametrize("temperature", [1.0, 5.0, math.inf])
def test_temperature_sampling_matches_formula(tmp_path, temperature):
    path = write_stats(tmp_path, {"web": ("mono", MONO)})
    got = weights_by_tag(resolve_mixture(data_cfg(path, [{"name": "web"}], temperature=temperature)))
    alpha = 0.0 if math.isinf(temperature) else 1.0 / temperature
    norm = sum(n**alpha for n in MONO.values())
    for lang, n in MONO.items():
        assert got[lang] == pytest.approx(n**alpha / norm, rel=1e-12)
    if temperature == 1.0:
        assert got["en"] == pytest.approx(8000 / 9125)
    if math.isinf(temperature):
        assert set(round(w, 12) for w in got.values()) == {round(1 / 3, 12)}  # uniform
    assert temperature_weights({"a": 4, "b": 1}, 2.0) == pytest.approx({"a": 2 / 3, "b": 1 / 3})


def test_fixed_kind_shares_and_blends(tmp_path):
    path = write_stats(tmp_path, {
        "web": ("mono", MONO),
        "pairs": ("parallel", {"en-pt": 500, "pt-en": 500, "en-is": 50, "is-en": 50}),
        "chat": ("instruction", {"en": 300}),
    })  # fmt: skip
    cfg = data_cfg(
        path, [{"name": "*"}], shares={"mono": 0.6, "parallel": 0.3, "instruction": 0.1}, temperature=2.0
    )
    r = resolve_mixture(cfg)
    kinds = {}
    for c in r.components:
        kinds[c.kind] = kinds.get(c.kind, 0) + c.weight
    assert kinds == pytest.approx({"mono": 0.6, "parallel": 0.3, "instruction": 0.1})
    pairs = {c.tag: c.weight for c in r.components if c.kind == "parallel"}
    assert pairs["en-pt"] / pairs["en-is"] == pytest.approx(math.sqrt(10))  # T=2 within the kind
    # Megatron forms: (weight, prefix) with absolute prefixes, blend_per_split, --data-path list.
    assert sum(w for w, _ in r.train_blend) == pytest.approx(1.0)
    assert all(p.startswith(str(tmp_path.resolve())) and p.endswith(".train") for _, p in r.train_blend)
    train, valid, test = r.blend_per_split()
    assert train[1] == [w for w, _ in r.train_blend] and valid[0][0].endswith(".valid") and test is None
    assert r.data_paths()[1] == r.train_blend[0][1] and float(r.data_paths()[0]) == r.train_blend[0][0]
    # Named validation sets per language and direction (the trainer logs valid/loss/<name>).
    assert {"en", "pt", "is", "en-pt", "pt-en", "en-is", "is-en", "instruction/en"} == set(r.valid_sets)
    assert r.valid_sets["pt-en"].endswith("pairs/pt-en.valid")


def test_token_budget_beyond_the_data_warns(tmp_path):
    path = write_stats(tmp_path, {"web": ("mono", {"en": 1000}), "pairs": ("parallel", {"en-pt": 100})})
    cfg = data_cfg(path, [{"name": "web", "tokens": 3000}, {"name": "pairs", "tokens": 1000}], max_epochs=4.0)
    with pytest.warns(RepetitionWarning, match=r"pairs/en-pt would be repeated 10\.0 times"):
        r = resolve_mixture(cfg)
    assert r.mode == "tokens" and r.total_tokens == 4000
    assert {c.tag: c.epochs for c in r.components} == pytest.approx({"en": 3.0, "en-pt": 10.0})
    assert len(r.warnings) == 1  # en: 3 epochs is within max_epochs


def test_weights_and_total_tokens(tmp_path, recwarn):
    path = write_stats(tmp_path, {"web": ("mono", {"en": 1000}), "pairs": ("parallel", {"en-pt": 1000})})
    r = resolve_mixture(
        data_cfg(path, [{"name": "web", "weight": 3}, {"name": "pairs", "weight": 1}]), total_tokens=2000
    )
    assert weights_by_tag(r) == pytest.approx({"en": 0.75, "en-pt": 0.25})
    assert {c.tag: c.planned_tokens for c in r.components} == pytest.approx({"en": 1500, "en-pt": 500})
    assert not [w for w in recwarn if issubclass(w.category, RepetitionWarning)]


def test_same_language_from_two_sources_and_filters(tmp_path):
    path = write_stats(tmp_path, {"a": ("mono", {"en": 100, "pt": 100}), "b": ("mono", {"en": 300})})
    r = resolve_mixture(data_cfg(path, [{"name": "a"}, {"name": "b"}]))
    assert set(r.valid_sets) == {"en/a", "en/b", "pt"}
    r = resolve_mixture(
        data_cfg(path, [{"name": "a", "languages": ["pt"]}, {"name": "b", "validate": False}])
    )
    assert [(c.source, c.tag) for c in r.components] == [("a", "pt"), ("b", "en")] and set(r.valid_sets) == {
        "pt"
    }
    assert weights_by_tag(r) == pytest.approx({"pt": 0.25, "en": 0.75})


@pytest.mark.parametrize(
    "sources, mix, match",
    [
        ([{"name": "nope"}], {}, r"no source 'nope' in the stats; known: a, b"),
        ([{"name": "a", "languages": ["fr"]}], {}, r"'a' has no 'fr'; known: en, pt"),
        (
            [{"name": "a", "weight": 1}, {"name": "b"}],
            {},
            "every source a weight, or every source tokens, or none",
        ),
        ([{"name": "a", "weight": 1, "tokens": 5}], {}, "a weight or tokens, not both"),
        ([{"name": "a"}, {"name": "a"}], {}, "selected twice"),
        ([{"name": "*"}], {"shares": {"mono": 1.0}}, "no share for kind 'parallel'"),
        ([{"name": "*"}], {"shares": {"mono": 1.0, "parallel": 1, "code": 1}}, "unknown kind 'code'"),
        ([{"name": "a"}], {"temperature": 0.0}, "temperature must be > 0"),
    ],
)
def test_bad_mixture(tmp_path, sources, mix, match):
    path = write_stats(tmp_path, {"a": ("mono", {"en": 100, "pt": 100}), "b": ("parallel", {"en-pt": 10})})
    with pytest.raises(ConfigError, match=match):
        resolve_mixture(data_cfg(path, sources, **mix))


def test_stats_problems(tmp_path):
    path = write_stats(tmp_path, {"a": ("mono", {"en": 100})}, sha="0" * 64)
    with pytest.raises(ConfigError, match="was tokenized with t, not data.tokenizer.path"):
        resolve_mixture(data_cfg(path, [{"name": "a"}]))
    cfg = data_cfg(tmp_path / "missing" / "stats.json", [{"name": "a"}], preprocess="recipe.yaml")
    with pytest.raises(ConfigError, match="no such file .*run `tower-megatron preprocess recipe.yaml` first"):
        resolve_mixture(cfg)


def test_report(tmp_path):
    path = write_stats(tmp_path, {"web": ("mono", MONO), "pairs": ("parallel", {"en-pt": 100, "pt-en": 100})})
    with pytest.warns(RepetitionWarning):
        resolve_mixture(
            data_cfg(path, [{"name": "*"}], max_epochs=2.0), total_tokens=50_000, report_dir=tmp_path / "rep"
        )
    md = (tmp_path / "rep" / "mixture.md").read_text()
    assert "| source | kind | tag | available tokens | weight | planned tokens | epochs | valid set |" in md
    assert "| pairs | parallel | en-pt | 100 |" in md and "⚠" in md
    assert (tmp_path / "rep" / "mixture.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((tmp_path / "rep" / "mixture.json").read_text())
    assert report["total_tokens"] == 50_000 and len(report["components"]) == 5 and report["warnings"]


def test_demo_mixture_builds_megatron_datasets(demo_stats, tmp_path):
    """The demo recipe's mixture resolves over the preprocessed embedded corpus, and Megatron's
    BlendedMegatronDatasetBuilder accepts its blends."""
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    from tower_megatron.config.schema import JobConfig
    from tower_megatron.data.tokenizer import build_tokenizer

    out, stats = demo_stats
    job = load_config(
        JobConfig, REPO / "configs" / "data" / "demo_mixture.yaml", [f"data.mixture.stats=[{out}]"]
    )
    r = resolve_mixture(job.data, total_tokens=100_000)
    assert {"en", "pt", "en-pt", "pt-en", "instruction/pt"} <= set(r.valid_sets)
    assert len({c.tag for c in r.components if c.kind == "mono"}) >= 10
    tok = build_tokenizer(job.data.tokenizer)
    config = GPTDatasetConfig(
        random_seed=1, sequence_length=64, tokenizer=tok, blend_per_split=r.blend_per_split(),
        reset_position_ids=False, reset_attention_mask=False, eod_mask_loss=False,
        create_attention_mask=False, path_to_cache=str(tmp_path / "cache"), mid_level_dataset_surplus=0.005,
    )  # fmt: skip
    train, valid, _ = BlendedMegatronDatasetBuilder(GPTDataset, [64, 16, None], lambda: True, config).build()
    assert len(train) >= 64 and len(valid) >= 16
    assert train[0]["tokens"].shape[0] == 64 and int(train[0]["tokens"].max()) < tok.vocab_size
    assert DEMO_RECIPE.is_file()


def test_mixture_cli_verb(demo_stats, tmp_path, capsys):
    from tower_megatron.cli import main as cli_main

    out, _ = demo_stats
    recipe = str(REPO / "configs" / "data" / "demo_mixture.yaml")
    args = [f"data.mixture.stats=[{out}]", f"run.output_dir={tmp_path}", "run.name=demo"]
    assert cli_main(["mixture", recipe, *args]) == 0
    assert "| udhr_mono | mono | pt |" in capsys.readouterr().out
    assert {p.name for p in (tmp_path / "demo" / "mixture").iterdir()} == {
        "mixture.md",
        "mixture.json",
        "mixture.png",
    }
    assert cli_main(["mixture", recipe, *args, "data.mixture.temprature=2"]) == 2  # typo → config error
