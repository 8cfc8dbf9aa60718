"""``serve`` on a tiny Gemma 2 checkpoint over loopback: 16 concurrent greedy requests each get
exactly the reply the same request gets alone; bad requests get 4xx with a JSON error body and
the server keeps serving; the LLM-judge hook works against it as an OpenAI-compatible endpoint."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from tower_megatron.eval import judge
from tower_megatron.eval.config import ServeConfig
from tower_megatron.eval.serve import make_server

WORDS = ["river", "house", "light", "table", "green", "music", "stone", "paper"]


@pytest.fixture(scope="module")
def server(tiny_backend):
    cfg = ServeConfig(port=0, max_batch_size=8, batch_wait_ms=200.0, max_request_bytes=4096)
    srv = make_server(tiny_backend, cfg, quiet=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    host, port = srv.server_address[:2]
    yield srv, f"http://{host}:{port}"
    srv.shutdown()
    srv.server_close()


def _post(base: str, path: str, body, raw: bytes | None = None, method: str = "POST") -> tuple[int, dict]:
    data = raw if raw is not None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(
        base + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _requests() -> list[tuple[str, dict]]:
    reqs = []
    for i in range(16):
        text = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(1 + i % 5))
        if i % 4 == 3:
            reqs.append(("/v1/completions", {"prompt": f"{text} and", "max_tokens": 4, "temperature": 0}))
        else:
            # Most share their settings (so they can be batched together); two differ.
            reqs.append(
                (
                    "/v1/chat/completions",
                    {
                        "messages": [{"role": "user", "content": f"Say {text}."}],
                        "max_tokens": 3 if i in (5, 9) else 4,
                        "temperature": 0,
                    },
                )
            )
    return reqs


def _answer(reply: dict) -> tuple:
    choice = reply["choices"][0]
    return (
        choice.get("message", {}).get("content", choice.get("text")),
        choice["finish_reason"],
        reply["usage"],
    )


def test_concurrent_requests_match_solo_replies(server):
    srv, base = server
    reqs = _requests()
    solo = []
    for path, body in reqs:
        status, reply = _post(base, path, body)
        assert status == 200, reply
        solo.append(_answer(reply))
    assert len({s[0] for s in solo}) >= 6  # outputs differ, so a mix-up would show
    with ThreadPoolExecutor(max_workers=16) as pool:
        together = list(pool.map(lambda r: _post(base, *r), reqs))
    assert [status for status, _ in together] == [200] * 16
    assert [_answer(reply) for _, reply in together] == solo
    chat = together[0][1]
    assert chat["object"] == "chat.completion" and chat["choices"][0]["message"]["role"] == "assistant"
    assert together[3][1]["object"] == "text_completion"


class _Gated:
    """The real backend behind a gate: the first generate() waits until the test opens it, so the
    other requests are certainly queued by then (batch composition without any timing)."""

    def __init__(self, backend) -> None:
        self.backend, self.entered, self.gate, self.calls = backend, threading.Event(), threading.Event(), []

    @property
    def tokenizer(self):
        return self.backend.tokenizer

    def generate(self, prompts, params):
        self.entered.set()
        assert self.gate.wait(timeout=300)
        self.calls.append(len(prompts))
        return self.backend.generate(prompts, params)


def test_queued_greedy_requests_share_generate_calls(tiny_backend):
    """While one generate() runs, queued greedy requests with equal settings are batched (up to
    ``max_batch_size``), each still getting its own solo output."""
    from tower_megatron.eval.serve import Service
    from tower_megatron.generation import SamplingParams

    gated = _Gated(tiny_backend)
    batcher = Service(gated, ServeConfig(max_batch_size=8, batch_wait_ms=0.0)).batcher
    prompts = [[5 + i, 6 + 2 * i, 7] for i in range(16)]
    params = SamplingParams(max_new_tokens=2)
    solo = [out.token_ids for p in prompts for out in tiny_backend.generate([p], params)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        first = pool.submit(batcher.submit, prompts[0], params)
        assert gated.entered.wait(timeout=300)  # the worker is inside the first generate()
        rest = [pool.submit(batcher.submit, p, params) for p in prompts[1:]]
        while batcher._queue.qsize() < 15:  # all others queued (a count, not a time)
            threading.Event().wait(0.01)
        gated.gate.set()
        outputs = [first.result().token_ids] + [f.result().token_ids for f in rest]
    assert outputs == solo
    assert gated.calls == [1, 8, 7]


BAD = [
    ("/v1/chat/completions", None, b"{not json", 400, None),
    ("/v1/chat/completions", ["a list"], None, 400, None),
    ("/v1/chat/completions", {"max_tokens": 5}, None, 400, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "hi"}]}, None, 400, "messages[0]"),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "assistant", "content": "hi"}]},
        None,
        400,
        "messages[0]",
    ),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]}, None, 400, "messages[0]"),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0},
        None,
        400,
        "max_tokens",
    ),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": "ten"},
        None,
        400,
        "max_tokens",
    ),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "temperature": -1},
        None,
        400,
        "temperature",
    ),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "stream": True},
        None,
        400,
        "stream",
    ),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "n": 2}, None, 400, "n"),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "stop": [1]},
        None,
        400,
        "stop",
    ),
    ("/v1/completions", {"prompt": ""}, None, 400, "prompt"),
    ("/v1/completions", {"prompt": "x" * 5000}, None, 413, None),
    ("/v1/embeddings", {"input": "hi"}, None, 404, None),
]


@pytest.mark.parametrize("index", range(len(BAD)))
def test_bad_requests_get_4xx_json(server, index):
    _, base = server
    path, body, raw, status, param = BAD[index]
    got, reply = _post(base, path, body, raw)
    assert got == status
    assert reply["error"]["code"] == status and reply["error"]["message"]
    assert reply["error"]["param"] == param
    assert _post(base, "/health", None, raw=None, method="GET") == (200, {"status": "ok"})


def test_wrong_method_and_models(server):
    _, base = server
    assert _post(base, "/v1/chat/completions", {}, method="PUT")[0] == 405
    status, reply = _post(base, "/v1/models", None, method="GET")
    assert status == 200 and reply["data"][0]["id"] == "tower"


def test_judge_hook_against_serve(server):
    """The judge client talks to serve like to any OpenAI endpoint: each judgement's reply is exactly
    what serve answers for that judge prompt, both orders are asked, and a reply without a verdict
    label (a random tiny model never writes one) counts as unparsed, not as a tie."""
    _, base = server
    client = judge.ChatClient(base + "/v1", "judge", timeout_s=300)
    questions, answers, baselines = ["What is 2+2?"], ["4"], ["four"]
    records = judge.judge_answers(client, questions, answers, baselines, both_orders=True, max_tokens=4)
    for q, a, b, record in zip(questions, answers, baselines, records, strict=True):
        assert [j["model_is"] for j in record["judgements"]] == ["A", "B"]
        direct = [
            _post(
                base,
                "/v1/chat/completions",
                {"messages": judge.judge_messages(q, x, y), "max_tokens": 4, "temperature": 0.0},
            )[1]["choices"][0]["message"]["content"]
            for x, y in ((a, b), (b, a))
        ]
        assert [j["reply"] for j in record["judgements"]] == direct
        assert all(j["label"] is None for j in record["judgements"]) and record["score"] is None
    assert judge.summarize(records) == {
        "win_rate": None,
        "judged": 0,
        "unparsed": 1,
        "labels": {"unparsed": 2},
    }


def test_verdict_parsing_and_scores():
    assert judge.parse_verdict("A is longer... My final verdict is [[B>A]].") == "B>A"
    assert judge.parse_verdict("[[A>B]] at first, but on reflection [[A=B]]") == "A=B"
    assert judge.parse_verdict("Assistant A is better") is None
    assert [judge.judgement_score(lbl, True) for lbl in ("A>>B", "A>B", "A=B", "B>A", "B>>A")] == [
        1,
        1,
        0.5,
        0,
        0,
    ]
    assert [judge.judgement_score(lbl, False) for lbl in ("A>>B", "A>B", "A=B", "B>A", "B>>A")] == [
        0,
        0,
        0.5,
        1,
        1,
    ]
    records = [
        {"score": 1.0, "judgements": [{"label": "A>B"}, {"label": "B>>A"}]},
        {"score": 0.25, "judgements": [{"label": "A=B"}, {"label": "A>B"}]},
        {"score": None, "judgements": [{"label": None}, {"label": None}]},
    ]
    assert judge.summarize(records) == {
        "win_rate": 62.5,
        "judged": 2,
        "unparsed": 1,
        "labels": {"A=B": 1, "A>B": 2, "B>>A": 1, "unparsed": 2},
    }


def test_serve_verb_as_users_run_it(tiny_checkpoint):
    """``python -m tower_megatron serve CONFIG key=value`` starts, answers, and stops on SIGTERM."""
    import os
    import re
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tower_megatron",
            "serve",
            "configs/eval/serve.yaml",
            f"checkpoint.path={tiny_checkpoint}",
            "checkpoint.device=cpu",
            "port=0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_PORT")},
    )
    try:
        line = ""
        while not line.startswith("serve:"):
            line = proc.stdout.readline()
            assert line, "serve exited before printing its address"
        base = re.search(r"(http://127\.0\.0\.1:\d+)/v1", line).group(1)
        body = {"messages": [{"role": "user", "content": "Say river."}], "max_tokens": 3, "temperature": 0}
        status, reply = _post(base, "/v1/chat/completions", body)
        assert status == 200 and reply["usage"]["completion_tokens"] >= 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_unreachable_judge_keeps_answers_and_missing_key_stops_early(tmp_path, monkeypatch):
    from tower_megatron.config.loader import ConfigError
    from tower_megatron.eval.config import ChatSuite, EvalConfig, JudgeSection
    from tower_megatron.eval.runner import read_suites
    from tower_megatron.eval.suites import score_chat
    from tower_megatron.eval.testsets import read_chat
    from tower_megatron.runtime import free_port

    examples = read_chat("resource:eval/chat_demo.jsonl", limit=1)
    closed = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    result = score_chat(examples, ["4"], ChatSuite(judge=JudgeSection(base_url=closed, timeout_s=5)))
    assert result["overall"]["win_rate"] is None and "unreachable" in result["overall"]["error"]
    assert result["answers"] == ["4"]
    monkeypatch.delenv("TOWER_TEST_JUDGE_KEY", raising=False)
    cfg = EvalConfig()
    cfg.chat.files = ["resource:eval/chat_demo.jsonl"]
    cfg.chat.judge = JudgeSection(base_url=closed, api_key_env="TOWER_TEST_JUDGE_KEY")
    with pytest.raises(ConfigError, match="TOWER_TEST_JUDGE_KEY is not set"):
        read_suites(cfg)
