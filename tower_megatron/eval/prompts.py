"""Chats → prompt token ids in the model family's chat format (``tower_megatron.data.chat_format``,
the one definition training and exported chat templates use), ending with the model's turn opened
(``add_generation_prompt``), BOS prepended where the format has one, and the format's end-of-turn
marker as the stop."""

from __future__ import annotations

from dataclasses import dataclass

from tower_megatron.data.chat_format import CHAT_FORMATS, FAMILY_FORMATS, ChatFormat, encode_chat
from tower_megatron.data.templates import TRANSLATION_TEMPLATES
from tower_megatron.eval.config import PromptSection


def _single_id(tokenizer, text: str) -> int | None:
    try:
        ids = tokenizer.tokenize(text)
    except Exception:
        return None
    return ids[0] if len(ids) == 1 else None


def detect_chat_format(backend, configured: str) -> ChatFormat:
    """``configured`` unless "auto": the backend's ``chat_format`` attribute, else its model
    family's (Gemma 2: gemma, Qwen 2.5: chatml), else the format whose end-of-turn marker is one
    token of the tokenizer, else gemma."""
    if configured != "auto":
        return CHAT_FORMATS.get(configured)  # unknown name → error listing the known ones
    declared = getattr(backend, "chat_format", None)
    if declared:
        return CHAT_FORMATS.get(declared)
    arch = getattr(getattr(backend, "model_cfg", None), "arch", None)
    if arch in FAMILY_FORMATS:
        return CHAT_FORMATS.get(FAMILY_FORMATS[arch])
    for name in CHAT_FORMATS.names():
        if _single_id(backend.tokenizer, CHAT_FORMATS.get(name).turn_end) is not None:
            return CHAT_FORMATS.get(name)
    return CHAT_FORMATS.get("gemma")


@dataclass
class ChatPrompter:
    """Renders chats for one backend; every suite and ``serve`` go through it."""

    backend: object
    format: ChatFormat
    add_bos: bool
    system_prompt: str | None = None
    translation_template: str = "tower"

    @classmethod
    def for_backend(cls, backend, cfg: PromptSection) -> ChatPrompter:
        fmt = detect_chat_format(backend, cfg.chat_format)
        TRANSLATION_TEMPLATES.get(cfg.translation_template)  # fail early on an unknown name
        add_bos = cfg.add_bos if cfg.add_bos is not None else fmt.bos_token is not None
        return cls(backend, fmt, add_bos, cfg.system_prompt, cfg.translation_template)

    @property
    def chat_format(self) -> str:
        return self.format.name

    def with_bos(self, ids: list[int]) -> list[int]:
        """A plain-text prompt's ids (``serve``'s ``/v1/completions``) with BOS as chats get it."""
        bos = getattr(self.backend.tokenizer, "bos", None)
        return [bos, *ids] if self.add_bos and bos is not None and bos >= 0 else list(ids)

    def token_ids(self, messages: list[dict]) -> list[int]:
        if self.system_prompt and not any(m["role"] == "system" for m in messages):
            messages = [{"role": "system", "content": self.system_prompt}, *messages]
        return encode_chat(messages, self.backend.tokenizer, self.format, add_bos=self.add_bos)

    def user_turn(self, text: str) -> list[int]:
        return self.token_ids([{"role": "user", "content": text}])

    def translation_request(self, source: str, src_lang: str, tgt_lang: str) -> str:
        """The Tower+ model card prompt (``tower`` template) with the target left open."""
        return TRANSLATION_TEMPLATES.get(self.translation_template).render(source, "", src_lang, tgt_lang)

    @property
    def stop_strings(self) -> list[str]:
        return [self.format.turn_end]

    @property
    def stop_token_ids(self) -> list[int]:
        found = _single_id(self.backend.tokenizer, self.format.turn_end)
        return [found] if found is not None else []
