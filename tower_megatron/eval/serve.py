"""``tower-megatron serve CONFIG``: an OpenAI-compatible HTTP server on a generation backend.

``POST /v1/chat/completions`` (chats rendered in the model family's turn format),
``POST /v1/completions`` (raw text), ``GET /v1/models``, ``GET /health``. The standard library's
``ThreadingHTTPServer`` takes requests on threads; one batcher thread owns the backend and is the
only caller of ``generate``, so concurrent requests never share a model call unless they were
batched on purpose: greedy requests with identical settings that arrive within ``batch_wait_ms``
share one ``generate`` call (each prompt's output is its own; greedy decoding of a prompt does not
depend on its batch-mates). Sampled requests run alone so a seed reproduces its tokens. Bad
requests get HTTP 4xx with an OpenAI-style JSON error body.
"""

from __future__ import annotations

import json
import queue
import signal
import threading
import time
import uuid
from concurrent.futures import Future
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tower_megatron.data.chat_format import ChatFormatError, check_messages
from tower_megatron.eval.config import ServeConfig
from tower_megatron.eval.prompts import ChatPrompter
from tower_megatron.generation import GenerationOutput, SamplingParams


class RequestError(ValueError):
    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.param, self.status = param, status


class Batcher:
    """Queues ``(prompt ids, params)`` from any thread; one worker thread runs ``generate``."""

    def __init__(self, backend, max_batch_size: int = 8, wait_s: float = 0.005) -> None:
        self.backend, self.max_batch_size, self.wait_s = backend, max(1, max_batch_size), wait_s
        self._queue: queue.Queue = queue.Queue()
        self._pending: list[tuple[list[int], SamplingParams, Future]] = []
        self.calls = 0  # generate() calls so far (tests and logs read it)
        self._thread = threading.Thread(target=self._loop, name="generate", daemon=True)
        self._thread.start()

    def submit(self, prompt: list[int], params: SamplingParams) -> GenerationOutput:
        future: Future = Future()
        self._queue.put((prompt, params, future))
        return future.result()

    def _next(self, timeout: float | None):
        if self._pending:
            return self._pending.pop(0)
        return self._queue.get(timeout=timeout)

    def _loop(self) -> None:
        from tower_megatron.runtime import cpu_shim

        if cpu_shim.is_installed():
            # The CPU runtime's CUDA->CPU rewriting is a torch function mode, and those are
            # per thread: this thread, which runs the model, needs its own.
            cpu_shim.CudaToCpuMode().__enter__()
        while True:
            first = self._next(None)
            batch = [first]
            if first[1].temperature == 0:
                keep = []  # requests set aside earlier that can join this batch
                for item in self._pending:
                    (batch if item[1] == first[1] and len(batch) < self.max_batch_size else keep).append(item)
                self._pending = keep
                deadline = time.monotonic() + self.wait_s
                while len(batch) < self.max_batch_size:
                    try:
                        item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                    except queue.Empty:
                        break
                    (batch if item[1] == first[1] else self._pending).append(item)
            try:
                self.calls += 1
                outputs = self.backend.generate([p for p, _, _ in batch], first[1])
                for (_, _, future), out in zip(batch, outputs, strict=True):
                    future.set_result(out)
            except Exception as exc:  # reported to each waiting request as HTTP 500
                for _, _, future in batch:
                    future.set_exception(exc)


def _number(
    body: dict,
    name: str,
    kind: type,
    default: Any,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> Any:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise RequestError(f"'{name}' must be {'a number' if kind is float else 'an integer'}", name)
    if (low is not None and (value <= low if low_open else value < low)) or (
        high is not None and value > high
    ):
        raise RequestError(f"'{name}' is out of range: {value}", name)
    return kind(value)


def _stops(body: dict) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(s, str) and s for s in stop) and len(stop) <= 4:
        return stop
    raise RequestError("'stop' must be a string or a list of up to 4 non-empty strings", "stop")


