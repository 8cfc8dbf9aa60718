"""SFT and preference records → conversations rendered through the job's chat format, with the
assistant spans the loss mask is made of. Called by ``RecordProcessor.process`` for the ``sft``
and ``preference`` source kinds; runs in worker processes (no torch).

Accepted records (one JSON object a line; ``lang`` optional everywhere, ``id`` as for CPT):

- SFT, chat: ``{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}``
- SFT, NeMo-Aligner chat: ``{"system": str, "conversations": [{"from": "User"|"Assistant",
  "value": str}, ...], "mask": "User"}`` (ShareGPT's ``human``/``gpt`` are accepted as role names)
- SFT, prompt/completion: ``{"prompt": str|messages, "completion": str|messages}``
- preference, TRL: ``{"prompt": str|messages, "chosen": str|messages, "rejected": str|messages}``
  (message-list responses may repeat the prompt first, as in TRL's conversational datasets)
- preference, NeMo-Aligner: ``{"prompt": str, "chosen_response": str, "rejected_response": str}``;
  the prompt is taken as the user's text (a prompt that already holds chat markup would be
  wrapped twice: give plain text).

A conversation is an optional system message, then user and assistant turns alternating from a
user turn, ending with an assistant turn; an assistant turn may not be empty (or only whitespace).
Contents are Unicode-normalized (``filters.normalize``) but never stripped, whatever
``filters.strip`` says: the model is trained on exactly what the chat template renders at
inference (the Tower+ prompt ends with a space).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from tower_megatron.data.chat_format import CHAT_ROLES, ChatFormatError, check_roles
from tower_megatron.data.sft_tokens import MASK_EARLIER, MASK_FINAL, Spans

if TYPE_CHECKING:
    from tower_megatron.data.records import RecordProcessor, SourceSpec, _Err

CHAT_KINDS = ("sft", "preference")
NEMO_ROLES = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "system": "system",
}
UNTAGGED = "mul"  # output tag of records without a language ("multiple languages", ISO 639)


def chat_record(
    proc: RecordProcessor, obj: dict, src: SourceSpec, err: _Err
) -> tuple[str, list[str], list[str], list[Spans]]:
    """``(tag, dedup key parts, rendered texts, spans)``: one conversation for ``sft``, two
    (chosen, rejected) for ``preference``; spans are ``(start, end, mask value)``."""
    has_lang = obj.get("lang") is not None or src.lang is not None
    tag = proc._lang(obj, "lang", src.lang, err) if has_lang else UNTAGGED
    if src.kind == "sft":
        conversations = [sft_messages(proc, obj, err)]
    else:
        prompt, chosen, rejected = preference_parts(proc, obj, err)
        conversations = [[*prompt, chosen], [*prompt, rejected]]
    contents = "".join(m["content"] for c in conversations for m in c)
    proc._check_length(contents, tag)
    if has_lang:
        for conv in conversations:
            proc._check_lang(conv[-1]["content"], tag, tag)
    spans: list[Spans] = []
    texts: list[str] = []
    for conv in conversations:
        rendered = proc.chat.render(conv)
        n = len(rendered.spans)
        spans.append(
            [(s, e, MASK_FINAL if i == n - 1 else MASK_EARLIER) for i, (s, e) in enumerate(rendered.spans)]
        )
        texts.append(rendered.text)
    parts = [f"{m['role']}\x00{m['content']}" for c in conversations for m in c]
    return tag, [src.kind, tag, *parts], texts, spans


def message_list(proc: RecordProcessor, value: Any, name: str, err: _Err, strip: bool = False) -> list[dict]:
    """Checked ``{role, content}`` messages with normalized contents (stripped only for CPT's
    ``instruction`` kind with ``filters.strip``: SFT trains on exactly what the template renders)."""
    from tower_megatron.data.records import _Err

    if not isinstance(value, list) or not value:
        raise err(name, "expected a non-empty list of {role, content}", "bad_messages")
    out = []
    for i, msg in enumerate(value):
        if not isinstance(msg, dict):
            raise err(f"{name}[{i}]", f"expected an object, got {type(msg).__name__}", "bad_messages")
        role = msg.get("role")
        if role not in CHAT_ROLES:
            raise err(f"{name}[{i}].role", f"expected system, user or assistant, got {role!r}", "unknown_role")
        sub = _Err(err.path, err.line, prefix=f"{err.prefix}{name}[{i}].")
        out.append({"role": role, "content": proc._text(msg, "content", sub, strip=strip)})
    return out


def _check_conversation(
    messages: list[dict], name: str, err: _Err, names: Optional[list[str]] = None
) -> None:
    """Role order, an assistant turn last, no empty assistant turn; ``names[i]`` locates message i."""
    names = names or [f"{name}[{i}]" for i in range(len(messages))]
    try:
        check_roles(messages)
    except ChatFormatError as exc:
        raise err(f"{names[exc.index or 0]}.role", str(exc), "bad_roles") from None
    if not any(m["role"] == "assistant" for m in messages):
        raise err(name, "the conversation has no assistant turn (nothing to learn)", "no_assistant_turn")
    if messages[-1]["role"] != "assistant":
        raise err(f"{names[-1]}.role", "the conversation must end with an assistant turn", "bad_roles")
    for i, m in enumerate(messages):
        if m["role"] == "assistant" and not m["content"].strip():
            raise err(f"{names[i]}.content", "empty assistant turn", "empty_turn")


def sft_messages(proc: RecordProcessor, obj: dict, err: _Err) -> list[dict]:
    if "messages" in obj:
        messages = message_list(proc, obj["messages"], "messages", err)
        _check_conversation(messages, "messages", err)
        return messages
    if "conversations" in obj:
        return _nemo_messages(proc, obj, err)
    if "prompt" in obj or "completion" in obj:
        prompt = _prompt(proc, obj, err)
        completion = _response(proc, obj, "completion", prompt, err)
        messages = [*prompt, completion]
        _check_conversation(
            messages, "prompt", err, [*(f"prompt[{i}]" for i in range(len(prompt))), "completion"]
        )
        return messages
    raise err(
        "messages", "missing (an SFT record has messages, conversations (NeMo) or prompt + completion)",
        "missing_field",
    )  # fmt: skip


def _nemo_messages(proc: RecordProcessor, obj: dict, err: _Err) -> list[dict]:
    from tower_megatron.data.records import _Err

    mask = obj.get("mask", "User")
    if not isinstance(mask, str) or mask.lower() not in ("user", "human"):
        raise err("mask", f"{mask!r}: only 'User' (learn the assistant turns) is supported", "unsupported")
    turns = obj["conversations"]
    if not isinstance(turns, list) or not turns:
        raise err("conversations", "expected a non-empty list of {from, value}", "bad_messages")
    messages, names = [], []
    if obj.get("system") is not None:
        messages.append({"role": "system", "content": proc._text(obj, "system", err, strip=False)})
        names.append("system")
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise err(f"conversations[{i}]", f"expected an object, got {type(turn).__name__}", "bad_messages")
        who = turn.get("from")
        role = NEMO_ROLES.get(who.lower()) if isinstance(who, str) else None
        if role is None:
            raise err(f"conversations[{i}].from", f"{who!r} is not User or Assistant", "unknown_role")
        sub = _Err(err.path, err.line, prefix=f"conversations[{i}].")
        messages.append({"role": role, "content": proc._text(turn, "value", sub, strip=False)})
        names.append(f"conversations[{i}]")
    if messages[0]["role"] == "system" and not messages[0]["content"]:
        messages, names = messages[1:], names[1:]  # NeMo writes "system": "" for none
    _check_conversation(messages, "conversations", err, names)
    return messages


def _prompt(proc: RecordProcessor, obj: dict, err: _Err) -> list[dict]:
    if "prompt" not in obj:
        raise err("prompt", "missing", "missing_field")
    if isinstance(obj["prompt"], list):
        return message_list(proc, obj["prompt"], "prompt", err)
    return [{"role": "user", "content": proc._text(obj, "prompt", err, strip=False)}]


def _response(proc: RecordProcessor, obj: dict, name: str, prompt: list[dict], err: _Err) -> dict:
    """One assistant message from a string or a message list (which may repeat the prompt)."""
    if name not in obj:
        raise err(name, "missing", "missing_field")
    if not isinstance(obj[name], list):
        return {"role": "assistant", "content": proc._text(obj, name, err, strip=False)}
    messages = message_list(proc, obj[name], name, err)
    if messages[: len(prompt)] == prompt and len(messages) > len(prompt):
        messages = messages[len(prompt) :]
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        raise err(
            name, "expected one assistant message (optionally after the prompt's messages)", "bad_messages"
        )
    return messages[0]


def preference_parts(proc: RecordProcessor, obj: dict, err: _Err) -> tuple[list[dict], dict, dict]:
    prompt = _prompt(proc, obj, err)
    nemo = "chosen_response" in obj or "rejected_response" in obj
    names = ("chosen_response", "rejected_response") if nemo else ("chosen", "rejected")
    chosen = _response(proc, obj, names[0], prompt, err)
    rejected = _response(proc, obj, names[1], prompt, err)
    where = [*(f"prompt[{i}]" for i in range(len(prompt)))]
    _check_conversation([*prompt, chosen], "prompt", err, [*where, names[0]])
    _check_conversation([*prompt, rejected], "prompt", err, [*where, names[1]])
    if chosen["content"] == rejected["content"]:
        raise err(names[1], f"identical to {names[0]} (nothing to prefer)", "identical_responses")
    return prompt, chosen, rejected
