"""The few modules Megatron-Core lacks for Gemma 2 (and that make the local spec usable with sequence
parallelism). Each plugs into a stock ``TransformerLayer``/``GPTModel`` through a ``ModuleSpec`` or a
small subclass; none copies Megatron code.

Where each Gemma 2 feature lives:

* attention-logit soft-capping, sliding windows → :class:`SoftCapDotProductAttention`
  (its :class:`SoftCapMaskedSoftmax` replaces the parent's softmax; QKᵀ, GQA, dropout and the
  value product stay Megatron's)
* sandwich norms (post-attention / post-MLP) → :class:`PostNormRowParallelLinear` (and its TE twin)
* (1 + weight) RMSNorm → :class:`RMSNorm` with ``zero_centered_gamma``
* embedding ×√hidden and final-logit soft-capping → :class:`TowerGPTModel`
* ``query_pre_attn_scalar`` → ``TransformerConfig.softmax_scale``; GeGLU → ``activation_func``
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from megatron.core.models.gpt import GPTModel
from megatron.core.tensor_parallel.layers import RowParallelLinear
from megatron.core.transformer.dot_product_attention import DotProductAttention
from megatron.core.transformer.transformer_config import TransformerConfig
from megatron.core.transformer.utils import is_layer_window_attention
from torch import Tensor


@dataclass
class TowerTransformerConfig(TransformerConfig):
    """``TransformerConfig`` plus the Gemma 2 knobs Megatron-Core has no field for (None = off)."""

    attn_logit_softcapping: Optional[float] = None
    final_logit_softcapping: Optional[float] = None
    embedding_multiplier: Optional[float] = None


def gelu_tanh(x: Tensor) -> Tensor:
    """GeGLU's activation: HF's ``gelu_pytorch_tanh``."""
    return F.gelu(x, approximate="tanh")


# ---------------------------------------------------------------------------------------- norms
def _tag_sequence_parallel(module: torch.nn.Module, config: TransformerConfig) -> None:
    # Under sequence parallelism each TP rank normalises a different slice of the sequence, so
    # the norm's gradients must be all-reduced across TP; Megatron does that for parameters
    # carrying this attribute (untagged, training drifts silently: docs/cpu_runtime.md, "Traps").
    for param in module.parameters():
        param.sequence_parallel = config.sequence_parallel


class RMSNorm(torch.nn.Module):
    """RMSNorm computed in fp32, usable with sequence parallelism.

    ``zero_centered_gamma`` (Megatron's name; Gemma's convention) scales by ``1 + weight`` with the
    weight initialised to 0, and casts after the scale as HF Gemma does; otherwise the weight (init
    1) multiplies the already cast output, as HF Llama/Qwen do. Bit-for-bit the HF formulas.
    """

    def __init__(
        self,
        config: TransformerConfig,
        hidden_size: int,
        eps: float = 1e-6,
        zero_centered_gamma: Optional[bool] = None,
    ) -> None:
        super().__init__()
        self.eps = eps
        if zero_centered_gamma is None:
            zero_centered_gamma = config.layernorm_zero_centered_gamma
        self.zero_centered_gamma = zero_centered_gamma
        init = torch.zeros if zero_centered_gamma else torch.ones
        self.weight = torch.nn.Parameter(init(hidden_size, dtype=config.params_dtype))
        _tag_sequence_parallel(self, config)

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.zero_centered_gamma:
            return (normed * (1.0 + self.weight.float())).type_as(x)
        return self.weight * normed.type_as(x)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.eps}, zero_centered={self.zero_centered_gamma}"


class LayerNorm(torch.nn.LayerNorm):
    """``torch.nn.LayerNorm`` tagged for sequence parallelism (Megatron's wrapper refuses SP)."""

    def __init__(self, config: TransformerConfig, hidden_size: int, eps: float = 1e-5) -> None:
        if config.layernorm_zero_centered_gamma:
            raise ValueError("zero-centered gamma is only implemented for RMSNorm")
        super().__init__(hidden_size, eps=eps, dtype=config.params_dtype)
        _tag_sequence_parallel(self, config)


def build_norm(*, config: TransformerConfig, hidden_size: int, eps: float) -> torch.nn.Module:
    """A ``LayerNormBuilder`` for local specs: the config's normalization, SP-safe."""
    if config.normalization == "RMSNorm":
        return RMSNorm(config, hidden_size, eps)
    if config.normalization == "LayerNorm":
        return LayerNorm(config, hidden_size, eps)
    raise ValueError(f"unsupported normalization {config.normalization!r} (RMSNorm | LayerNorm)")


# ------------------------------------------------------------------------------------ attention
class SoftCapMaskedSoftmax(torch.nn.Module):
    """Replaces ``FusedScaleMaskSoftmax`` inside :class:`SoftCapDotProductAttention`.

    On already-scaled scores ``[b, np, sq, sk]``: ``cap·tanh(s/cap)`` (Gemma 2), then the causal
    mask (bottom-right aligned so KV-cache decoding works), an optional sliding window and any mask
    the caller passed (True = masked, e.g. document boundaries), then softmax in fp32.
    """

    def __init__(self, softcap: Optional[float], window: Optional[tuple[int, int]]) -> None:
        super().__init__()
        self.softcap = softcap
        self.window = window

    def _mask(self, sq: int, sk: int, device: torch.device) -> Tensor:
        q_pos = torch.arange(sk - sq, sk, device=device).unsqueeze(1)
        k_pos = torch.arange(sk, device=device).unsqueeze(0)
        masked = k_pos > q_pos
        if self.window is not None:
            left, right = self.window
            if left >= 0:
                masked |= k_pos < q_pos - left
            if right >= 0:
                masked |= k_pos > q_pos + right
        return masked

    def forward(
        self, scores: Tensor, mask: Optional[Tensor], softmax_offset: Optional[Tensor] = None
    ) -> Tensor:
        if softmax_offset is not None:
            raise NotImplementedError("soft-capped attention supports only the vanilla softmax")
        dtype = scores.dtype
        scores = scores.float()
        if self.softcap:
            scores = torch.tanh(scores / self.softcap) * self.softcap
        masked = self._mask(scores.size(2), scores.size(3), scores.device)
        if mask is not None:
            masked = masked | mask.bool()
        scores = scores.masked_fill(masked, torch.finfo(torch.float32).min)
        return torch.softmax(scores, dim=-1).to(dtype)


class SoftCapDotProductAttention(DotProductAttention):
    """Megatron's local ``DotProductAttention`` with Gemma 2's soft-capping and sliding windows.

    The window comes from ``config.window_size``/``window_attn_skip_freq`` (Megatron's fields, so
    TE-based families read the same ones); the cap from ``config.attn_logit_softcapping``; the
    ``query_pre_attn_scalar`` from ``softmax_scale``. Used by both the local and the TE Gemma 2
    specs: Transformer Engine's fused attention has no logit soft-capping.
    """

    def __init__(self, config: TransformerConfig, layer_number: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, layer_number, *args, **kwargs)
        sliding = is_layer_window_attention(config.window_size, config.window_attn_skip_freq, layer_number)
        self.scale_mask_softmax = SoftCapMaskedSoftmax(
            getattr(config, "attn_logit_softcapping", None), config.window_size if sliding else None
        )


# ---------------------------------------------------------------------------- sandwich norms
class _PostNormMixin:
    """Adds Gemma 2's post-norm to a row-parallel projection: ``norm(W·x + b)``.

    The norm sits inside ``linear_proj``/``linear_fc2`` so the stock ``TransformerLayer`` (norm →
    attention/MLP → residual add) gets the sandwich without a fork; its weight is checkpointed as
    ``…linear_proj.post_layernorm.weight`` (TP-replicated).
    """

    def _build_post_norm(self, norm_builder: Any, config: TransformerConfig, hidden_size: int) -> None:
        self.post_layernorm = norm_builder(
            config=config, hidden_size=hidden_size, eps=config.layernorm_epsilon
        )

    def forward(self, input_: Tensor, *args: Any, **kwargs: Any) -> tuple[Tensor, None]:
        output, bias = super().forward(input_, *args, **kwargs)  # type: ignore[misc]
        if bias is not None:  # skip_bias_add: the bias belongs before the norm
            output = output + bias
        return self.post_layernorm(output), None


class PostNormRowParallelLinear(_PostNormMixin, RowParallelLinear):
    """Local (CPU/GPU) ``RowParallelLinear`` followed by the config's norm."""

    def __init__(
        self, input_size: int, output_size: int, *, config: TransformerConfig, **kwargs: Any
    ) -> None:
        super().__init__(input_size, output_size, config=config, **kwargs)
        self._build_post_norm(build_norm, config, output_size)


@functools.cache
def te_post_norm_row_parallel_linear() -> type:
    """The Transformer Engine twin (defined on first use: TE imports only on a GPU machine)."""
    from megatron.core.extensions.transformer_engine import TENorm, TERowParallelLinear

    class TEPostNormRowParallelLinear(_PostNormMixin, TERowParallelLinear):
        def __init__(
            self, input_size: int, output_size: int, *, config: TransformerConfig, **kwargs: Any
        ) -> None:
            super().__init__(input_size, output_size, config=config, **kwargs)
            self._build_post_norm(TENorm, config, output_size)

    return TEPostNormRowParallelLinear


# ------------------------------------------------------------------------------------ the model
class TowerGPTModel(GPTModel):
    """``GPTModel`` with an embedding multiplier and final-logit soft-capping (Gemma 2).

    Both are no-ops unless the config sets them, so every family builds this class.
    """

    def __init__(self, config: TransformerConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        multiplier = getattr(config, "embedding_multiplier", None)
        if multiplier and hasattr(self, "embedding"):
            # HF Gemma multiplies by √hidden rounded to the weights' dtype (48.0 → 48 in bf16,
            # √3584 → 60.0); do the same so bf16 runs match HF too.
            self.embedding.register_forward_hook(functools.partial(_scale_embeddings, multiplier))

    def _scale_logits(self, logits: Tensor) -> Tensor:
        logits = super()._scale_logits(logits)
        cap = getattr(self.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits


def _scale_embeddings(multiplier: float, module: torch.nn.Module, inputs: Any, output: Tensor) -> Tensor:
    scale = torch.tensor(multiplier, dtype=module.word_embeddings.weight.dtype, device=output.device)
    return output * scale.to(output.dtype)
