"""Translation metrics: chrF, chrF++ and BLEU through sacrebleu's Python API (signatures kept), and
COMET/XCOMET/MetricX only from a model the user has on disk, through their own packages.

BLEU needs a word segmentation, and the right one depends on the target language: sacrebleu's
``13a`` for space-separated scripts, ``zh`` for Chinese, MeCab for Japanese and Korean when
``sacrebleu[ja,ko]`` is installed, else ``char`` (character-level BLEU; the signature says so, so
numbers from the two are never compared unknowingly). chrF works on characters and needs none.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import sacrebleu
from sacrebleu.metrics import BLEU, CHRF

METRICS = ("chrf", "chrf++", "bleu")
# Scripts written without spaces between words, where 13a would see one "word" per sentence.
_CHAR_LEVEL = {"th", "lo", "km", "my", "bo"}


@functools.cache
def _tokenizer_works(name: str) -> bool:
    """Whether sacrebleu can build ``name`` here (MeCab tokenizers need optional packages)."""
    try:
        BLEU(tokenize=name).corpus_score(["テスト"], [["テスト"]])
    except Exception:  # ImportError, or a MeCab dictionary missing at run time
        return False
    return True


def bleu_tokenizer(lang: str, overrides: dict[str, str] | None = None) -> str:
    """The sacrebleu BLEU tokenizer for target language ``lang`` (a BCP 47 tag)."""
    overrides = overrides or {}
    primary = lang.split("-")[0].lower()
    if lang in overrides or primary in overrides:
        return overrides.get(lang) or overrides[primary]
    if primary == "zh":
        return "zh"
    if primary in ("ja", "ko"):
        mecab = f"{primary}-mecab"
        return mecab if _tokenizer_works(mecab) else "char"
    if primary in _CHAR_LEVEL:
        return "char"
    return "13a"


def _metric(name: str, tgt_lang: str, overrides: dict[str, str] | None) -> Any:
    if name == "chrf":
        return CHRF()
    if name == "chrf++":
        return CHRF(word_order=2)
    if name == "bleu":
        return BLEU(tokenize=bleu_tokenizer(tgt_lang, overrides))
    raise ValueError(f"unknown translation metric {name!r}; known: {', '.join(METRICS)}")


def corpus_scores(
    hypotheses: Sequence[str],
    references: Sequence[str],
    tgt_lang: str,
    metrics: Sequence[str] = METRICS,
    bleu_tokenizers: dict[str, str] | None = None,
) -> tuple[dict[str, float], dict[str, str]]:
    """Corpus-level scores of one language pair and their sacrebleu signatures."""
    scores, signatures = {}, {}
    for name in metrics:
        metric = _metric(name, tgt_lang, bleu_tokenizers)
        result = metric.corpus_score(list(hypotheses), [list(references)])
        scores[name] = float(result.score)
        signatures[name] = str(metric.get_signature())
    return scores, signatures


def sentence_chrf(hypothesis: str, reference: str) -> float:
    return float(sacrebleu.sentence_chrf(hypothesis, [reference]).score)


def comet_scores(
    model_path: str, sources: list[str], hypotheses: list[str], references: list[str], batch_size: int = 8
) -> list[float]:
    """Segment COMET / XCOMET scores (×100) from a local checkpoint (``unbabel-comet``)."""
    try:
        from comet import load_from_checkpoint
    except ImportError:
        raise RuntimeError(
            "translation.comet_model is set but unbabel-comet is not installed (pip install unbabel-comet)"
        ) from None
    import torch

    model = load_from_checkpoint(model_path)
    data = [{"src": s, "mt": h, "ref": r} for s, h, r in zip(sources, hypotheses, references, strict=True)]
    out = model.predict(
        data, batch_size=batch_size, gpus=1 if torch.cuda.is_available() else 0, progress_bar=False
    )
    return [100.0 * float(s) for s in out.scores]


def metricx_scores(
    model_path: str, sources: list[str], hypotheses: list[str], references: list[str], batch_size: int = 8
) -> list[float]:
    """Segment MetricX-24 scores (0 best … 25 worst) from a local checkpoint, through Google's
    ``metricx24`` package (installed by the user from its repository; not on PyPI)."""
    try:
        from metricx24.models import MT5ForRegression
    except ImportError:
        raise RuntimeError(
            "translation.metricx_model is set but the metricx24 package is not importable "
            "(install it from google-research/metricx)"
        ) from None
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = MT5ForRegression.from_pretrained(model_path).eval()
    texts = [
        f"source: {s} candidate: {h} reference: {r}"
        for s, h, r in zip(sources, hypotheses, references, strict=True)
    ]
    scores: list[float] = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[start : start + batch_size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=1536,
            )
            # MetricX-24's inputs end without the EOS the tokenizer appends (see its predict.py).
            ids, mask = batch["input_ids"][:, :-1], batch["attention_mask"][:, :-1]
            scores.extend(float(x) for x in model(input_ids=ids, attention_mask=mask).predictions)
    return scores


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None
