"""Tiny, self-made assets for tests and smoke runs: a sentencepiece tokenizer and Megatron
IndexedDataset files per language, built in seconds from a few real sentences, no downloads."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from tower_megatron.config import JobConfig, load_config

# A few real sentences (UDHR article 1 and everyday phrases) per language.
SENTENCES = {
    "en": [
        "All human beings are born free and equal in dignity and rights.",
        "They are endowed with reason and conscience and should act towards one another in a spirit of brotherhood.",
        "Everyone has the right to life, liberty and security of person.",
        "The weather is nice today, so we will walk to the station.",
        "Please translate this sentence into Portuguese.",
        "Where is the nearest train station?",
    ],
    "pt": [
        "Todos os seres humanos nascem livres e iguais em dignidade e em direitos.",
        "Dotados de razão e de consciência, devem agir uns para com os outros em espírito de fraternidade.",
        "Todo o indivíduo tem direito à vida, à liberdade e à segurança pessoal.",
        "O tempo está bom hoje, por isso vamos a pé até à estação.",
        "Por favor, traduza esta frase para inglês.",
        "Onde fica a estação de comboios mais próxima?",
    ],
    "de": [
        "Alle Menschen sind frei und gleich an Würde und Rechten geboren.",
        "Sie sind mit Vernunft und Gewissen begabt und sollen einander im Geist der Brüderlichkeit begegnen.",
        "Jeder hat das Recht auf Leben, Freiheit und Sicherheit der Person.",
        "Das Wetter ist heute schön, also gehen wir zu Fuß zum Bahnhof.",
    ],
}


@dataclass(frozen=True)
class TinyAssets:
    tokenizer: str
    prefixes: dict[str, str]  # language -> IndexedDataset prefix


def build_tiny_assets(out_dir: str | Path, docs_per_language: int = 200, vocab_size: int = 320) -> TinyAssets:
    """Builds (or reuses) a tokenizer and one token file per language under ``out_dir``."""
    import numpy as np
    import sentencepiece as spm
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = out / "tiny_sp.model"
    prefixes = {lang: str(out / f"{lang}_text_document") for lang in SENTENCES}
    if model.exists() and all(Path(p + ".idx").exists() for p in prefixes.values()):
        return TinyAssets(str(model), prefixes)
    text = out / "tiny_corpus.txt"
    text.write_text("\n".join(s for ss in SENTENCES.values() for s in ss) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(text),
        model_prefix=str(out / "tiny_sp"),
        vocab_size=vocab_size,
        model_type="bpe",
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        byte_fallback=True,
        minloglevel=2,
    )
    processor = spm.SentencePieceProcessor(model_file=str(model))
    rng = random.Random(0)
    for lang, sentences in SENTENCES.items():
        builder = IndexedDatasetBuilder(prefixes[lang] + ".bin", dtype=np.uint16)
        for _ in range(docs_per_language):
            doc = " ".join(rng.choice(sentences) for _ in range(rng.randint(1, 6)))
            ids = processor.encode(doc) + [processor.eos_id()]
            builder.add_document(torch.tensor(ids, dtype=torch.int64), [len(ids)])
        builder.finalize(prefixes[lang] + ".idx")
    return TinyAssets(str(model), prefixes)


def tiny_job(assets: TinyAssets, run_dir: str | Path, *overrides: str) -> JobConfig:
    """A CPU job that trains a 2-layer model in seconds; ``overrides`` as on the command line."""
    run_dir = Path(run_dir)
    base = [
        f"run.output_dir={run_dir.parent}",
        f"run.name={run_dir.name}",
        "run.device=cpu",
        "model.num_layers=2",
        "model.hidden_size=64",
        "model.num_attention_heads=4",
        "model.max_position_embeddings=256",
        "train.train_steps=5",
        "train.micro_batch_size=2",
        "train.global_batch_size=8",
        "train.seq_length=64",
        "train.precision=fp32",
        "optimizer.lr=1e-3",
        "optimizer.min_lr=1e-4",
        "scheduler.warmup_steps=1",
        "data.tokenizer.type=sentencepiece",
        f"data.tokenizer.path={assets.tokenizer}",
        f"data.paths=[{','.join(assets.prefixes.values())}]",
        "logging.progress_bar=false",
        "logging.console=false",
        "logging.tensorboard=false",
        "checkpoint.save_at_end=false",
    ]
    return load_config(JobConfig, None, [*base, *overrides])
