"""General chat by LLM-as-judge, M-ArenaHard style: for each prompt, a judge model compares the
evaluated model's answer with a baseline's and says which is better. Any OpenAI-compatible
``/v1/chat/completions`` endpoint works (``tower-megatron serve``, vLLM, a hosted API).

The judge sees both orders (model first, then baseline first) so a judge's preference for the
first answer cancels out; each judgement scores 1 (model better), 0.5 (tie) or 0 (baseline
better), and the win rate is their mean over parsed judgements.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass

from tower_megatron.eval.config import JudgeSection

JUDGE_INSTRUCTIONS = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI "
    "assistants to the user prompt displayed below. The prompt may be in any language; a good "
    "answer is helpful, correct, and written in the language the user asked in. Compare the two "
    "answers and output your final verdict as exactly one of these labels:\n"
    "[[A>>B]] Assistant A is significantly better\n[[A>B]] Assistant A is slightly better\n"
    "[[A=B]] Tie\n[[B>A]] Assistant B is slightly better\n[[B>>A]] Assistant B is significantly better"
)
VERDICT = re.compile(r"\[\[(A>>B|A>B|A=B|B>A|B>>A)\]\]")
# Score of assistant A for each label.
A_SCORE = {"A>>B": 1.0, "A>B": 1.0, "A=B": 0.5, "B>A": 0.0, "B>>A": 0.0}


class EndpointError(RuntimeError):
    pass


@dataclass
class ChatClient:
    """A minimal OpenAI-compatible chat client on the standard library (no SDK needed)."""

    base_url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 300.0

    def chat(self, messages: list[dict], max_tokens: int = 512, temperature: float = 0.0) -> str:
        body = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        request = urllib.request.Request(
            self.base_url.rstrip("/") + "/chat/completions",
            data=json.dumps(body).encode("utf-8"),
            headers={"Content-Type": "application/json"}
            | ({"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}),
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                reply = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:500]
            raise EndpointError(
                f"judge endpoint {self.base_url} answered HTTP {exc.code}: {detail}"
            ) from None
        except (urllib.error.URLError, TimeoutError) as exc:
            raise EndpointError(f"judge endpoint {self.base_url} unreachable: {exc}") from None
        try:
            return reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise EndpointError(
                f"judge endpoint {self.base_url}: unexpected reply {str(reply)[:300]}"
            ) from None


def client_from_config(cfg: JudgeSection) -> ChatClient | None:
    if not cfg.base_url:
        return None
    key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
    if cfg.api_key_env and not key:
        raise EndpointError(f"chat.judge.api_key_env: environment variable {cfg.api_key_env} is not set")
    return ChatClient(cfg.base_url, cfg.model, key, cfg.timeout_s)


def judge_messages(question: str, answer_a: str, answer_b: str) -> list[dict]:
    user = (
        f"<|User Prompt|>\n{question}\n\n<|The Start of Assistant A's Answer|>\n{answer_a}\n"
        f"<|The End of Assistant A's Answer|>\n\n<|The Start of Assistant B's Answer|>\n{answer_b}\n"
        "<|The End of Assistant B's Answer|>"
    )
    return [{"role": "system", "content": JUDGE_INSTRUCTIONS}, {"role": "user", "content": user}]


def parse_verdict(text: str) -> str | None:
    """The last verdict label in a judge's reply (judges reason first), or None."""
    found = VERDICT.findall(text)
    return found[-1] if found else None


def judgement_score(label: str | None, model_first: bool) -> float | None:
    """The evaluated model's score for one judge label, given which position its answer had."""
    if label is None:
        return None
    return A_SCORE[label] if model_first else 1.0 - A_SCORE[label]


def judge_answers(
    client: ChatClient,
    questions: list[str],
    answers: list[str],
    baselines: list[str],
    both_orders: bool = True,
    max_tokens: int = 512,
) -> list[dict]:
    """One record per question: the judge's replies, labels and the model's score (None if no
    label could be parsed)."""
    records = []
    for question, answer, baseline in zip(questions, answers, baselines, strict=True):
        judgements = []
        orders = [("model", answer, baseline)] + ([("baseline", baseline, answer)] if both_orders else [])
        for first, a, b in orders:
            reply = client.chat(judge_messages(question, a, b), max_tokens=max_tokens)
            label = parse_verdict(reply)
            score = judgement_score(label, first == "model")
            judgements.append(
                {"model_is": "A" if first == "model" else "B", "reply": reply, "label": label, "score": score}
            )
        scores = [j["score"] for j in judgements if j["score"] is not None]
        records.append({"judgements": judgements, "score": sum(scores) / len(scores) if scores else None})
    return records


def summarize(records: list[dict]) -> dict:
    scores = [r["score"] for r in records if r["score"] is not None]
    labels = Counter(j["label"] or "unparsed" for r in records for j in r["judgements"])
    return {
        "win_rate": 100.0 * sum(scores) / len(scores) if scores else None,
        "judged": len(scores),
        "unparsed": len(records) - len(scores),
        "labels": dict(sorted(labels.items())),
    }
