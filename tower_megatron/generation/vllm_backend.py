"""vLLM behind the same interface (GPU rollouts and evaluation at scale; ``pip install
'tower-megatron[vllm]'``). Imported only when ``backend="vllm"`` is asked for; without vLLM the
request fails with one line saying how to install it.

vLLM reads Hugging Face checkpoints, so a Megatron checkpoint (trainer run or converted) is first
exported with :func:`tower_megatron.models.convert.megatron_to_hf` (streamed, tensor by tensor)
into ``export_dir`` (default: a temporary directory removed when the generator is closed).
Semantics follow :mod:`tower_megatron.generation.base`: ``top_k=0`` is off, log-probs are the
model's raw log-probs (vLLM's ``logprobs_mode="raw_logprobs"``), stop strings are cut from the text.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tower_megatron.generation.base import GenerationBackend, GenerationOutput, SamplingParams
from tower_megatron.generation.loading import (
    GENERATION_BACKENDS,
    CheckpointSource,
    build_generation_tokenizer,
)
from tower_megatron.generation.sampling import check_params

INSTALL_HINT = "the vllm generation backend needs vLLM on a GPU machine: pip install 'tower-megatron[vllm]'"


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


class VLLMGenerator(GenerationBackend):
    """A ``vllm.LLM`` engine over an HF directory; ``tp``/``pp`` are vLLM's own parallel sizes
    (one process drives it, unlike the Megatron backend where every rank calls ``generate``)."""

    def __init__(
        self,
        hf_dir: str | Path,
        tokenizer: Any,
        eos_ids: list[int],
        tp: int = 1,
        pp: int = 1,
        cleanup: Path | None = None,
        **engine_kwargs: Any,
    ) -> None:
        from vllm import LLM

        self._tokenizer = tokenizer
        self.eos_ids = list(eos_ids)
        self._cleanup = cleanup
        self.llm = LLM(
            model=str(hf_dir),
            tokenizer=str(hf_dir),
            tensor_parallel_size=tp,
            pipeline_parallel_size=pp,
            logprobs_mode="raw_logprobs",
            **engine_kwargs,
        )

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[GenerationOutput]:
        from vllm import SamplingParams as VLLMSamplingParams

        check_params(params)
        sampling = VLLMSamplingParams(
            max_tokens=params.max_new_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,  # 0 disables in vLLM too
            seed=params.seed,
            stop=list(params.stop_strings) or None,
            stop_token_ids=sorted(set(self.eos_ids) | set(params.stop_token_ids)),
            logprobs=0 if params.return_logprobs else None,  # 0: only the sampled token's
            include_stop_str_in_output=False,
        )
        requests = [{"prompt_token_ids": list(p)} for p in prompts]
        results = self.llm.generate(requests, sampling, use_tqdm=False)
        outputs = []
        for result in results:
            out = result.outputs[0]
            ids = list(out.token_ids)
            logprobs = None
            if params.return_logprobs:
                logprobs = [float(step[token].logprob) for step, token in zip(out.logprobs, ids, strict=True)]
            outputs.append(
                GenerationOutput(
                    token_ids=ids,
                    text=out.text,
                    logprobs=logprobs,
                    finish_reason="stop" if out.finish_reason == "stop" else "length",
                )
            )
        return outputs

    def update_weights(self, model_chunks) -> None:
        raise NotImplementedError(
            "refreshing vLLM weights from live Megatron modules is not built yet (a plan); "
            "save a checkpoint and build a new generator with load_generator(path, backend='vllm')"
        )

    def close(self) -> None:
        """Removes the exported HF directory this generator created (nothing else)."""
        if self._cleanup is not None:
            shutil.rmtree(self._cleanup, ignore_errors=True)
            self._cleanup = None


@GENERATION_BACKENDS.register("vllm")
def load_vllm_generator(
    path: str | Path,
    *,
    tp: int = 1,
    pp: int = 1,
    device: str = "auto",
    tokenizer: Any = None,
    export_dir: str | Path | None = None,
    eos_ids: list[int] | None = None,
    **engine_kwargs: Any,
) -> GenerationBackend:
    """``path``: an HF directory (used as is) or a Megatron checkpoint (exported first)."""
    if not vllm_available():
        raise ImportError(INSTALL_HINT)
    if device == "cpu":
        raise ValueError("the vllm backend runs on GPUs; use backend=megatron on CPU")
    from tower_megatron.models.convert import megatron_to_hf

    source = CheckpointSource(path)
    tok = build_generation_tokenizer(tokenizer, source)
    cleanup = None
    hf_dir = source.path
    if source.kind == "megatron":
        if export_dir is None:
            cleanup = Path(tempfile.mkdtemp(prefix="tower_vllm_"))
            export_dir = cleanup / "hf"
        hf_dir = megatron_to_hf(source.path, export_dir, log=lambda _: None)
    if eos_ids is None:
        eos_ids = sorted({int(tok.eod), *source.generation_eos_ids()})
    return VLLMGenerator(hf_dir, tok, eos_ids, tp=tp, pp=pp, cleanup=cleanup, **engine_kwargs)
