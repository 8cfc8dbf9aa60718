"""One chat format per model family: the single definition that both the training renderer and
the Jinja chat template written into exported tokenizers are generated from.

A :class:`ChatFormat` is declarative: role names, the turn start/end markers, BOS, how a system
message is carried and the generation prompt. From it come

- :meth:`ChatFormat.render`: ``messages`` → text plus the character spans of every assistant
  turn (its content and the end-of-turn marker: what SFT learns, so the model learns to stop);
- :meth:`ChatFormat.jinja`: the same markup as a Hugging Face chat template (optionally with
  ``{% generation %}`` blocks, so ``apply_chat_template(return_assistant_tokens_mask=True)``
  marks the same spans).

Decided once for every family:

- **no default system prompt** is ever injected (Qwen's official template adds one; ours does
  not, in training or at export, so the two cannot disagree);
- **content is never trimmed or otherwise changed** by the format (data cleaning, e.g.
  ``filters.strip`` of ``tower-megatron preprocess``, happens before rendering, not in it);
- roles: an optional ``system`` message first, then ``user`` and ``assistant`` strictly
  alternating, starting with ``user``; anything else is a :class:`ChatFormatError`;
- BOS is not part of the rendered text (sentencepiece models cannot parse a control token from
  text): the tokenizing side prepends the BOS id when ``bos_token`` is set; the Jinja template
  writes ``{{ bos_token }}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from tower_megatron.registry import Registry

CHAT_ROLES = ("system", "user", "assistant")


class ChatFormatError(ValueError):
    """A conversation the format cannot render; ``index`` is the offending message's position."""

    def __init__(self, message: str, index: Optional[int] = None, field: Optional[str] = "role") -> None:
        self.index, self.field = index, field
        super().__init__(message)

    def where(self, name: str = "messages") -> str:
        """The offending value's path: ``messages``, ``messages[1]`` or ``messages[1].role``."""
        if self.index is None:
            return name
        return f"{name}[{self.index}]" + (f".{self.field}" if self.field else "")


@dataclass(frozen=True)
class RenderedChat:
    """Rendered text (without BOS) and the ``[start, end)`` character spans of the assistant
    turns, in order (the last one is the final assistant turn)."""

    text: str
    spans: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class ChatFormat:
    """A turn is ``turn_start + role name + role_end + content + turn_end + separator``."""

    name: str
    user: str  # role names as written in the markup
    assistant: str
    system_role: Optional[str]  # None: no system turn; a system message merges into the first user turn
    turn_start: str
    turn_end: str  # the end-of-turn marker (the instruct model's stop token): learned with the answer
    role_end: str = "\n"
    separator: str = "\n"  # after turn_end; not learned
    system_separator: str = "\n\n"  # between merged system text and the first user message
    bos_token: Optional[str] = None

    def prefix(self, role: str) -> str:
        name = {"user": self.user, "assistant": self.assistant, "system": self.system_role}[role]
        return f"{self.turn_start}{name}{self.role_end}"

    def generation_prompt(self) -> str:
        return self.prefix("assistant")

    def render(self, messages: list[dict], add_generation_prompt: bool = False) -> RenderedChat:
        system, turns = check_roles(messages)
        parts: list[str] = []
        spans: list[tuple[int, int]] = []
        size = 0

        def emit(text: str) -> None:
            nonlocal size
            parts.append(text)
            size += len(text)

        if system is not None and self.system_role is not None:
            emit(self.prefix("system") + system + self.turn_end + self.separator)
        for i, msg in enumerate(turns):
            emit(self.prefix(msg["role"]))
            if msg["role"] == "assistant":
                start = size
                emit(msg["content"] + self.turn_end)
                spans.append((start, size))
                emit(self.separator)
            else:
                merged = system + self.system_separator if (i == 0 and system is not None and
                                                             self.system_role is None) else ""  # fmt: skip
                emit(merged + msg["content"] + self.turn_end + self.separator)
        if add_generation_prompt:
            emit(self.generation_prompt())
        return RenderedChat("".join(parts), tuple(spans))

    def __call__(self, messages: list[dict]) -> str:
        """The rendered text alone (what CPT's ``instruction`` sources train on)."""
        return self.render(messages).text

    def jinja(self, generation_markers: bool = False) -> str:
        """The Hugging Face chat template of this format (one line, no whitespace to control).

        ``generation_markers`` wraps each assistant content + end marker in ``{% generation %}``
        (transformers' assistant-mask extension); exported tokenizers get the plain template,
        since other template engines do not know that tag.
        """
        gen_open, gen_close = ("{% generation %}", "{% endgeneration %}") if generation_markers else ("", "")
        user, assistant = _lit(self.prefix("user")), _lit(self.prefix("assistant"))
        end, sep = _lit(self.turn_end), _lit(self.separator)
        out = ["{{ bos_token }}"] if self.bos_token else []
        out.append(
            "{% if messages and messages[0]['role'] == 'system' %}"
            "{% set system = messages[0]['content'] %}{% set loop_messages = messages[1:] %}"
            "{% else %}{% set system = none %}{% set loop_messages = messages %}{% endif %}"
        )
        if self.system_role is not None:
            out.append(
                f"{{% if system is not none %}}{{{{ {_lit(self.prefix('system'))} + system + {end} + {sep} }}}}"
                "{% endif %}"
            )
        merge = (
            f"{{% if loop.first and system is not none %}}{{{{ system + {_lit(self.system_separator)} }}}}{{% endif %}}"
            if self.system_role is None
            else ""
        )
        out.append(
            "{% for message in loop_messages %}"
            "{% if message['role'] not in ['user', 'assistant'] %}"
            "{{ raise_exception('Unknown role ' + message['role'] + '; a system message may only come first') }}"
            "{% endif %}"
            "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
            "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
            "{% endif %}"
            "{% if message['role'] == 'user' %}"
            f"{{{{ {user} }}}}{merge}{{{{ message['content'] + {end} + {sep} }}}}"
            "{% else %}"
            f"{{{{ {assistant} }}}}{gen_open}{{{{ message['content'] + {end} }}}}{gen_close}{{{{ {sep} }}}}"
            "{% endif %}"
            "{% endfor %}"
            f"{{% if add_generation_prompt %}}{{{{ {assistant} }}}}{{% endif %}}"
        )
        return "".join(out)


