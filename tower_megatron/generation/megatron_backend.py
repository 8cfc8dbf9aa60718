"""Generation on our Megatron-Core models (Gemma 2, Qwen 2.5 specs) at any TP/PP layout.

A compact KV-cache decode loop over Megatron-Core's ``StaticInferenceContext``: the attention
modules themselves write keys/values into the context's cache and read the prefix back, exactly
as under Megatron's own static engine. Why not that engine's controller
(``TextGenerationController`` with ``StaticInferenceEngine(legacy=True)``): for a batch of prompts
of different lengths it prefills only up to the *shortest* prompt and feeds every further prompt
token one forward step at a time, its sampling cannot be seeded per call, and it reports
processed (not model) log-probs; the dynamic engine needs flash-attn (no CPU path). Here prompts
are left-padded and prefilled in one forward with a padding mask (our soft-capped attention ORs
it with its causal and sliding-window masks; RoPE only sees relative positions, so a left pad does
not change a row's attention), then each step decodes one token per row.

Pipeline parallelism: each rank runs its chunk(s) in pipeline order with point-to-point
send/recv of the hidden states (virtual stages included); the last stage samples and broadcasts
the tokens over the pipeline group, so every rank returns the same outputs. Tensor parallelism:
logits are gathered, every TP rank samples the same tokens from the same seeded generators.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from megatron.core import parallel_state as ps
from megatron.core.fusions.fused_softmax import FusedScaleMaskSoftmax
from megatron.core.inference.contexts import StaticInferenceContext
from megatron.core.inference.utils import InferenceMode
from megatron.core.models.common.embeddings.rope_utils import apply_rotary_pos_emb
from megatron.core.transformer.attention import Attention
from megatron.core.transformer.dot_product_attention import DotProductAttention
from torch import Tensor

from tower_megatron.config.model import ModelConfig
from tower_megatron.generation.base import GenerationBackend, GenerationOutput, SamplingParams
from tower_megatron.generation.sampling import StopTracker, check_params, next_tokens, row_generators
from tower_megatron.models.modules import SoftCapDotProductAttention


def _rotate_keys_once(attn: Attention):
    """Megatron's static KV cache stores keys *before* RoPE and re-rotates the whole cache at
    every decode step (one position per step is new). This stores rotated keys instead and
    tells the attention to rotate only the query — what Megatron's own flash-decode and dynamic
    paths do (``rotary_pos_emb = (q_pos_emb, None)``: "key rotary emb has been applied"). Same
    elementwise ops on the same rows, so the numbers are bit-identical; 3× fewer ops per step."""
    original = attn._adjust_key_value_for_inference

    def adjust(context, query, key, value, rotary_pos_emb, *args, **kwargs):
        if rotary_pos_emb is None or context is None or not context.is_static_batching():
            return original(context, query, key, value, rotary_pos_emb, *args, **kwargs)
        q_pos_emb, k_pos_emb = rotary_pos_emb
        start, end = context.sequence_len_offset, context.sequence_len_offset + key.size(0)
        if k_pos_emb is not None:
            key = apply_rotary_pos_emb(
                key,
                k_pos_emb[start:end],
                config=attn.config,
                mscale=attn._yarn_concentration_factor,
                cp_group=attn.pg_collection.cp,
            )
        query, key, value, _, mask_type, block_table = original(
            context, query, key, value, None, *args, **kwargs
        )
        q_pos_emb = q_pos_emb[start:end] if q_pos_emb is not None else None
        return query, key, value, (q_pos_emb, None), mask_type, block_table

    return adjust


def _honours_padding_mask(core_attention: torch.nn.Module) -> bool:
    if isinstance(core_attention, SoftCapDotProductAttention):
        return True
    softmax = getattr(core_attention, "scale_mask_softmax", None)
    return (
        type(core_attention) is DotProductAttention
        and isinstance(softmax, FusedScaleMaskSoftmax)
        and (softmax.window_size is None)
    )


def _unwrap(chunk: torch.nn.Module) -> torch.nn.Module:
    while hasattr(chunk, "module"):  # Megatron DDP / Float16Module
        chunk = chunk.module
    return chunk


class MegatronGenerator(GenerationBackend):
    """Generates with this rank's model chunks (one per virtual pipeline stage).

    Build it with :func:`tower_megatron.generation.load_generator` from a checkpoint, or with
    :meth:`from_model` on live training modules (GRPO): generation switches the chunks to eval
    mode, sequence parallelism off and no grad, and restores all of it afterwards, so a training
    step on the same modules works right after.
    """

    def __init__(
        self,
        model_chunks: list[torch.nn.Module],
        tokenizer: Any,
        model_cfg: ModelConfig,
        eos_ids: list[int] | None = None,
        max_batch_size: int = 64,
    ) -> None:
        self.chunks = [_unwrap(c) for c in model_chunks]
        self._tokenizer = tokenizer
        self.model_cfg = model_cfg
        self.vocab_size = int(model_cfg.vocab_size)
        self.eos_ids = list(eos_ids) if eos_ids is not None else [int(tokenizer.eod)]
        self.max_batch_size = max_batch_size
        self.config = self.chunks[0].config
        self.device = next(self.chunks[0].parameters()).device
        # Left padding needs attention that honours a padding mask in prefill *and* decode: our
        # soft-capped attention does, Megatron's local attention does without a window (its
        # softmax swaps any mask for its window mask), Transformer Engine's does not in decode
        # (no_mask). A model with other layers is batched by equal prompt length instead. Every
        # model-parallel rank must batch alike, and under PP such layers may live on one stage.
        local = not all(
            _honours_padding_mask(m.core_attention)
            for c in self.chunks
            for m in c.modules()
            if isinstance(m, Attention)
        )
        flag = torch.tensor([int(local)], device=self.device)
        if dist.is_initialized() and ps.get_model_parallel_group().size() > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=ps.get_model_parallel_group())
        self._equal_lengths_only = bool(flag.item())

    @classmethod
    def from_model(
        cls, model_chunks: list[torch.nn.Module], tokenizer: Any, model_cfg: ModelConfig | dict, **kwargs: Any
    ) -> MegatronGenerator:
        """A generator over live (possibly DDP-wrapped) training chunks; weights are shared."""
        if isinstance(model_cfg, dict):
            model_cfg = ModelConfig(**{k: v for k, v in model_cfg.items() if k != "fp8"})
        return cls(model_chunks, tokenizer, model_cfg, **kwargs)

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    # ------------------------------------------------------------------ model-state handling
    @contextlib.contextmanager
    def _inference_state(self) -> Iterator[None]:
        """eval mode, no grad, sequence parallelism off (one decoded token cannot be split across
        TP ranks); everything restored on exit, also after an exception."""
        training = [c.training for c in self.chunks]
        modules = [m for c in self.chunks for m in c.modules()]
        configs = {id(m.config): m.config for m in modules if hasattr(m, "config")}
        flipped = [o for o in [*modules, *configs.values()] if getattr(o, "sequence_parallel", None) is True]
        for obj in flipped:
            obj.sequence_parallel = False
        attentions = [m for m in modules if isinstance(m, Attention) and not self.config.flash_decode]
        try:
            for chunk in self.chunks:
                chunk.eval()
            for attn in attentions:  # an instance attribute shadowing the method, removed below
                attn._adjust_key_value_for_inference = _rotate_keys_once(attn)
            with torch.no_grad():
                yield
        finally:
            for attn in attentions:
                attn.__dict__.pop("_adjust_key_value_for_inference", None)
            for obj in flipped:
                obj.sequence_parallel = True
            for chunk, mode in zip(self.chunks, training, strict=True):
                chunk.train(mode)
            for chunk in self.chunks:
                chunk.set_input_tensor(None)

    # ------------------------------------------------------------------ pipeline forward
    def _forward(
        self, tokens: Tensor, positions: Tensor, mask: Tensor | None, context: StaticInferenceContext | None
    ) -> Tensor | None:
        """Runs this rank's chunks in pipeline order; the last stage returns logits [b, s', V]
        over the real vocabulary (s' = 1 under a KV-cache context), other stages None."""
        pp = ps.get_pipeline_model_parallel_world_size()
        stage = ps.get_pipeline_model_parallel_rank()
        batch, seq = tokens.shape
        out = None
        for v, chunk in enumerate(self.chunks):
            first = v == 0 and stage == 0
            last = v == len(self.chunks) - 1 and stage == pp - 1
            if not first:
                received = torch.empty(
                    (seq, batch, self.config.hidden_size),
                    dtype=self.config.pipeline_dtype,
                    device=self.device,
                )
                dist.recv(received, src=ps.get_pipeline_model_parallel_prev_rank())
                chunk.set_input_tensor(received)
            out = chunk(
                input_ids=tokens,
                position_ids=positions,
                attention_mask=mask,
                inference_context=context,
                runtime_gather_output=True,
            )
            if not last:
                dist.send(out.contiguous(), dst=ps.get_pipeline_model_parallel_next_rank())
        if stage != pp - 1:
            return None
        return out[..., : self.vocab_size].float()

    def _broadcast_from_last_stage(
        self, tensor: Tensor | None, shape: tuple[int, ...], dtype: torch.dtype
    ) -> Tensor:
        if ps.get_pipeline_model_parallel_world_size() == 1:
            return tensor
        if tensor is None:
            tensor = torch.empty(shape, dtype=dtype, device=self.device)
        dist.broadcast(
            tensor,
            src=ps.get_pipeline_model_parallel_last_rank(),
            group=ps.get_pipeline_model_parallel_group(),
        )
        return tensor

    # ------------------------------------------------------------------ teacher forcing
    def forward_logits(self, tokens: Tensor | list[list[int]]) -> Tensor:
        """Teacher-forced logits [b, s, V] (fp32, real vocabulary, causal, no cache) for equal-length
        rows; on every rank (under PP the last stage broadcasts them)."""
        tokens = torch.as_tensor(tokens, dtype=torch.long, device=self.device)
        positions = torch.arange(tokens.size(1), device=self.device).expand_as(tokens)
        with self._inference_state():
            logits = self._forward(tokens, positions, None, None)
            shape = (*tokens.shape, self.vocab_size)
            return self._broadcast_from_last_stage(logits, shape, torch.float32)

    # ------------------------------------------------------------------ generation
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[GenerationOutput]:
        check_params(params)
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        seed = self._agreed_seed(params)
        outputs: list[GenerationOutput | None] = [None] * len(prompts)
        for group in self._batches(prompts):
            generators = row_generators(seed, group, self.device) if params.temperature > 0 else None
            batch_out = self._generate_batch([prompts[i] for i in group], params, generators)
            for index, out in zip(group, batch_out, strict=True):
                outputs[index] = out
        return outputs  # type: ignore[return-value]

    def _batches(self, prompts: list[list[int]]) -> list[list[int]]:
        """Indices of the prompts in each forward batch (input order; equal lengths if needed)."""
        if self._equal_lengths_only:
            by_length: dict[int, list[int]] = {}
            for i, p in enumerate(prompts):
                by_length.setdefault(len(p), []).append(i)
            groups = list(by_length.values())
        else:
            groups = [list(range(len(prompts)))]
        size = self.max_batch_size
        return [g[i : i + size] for g in groups for i in range(0, len(g), size)]

    def _agreed_seed(self, params: SamplingParams) -> int:
        """The call's seed; without one, a fresh seed that all model-parallel ranks share."""
        if params.seed is not None:
            return int(params.seed)
        seed = torch.randint(0, 2**62, (1,), dtype=torch.long)
        if dist.is_initialized() and ps.get_model_parallel_group().size() > 1:
            seed = seed.to(self.device)
            dist.broadcast(seed, src=ps.get_model_parallel_src_rank(), group=ps.get_model_parallel_group())
        return int(seed.item())

    def _generate_batch(
        self, prompts: list[list[int]], params: SamplingParams, generators: list[torch.Generator] | None
    ) -> list[GenerationOutput]:
        batch = len(prompts)
        tracker = StopTracker(batch, params, self.eos_ids, self._tokenizer)
        if params.max_new_tokens == 0:
            return tracker.outputs()
        lengths = torch.tensor([len(p) for p in prompts], device=self.device)
        longest = int(lengths.max())
        total = longest + params.max_new_tokens
        pad = (longest - lengths).unsqueeze(1)  # left padding per row
        tokens = torch.zeros(batch, longest, dtype=torch.long, device=self.device)
        for row, prompt in enumerate(prompts):
            tokens[row, longest - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        padded = torch.arange(total, device=self.device).unsqueeze(0) < pad  # [b, total] True = pad
        positions = (torch.arange(longest, device=self.device).unsqueeze(0) - pad).clamp(min=0)
        any_pad = bool(padded.any())
        mask = None
        if any_pad:
            causal = torch.ones(longest, longest, dtype=torch.bool, device=self.device).triu(1)
            mask = (causal.unsqueeze(0) | padded[:, None, :longest]).unsqueeze(1)  # [b, 1, s, s]

        context = StaticInferenceContext(batch, total)
        self._reserve_score_buffer(batch, longest, total)
        with self._inference_state(), InferenceMode.active():
            logits = self._forward(tokens, positions, mask, context)
            context.sequence_len_offset = longest
            context.enable_decode_mode()
            for step in range(params.max_new_tokens):
                new, logprobs = self._sample(logits, params, generators, batch)
                tracker.update(new, logprobs)
                if tracker.all_done:
                    break
                offset = longest + step
                step_mask = padded[:, None, None, : offset + 1] if any_pad else None
                logits = self._forward(new.to(self.device).unsqueeze(1), offset - pad, step_mask, context)
                context.sequence_len_offset = offset + 1
        return tracker.outputs()

    def _reserve_score_buffer(self, batch: int, longest: int, total: int) -> None:
        """Megatron's local attention takes its [b·heads, sq, sk] score tensor from a global
        buffer that is re-allocated whenever it is too small — at every decode step, since sk
        grows by one. Growing it once to the largest size of this call avoids that."""
        heads = self.config.num_attention_heads // ps.get_tensor_model_parallel_world_size()
        numel = batch * heads * max(longest * longest, total)
        ps.get_global_memory_buffer().get_tensor((numel,), self.config.params_dtype, "mpu")

    def _sample(
        self,
        logits: Tensor | None,
        params: SamplingParams,
        generators: list[torch.Generator] | None,
        batch: int,
    ) -> tuple[Tensor, Tensor]:
        if logits is not None:
            tokens, logprobs = next_tokens(logits[:, -1, :], params, generators)
            packed = torch.stack([tokens.double(), logprobs.double()])
        else:
            packed = None
        packed = self._broadcast_from_last_stage(packed, (2, batch), torch.float64)
        return packed[0].long().cpu(), packed[1].float().cpu()