class Service:
    """Request bodies → OpenAI-style replies (no HTTP here, so it is testable directly)."""

    def __init__(self, backend, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.prompter = ChatPrompter.for_backend(backend, cfg.prompt)
        self.batcher = Batcher(backend, cfg.max_batch_size, cfg.batch_wait_ms / 1000.0)

    def _params(self, body: dict, chat: bool) -> SamplingParams:
        if body.get("stream"):
            raise RequestError("streaming is not supported", "stream")
        if body.get("n", 1) != 1:
            raise RequestError("only n=1 is supported", "n")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        return SamplingParams(
            max_new_tokens=_number(
                {"max_tokens": max_tokens}, "max_tokens", int, self.cfg.default_max_tokens, 1
            ),
            temperature=_number(body, "temperature", float, 1.0, 0.0, 2.0),
            top_p=_number(body, "top_p", float, 1.0, 0.0, 1.0, low_open=True),
            top_k=_number(body, "top_k", int, 0, 0),
            seed=_number(body, "seed", int, None),
            stop_token_ids=self.prompter.stop_token_ids if chat else [],
            stop_strings=(self.prompter.stop_strings if chat else []) + _stops(body),
        )

    def _reply(
        self, kind: str, choices: list[dict], prompt_tokens: int, outputs: list[GenerationOutput]
    ) -> dict:
        completion = sum(len(o.token_ids) for o in outputs)
        return {
            "id": f"{'chatcmpl' if kind == 'chat.completion' else 'cmpl'}-{uuid.uuid4().hex}",
            "object": kind,
            "created": int(time.time()),
            "model": self.cfg.model_name,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion,
                "total_tokens": prompt_tokens + completion,
            },
        }

    def chat_completions(self, body: dict) -> dict:
        try:
            messages = check_messages(body.get("messages"))
        except ChatFormatError as exc:
            param = "messages" if exc.index is None else f"messages[{exc.index}]"
            raise RequestError(f"{exc.where('messages')}: {exc}", param) from None
        params = self._params(body, chat=True)
        ids = self.prompter.token_ids(messages)
        out = self.batcher.submit(ids, params)
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": out.text},
            "finish_reason": out.finish_reason,
        }
        return self._reply("chat.completion", [choice], len(ids), [out])

    def completions(self, body: dict) -> dict:
        prompt = body.get("prompt")
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p for p in prompts):
            raise RequestError("'prompt' must be a non-empty string or list of strings", "prompt")
        params = self._params(body, chat=False)
        ids = [self.prompter.with_bos(self.prompter.backend.tokenizer.tokenize(p)) for p in prompts]
        outs = [self.batcher.submit(p, params) for p in ids]
        choices = [
            {"index": i, "text": o.text, "finish_reason": o.finish_reason, "logprobs": None}
            for i, o in enumerate(outs)
        ]
        return self._reply("text_completion", choices, sum(map(len, ids)), outs)


class Handler(BaseHTTPRequestHandler):
    server_version = "tower-megatron"
    service: Service  # set on the subclass built by make_server
    quiet = False

    def log_message(self, format: str, *args: Any) -> None:
        if not self.quiet:
            super().log_message(format, *args)

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, param: str | None = None) -> None:
        kind = "invalid_request_error" if status < 500 else "server_error"
        self._send(status, {"error": {"message": message, "type": kind, "param": param, "code": status}})

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, {"status": "ok"})
        elif self.path == "/v1/models":
            model = {"id": self.service.cfg.model_name, "object": "model", "owned_by": "tower-megatron"}
            self._send(200, {"object": "list", "data": [model]})
        else:
            self._error(404, f"no such endpoint: GET {self.path}")

    def do_POST(self) -> None:
        routes = {
            "/v1/chat/completions": self.service.chat_completions,
            "/v1/completions": self.service.completions,
        }
        if self.path not in routes:
            return self._error(404, f"no such endpoint: POST {self.path}")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return self._error(400, "bad Content-Length header")
        if length > self.service.cfg.max_request_bytes:
            return self._error(413, f"request body over {self.service.cfg.max_request_bytes} bytes")
        try:
            body = json.loads(self.rfile.read(length).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return self._error(400, f"request body is not valid JSON: {exc}")
        if not isinstance(body, dict):
            return self._error(400, "request body must be a JSON object")
        try:
            self._send(200, routes[self.path](body))
        except RequestError as exc:
            self._error(exc.status, str(exc), exc.param)
        except Exception as exc:  # a failing generate must not take the server down
            self._error(500, f"generation failed: {type(exc).__name__}: {exc}")

    def do_PUT(self) -> None:
        self._error(405, "method not allowed")

    do_DELETE = do_PATCH = do_PUT  # noqa: N815 - stdlib naming


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default listen backlog is 5: a burst of concurrent clients beyond it gets
    # its connections reset before a handler thread ever sees them.
    request_queue_size = 256


def make_server(backend, cfg: ServeConfig, quiet: bool = False) -> ThreadingHTTPServer:
    """A server bound to ``cfg.host:cfg.port`` (port 0: a free one; see ``server.server_address``)."""
    handler = type("BoundHandler", (Handler,), {"service": Service(backend, cfg), "quiet": quiet})
    return Server((cfg.host, cfg.port), handler)


def serve_main(config_path: str, overrides: list[str]) -> int:
    from tower_megatron.config.loader import ConfigError, load_config

    cfg = load_config(ServeConfig, config_path, overrides)
    if not cfg.checkpoint.path:
        raise ConfigError(f"checkpoint.path is not set ({config_path})")
    c = cfg.checkpoint
    if c.tensor_model_parallel_size * c.pipeline_model_parallel_size > 1:
        # Every model-parallel rank would have to join each generate() call; not built yet.
        raise ConfigError("serve runs one process: checkpoint.tensor/pipeline_model_parallel_size must be 1")
    backend = c.load()
    server = make_server(backend, cfg)
    host, port = server.server_address[:2]
    print(f"serve: {c.path} on http://{host}:{port}/v1", flush=True)

    def stop(signum, frame):  # SIGTERM (schedulers, `kill`) ends like Ctrl-C: close, exit 0
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    print("serve: stopped", flush=True)
    return 0