def check_roles(messages: list[dict]) -> tuple[Optional[str], list[dict]]:
    """``(system content or None, the user/assistant turns)``; :class:`ChatFormatError` unless an
    optional system message comes first and user/assistant alternate from a user turn on."""
    system = None
    turns = messages
    if messages and messages[0].get("role") == "system":
        system, turns = messages[0]["content"], messages[1:]
    offset = len(messages) - len(turns)
    for i, msg in enumerate(turns):
        role = msg.get("role")
        if role not in CHAT_ROLES:
            raise ChatFormatError(f"expected system, user or assistant, got {role!r}", i + offset)
        if role == "system":
            raise ChatFormatError("a system message may only be the first message", i + offset)
        want = "user" if i % 2 == 0 else "assistant"
        if role != want:
            raise ChatFormatError(
                f"expected a {want} turn (after an optional system message, user and assistant alternate, "
                f"starting with user), got {role}",
                i + offset,
            )
    return system, turns


def check_messages(messages: Any) -> list[dict]:
    """``messages`` as ``[{"role", "content"}]`` (other keys dropped) once it is a non-empty list of
    objects with string contents in the role order of :func:`check_roles`; else a
    :class:`ChatFormatError` whose :meth:`~ChatFormatError.where` names the offending value."""
    if not isinstance(messages, list) or not messages:
        raise ChatFormatError("expected a non-empty list of {role, content}", None, None)
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise ChatFormatError(f"expected an object, got {type(msg).__name__}", i, None)
        if not isinstance(msg.get("content"), str):
            raise ChatFormatError("expected a string", i, "content")
    out = [{"role": m.get("role"), "content": m["content"]} for m in messages]
    check_roles(out)
    return out


def _lit(text: str) -> str:
    """A Jinja string literal for ``text``."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


CHAT_FORMATS: Registry[ChatFormat] = Registry("chat format")

# Gemma 2: user/model turns, no system role (a system message is merged into the first user turn,
# as Gemma 3's official template does), BOS first, EOS of the instruct model = <end_of_turn>.
CHAT_FORMATS.register("gemma")(
    ChatFormat(
        name="gemma",
        user="user",
        assistant="model",
        system_role=None,
        turn_start="<start_of_turn>",
        turn_end="<end_of_turn>",
        bos_token="<bos>",
    )
)
# Qwen 2.5's ChatML, without the default system prompt of Qwen's official template.
CHAT_FORMATS.register("chatml")(
    ChatFormat(
        name="chatml",
        user="user",
        assistant="assistant",
        system_role="system",
        turn_start="<|im_start|>",
        turn_end="<|im_end|>",
    )
)

# Model families (``models/`` arch names) → their chat format.
FAMILY_FORMATS = {
    "gemma": "gemma",
    "gemma2": "gemma",
    "qwen2": "chatml",
    "qwen2.5": "chatml",
    "chatml": "chatml",
}


def format_for(name: str) -> ChatFormat:
    """A chat format by its name or a model family's (``gemma2`` → ``gemma``, ``qwen2`` → ``chatml``)."""
    return CHAT_FORMATS.get(FAMILY_FORMATS.get(name, name))


DEFAULT_CHAT_FORMAT = "gemma"  # what preprocessing renders chats in unless told (plain GPT runs too)


def family_format(arch: str) -> str:
    """The chat format a model family is trained and prompted in (``DEFAULT_CHAT_FORMAT`` for
    architectures without one, e.g. plain GPT)."""
    return FAMILY_FORMATS.get(arch, DEFAULT_CHAT_FORMAT)


def encode_chat(
    messages: list[dict],
    tokenizer: Any,
    chat_format: str | ChatFormat,
    add_generation_prompt: bool = True,
    add_bos: Optional[bool] = None,
) -> list[int]:
    """Token ids of a conversation rendered in ``chat_format`` (a format, a format's name or a
    model family's), by default ending with the model's turn opened. The rendered text holds no
    BOS (see the module docstring): the tokenizer's BOS id is put first when ``add_bos`` says so
    (default: when the format has a BOS token) and the tokenizer has one."""
    fmt = chat_format if isinstance(chat_format, ChatFormat) else format_for(chat_format)
    ids = list(tokenizer.tokenize(fmt.render(messages, add_generation_prompt=add_generation_prompt).text))
    if add_bos is None:
        add_bos = fmt.bos_token is not None
    bos = getattr(tokenizer, "bos", None) if add_bos else None
    return ([int(bos)] if bos is not None and bos >= 0 else []) + ids
