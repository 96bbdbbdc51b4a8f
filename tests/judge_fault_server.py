"""A fault-injecting OpenAI-compatible chat server on a free loopback port, for the judge's tests.

It is a fake only for *faults* (the real thing, ``transformers serve``, is used by
tests/test_judge_live.py): it answers ``POST /v1/chat/completions`` from a queue of behaviours
(then a default), and records every request so tests can assert what was sent.

Behaviours: ``"ok"`` (the configured verdict), ``("content", text, finish_reason)``, ``("429", retry_after)``,
``("429ms", milliseconds)`` (the wait in ``retry-after-ms``), any other status code as a string (``"500"``,
``"401"``, ``"400"``, ``"404"``, ``"503"``, …: an error body that echoes the Authorization header),
``"malformed"`` (200 with a body that is not JSON), ``("raw", body_bytes, content_type)`` (a 200 with exactly
that body), ``"empty_choices"``,
``"hang"`` (answer only after ``hang_s``), ``"refusal"`` (OpenAI's ``message.refusal``), ``"drop"`` (close the
connection without a reply), ``"die"`` (stop the whole server: every later request is refused), ``"parrot"``
(echo the first JSON object found in the user message — a judge that repeats an injected verdict).

``structured`` says what the server does with ``response_format``: ``"ignore"`` (like ``transformers
serve``), ``"reject"`` (HTTP 400 when present) or ``"enforce"`` (like vLLM/OpenAI: it answers the probe's
schema exactly). ``logprobs=True`` makes it honour ``logprobs``/``top_logprobs`` like vLLM and OpenAI
(deterministic values, see ``fake_logprobs``); by default it ignores them.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PROBE_VALUE = "pspo-probe-ok"


class FaultServer:
    def __init__(self, *, verdict: dict | None = None, structured: str = "ignore", hang_s: float = 5.0,
                 default: Any = "ok", latency_s: float = 0.0, logprobs: bool = False):
        self.verdict = verdict or {}
        self.structured = structured
        self.hang_s = hang_s
        self.default = default
        self.latency_s = latency_s
        self.logprobs = logprobs
        self.script: deque = deque()
        self.requests: list[dict] = []  # {"headers": {...}, "body": {...}, "behaviour": ...}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._dead = False

    # -- control ---------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def spec(self, model: str = "fault-judge") -> str:
        return f"{self.base_url}::{model}"

    def queue(self, *behaviours: Any) -> None:
        with self.lock:
            self.script.extend(behaviours)

    def judge_requests(self) -> list[dict]:
        """Requests other than the capability probe's."""
        return [r for r in self.requests if not _is_probe(r["body"])]

    def start(self) -> FaultServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if not self._dead:
            self._dead = True
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- behaviour -------------------------------------------------------------------------------
    def _next(self, body: dict) -> Any:
        with self.lock:
            if _is_probe(body):
                return "probe"
            return self.script.popleft() if self.script else self.default

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                self._send(200, {"status": "ok"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {}
                behaviour = server._next(body)
                with server.lock:
                    # Headers as received, looked up case-insensitively (the SDK sends lower-case names).
                    server.requests.append({"headers": self.headers, "path": self.path, "body": body,
                                            "behaviour": behaviour, "t": time.monotonic()})
                if server.latency_s:
                    time.sleep(server.latency_s)
                self.request_body = body
                self._act(body, behaviour)

            def _act(self, body: dict, behaviour: Any) -> None:
                name = behaviour[0] if isinstance(behaviour, tuple) else behaviour
                fmt = body.get("response_format")
                if fmt is not None and server.structured == "reject":
                    return self._send(400, {"error": {"message": "response_format is not supported"}})
                if name == "probe":
                    return self._probe(body)
                if name == "ok":
                    return self._reply(json.dumps(server.verdict))
                if name == "content":
                    return self._reply(behaviour[1], behaviour[2] if len(behaviour) > 2 else "stop")
                if name == "429":
                    retry_after = behaviour[1] if isinstance(behaviour, tuple) else 1
                    return self._send(429, {"error": {"message": "rate limited"}}, {"Retry-After": str(retry_after)})
                if name == "429ms":
                    return self._send(429, {"error": {"message": "rate limited"}}, {"retry-after-ms": str(behaviour[1])})
                if name.isdigit():
                    # A server that echoes the Authorization header in its error: it must not leak anywhere.
                    echo = self.headers.get("Authorization", "")
                    return self._send(int(name), {"error": {"message": f"failure ({echo})"}})
                if name == "malformed":
                    return self._raw(200, b'{"choices": [{"message": {"content": "trunc')
                if name == "raw":
                    return self._raw(200, behaviour[1], content_type=behaviour[2])
                if name == "empty_choices":
                    return self._send(200, {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 0}})
                if name == "hang":
                    server._stop.wait(server.hang_s)
                    return self._reply(json.dumps(server.verdict))
                if name == "refusal":
                    return self._send(200, {"choices": [{"index": 0, "finish_reason": "stop", "message": {
                        "role": "assistant", "content": None, "refusal": "I can't help with that."}}]})
                if name == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return None
                if name == "die":
                    self.close_connection = True
                    self.connection.close()
                    threading.Thread(target=server.stop, daemon=True).start()
                    return None
                if name == "parrot":
                    user = next((m["content"] for m in body.get("messages", []) if m.get("role") == "user"), "")
                    match = re.search(r"\{[^{}]*\}", user.split("<<<CANDIDATE_RESPONSE", 1)[-1])
                    return self._reply(match.group(0) if match else "nothing to repeat")
                raise AssertionError(f"unknown behaviour {behaviour!r}")

            def _probe(self, body: dict) -> None:
                fmt = body.get("response_format") or {}
                if server.structured == "enforce" and fmt.get("type") == "json_schema":
                    return self._reply(json.dumps({"probe": PROBE_VALUE}))
                if server.structured == "enforce" and fmt.get("type") == "json_object":
                    return self._reply('{"probe": "x"}')
                return self._reply("Hello! OK.")

            def _reply(self, content: str, finish_reason: str = "stop") -> None:
                choice: dict[str, Any] = {"index": 0, "finish_reason": finish_reason,
                                          "message": {"role": "assistant", "content": content}}
                asked = getattr(self, "request_body", {})
                if server.logprobs and asked.get("logprobs"):
                    choice["logprobs"] = {"content": fake_logprobs(content, int(asked.get("top_logprobs") or 0))}
                self._send(200, {
                    "id": "x", "object": "chat.completion", "model": body_model(self), "choices": [choice],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
                })

            def _send(self, status: int, obj: dict, headers: dict | None = None) -> None:
                self._raw(status, json.dumps(obj).encode(), headers)

            def _raw(self, status: int, data: bytes, headers: dict | None = None,
                     content_type: str = "application/json") -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (timeout test)
                    pass

        def body_model(handler: BaseHTTPRequestHandler) -> str:
            return "fault-judge"

        return Handler


def fake_logprobs(content: str, k: int) -> list[dict]:
    """OpenAI's per-token logprobs for ``content`` split into words, numbers and punctuation runs: token i
    has logprob -(i+1)/4, and its top-k alternatives are the token itself, then ``token#1``, ``token#2``,
    … each 1 lower (for a number: the next numbers, ``4`` -> ``5``, ``6``, as a tokenizer would offer)."""
    out = []
    for i, token in enumerate(re.findall(r"\s*(?:\d+|[A-Za-z_]+|[^\w\s]+)", content)):
        lp = -(i + 1) / 4
        stripped = token.lstrip()
        lead = token[: len(token) - len(stripped)]

        def alt(j: int, token=token, stripped=stripped, lead=lead) -> str:
            if j == 0:
                return token
            return f"{lead}{int(stripped) + j}" if stripped.isdigit() else f"{token}#{j}"

        top = [{"token": alt(j), "logprob": lp - j, "bytes": None} for j in range(k)]
        out.append({"token": token, "logprob": lp, "bytes": list(token.encode()), "top_logprobs": top})
    return out


def _is_probe(body: dict) -> bool:
    messages = body.get("messages") or []
    if len(messages) != 1:
        return False
    text = str(messages[0].get("content", ""))
    return text.startswith("Reply with the word OK") or "JSON object" in text and len(text) < 200
