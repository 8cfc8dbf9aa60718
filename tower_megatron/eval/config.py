"""``tower-megatron eval`` / ``serve`` / ``report`` configurations (YAML + ``key=value``).

Suites are on when they have files (``translation.files=[...]``); the embedded demo sets are
``resource:eval/...`` paths (see ``configs/eval/``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from tower_megatron.generation.config import CheckpointSection


@dataclass
class GenerationSection:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0: greedy (the reported numbers are greedy unless set)
    top_p: float = 1.0
    top_k: int = 0
    seed: Optional[int] = 1234
    batch_size: int = 16  # prompts per generate() call


@dataclass
class PromptSection:
    # Chat format the prompts are rendered in (tower_megatron.data.templates.CHAT_FORMATS: gemma,
    # chatml) or "auto": the backend's, else by the tokenizer's special tokens, else gemma.
    chat_format: str = "auto"
    add_bos: Optional[bool] = None  # None: the tokenizer's BOS for the gemma format (as HF does)
    system_prompt: Optional[str] = None
    translation_template: str = "tower"  # tower_megatron.data.templates.TRANSLATION_TEMPLATES


@dataclass
class TranslationSuite:
    """Test sets as JSONL (WMT24++'s released files as is, or ``src_lang/tgt_lang/source/reference``)
    or TSV ``lp<TAB>source<TAB>reference`` (see docs/evaluation.md)."""

    files: list[str] = field(default_factory=list)
    limit: int = 0  # per file; 0: all
    skip_bad_source: bool = True  # WMT24++ marks a few unusable sources with is_bad_source
    metrics: list[str] = field(default_factory=lambda: ["chrf", "chrf++", "bleu"])
    bleu_tokenizers: dict[str, str] = field(default_factory=dict)  # target language -> tokenizer
    # Neural metrics only from a model the user has on disk (never downloaded); empty: off.
    comet_model: Optional[str] = None  # a COMET-22 / XCOMET checkpoint (unbabel-comet)
    metricx_model: Optional[str] = None  # a MetricX-24 checkpoint directory (metricx24 package)
    neural_batch_size: int = 8


@dataclass
class IFEvalSuite:
    files: list[str] = field(default_factory=list)  # IFEval JSONL: key, prompt, instruction_id_list, kwargs
    limit: int = 0


@dataclass
class IFMTSuite:
    files: list[str] = field(default_factory=list)  # IF-MT JSONL (tools/build_eval_sets.py)
    limit: int = 0


@dataclass
class JudgeSection:
    """An OpenAI-compatible endpoint (``tower-megatron serve``, vLLM, a hosted API). Unset: skipped."""

    base_url: Optional[str] = None  # e.g. http://127.0.0.1:8000/v1
    model: str = "judge"
    api_key_env: Optional[str] = None  # name of the environment variable holding the key
    max_tokens: int = 512
    timeout_s: float = 300.0
    both_orders: bool = True  # judge (model, baseline) and (baseline, model): cancels position bias


@dataclass
class ChatSuite:
    """M-ArenaHard style: the model's answer against a baseline's, pairwise, by an LLM judge."""

    files: list[str] = field(default_factory=list)  # JSONL: id, lang, prompt, baseline
    limit: int = 0
    judge: JudgeSection = field(default_factory=JudgeSection)


@dataclass
class EvalConfig:
    """Everything ``tower-megatron eval`` reads."""

    name: str = "eval"
    output_dir: str = "runs/eval"  # results go to <output_dir>/<name>/
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    generation: GenerationSection = field(default_factory=GenerationSection)
    prompt: PromptSection = field(default_factory=PromptSection)
    translation: TranslationSuite = field(default_factory=TranslationSuite)
    ifeval: IFEvalSuite = field(default_factory=IFEvalSuite)
    ifmt: IFMTSuite = field(default_factory=IFMTSuite)
    chat: ChatSuite = field(default_factory=ChatSuite)
    progress_bar: bool = True


@dataclass
class ServeConfig:
    """Everything ``tower-megatron serve`` reads."""

    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    prompt: PromptSection = field(default_factory=PromptSection)
    host: str = "127.0.0.1"
    port: int = 8000  # 0: any free port (printed at start)
    model_name: str = "tower"  # the "model" field of replies
    max_batch_size: int = 8  # concurrent requests with the same sampling settings share a generate()
    batch_wait_ms: float = 5.0  # how long the first request waits for others to join its batch
    default_max_tokens: int = 256
    max_request_bytes: int = 1 << 20


@dataclass
class ReportConfig:
    """``tower-megatron report``: eval results (JSON files or eval output dirs) → table + Pareto plot."""

    inputs: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # one per input; default: the eval's name
    output_dir: str = "runs/report"
