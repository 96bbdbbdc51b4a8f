"""The HTTP client for OpenAI-compatible chat endpoints: retries, timeouts, usage, the capability probe.

Why httpx and not the ``openai`` package: the judge must see every raw status code, ``Retry-After``
/ ``retry-after-ms`` header and malformed body itself, so that retries are counted, waits honour
the server and each failure becomes a typed outcome. With the ``openai`` client we would disable its
retries anyway and then unpick its exception hierarchy; one small, transparent code path over httpx
serves OpenAI, vLLM and ``transformers serve`` alike, and the fault-injection tests exercise exactly
the code that runs in production.

Failure handling, per request:

- 429, 408, 5xx, a timeout, a dropped connection, a body that is not JSON or has no choices:
  retried up to ``max_retries`` times, waiting ``Retry-After`` when the server says so (capped at
  ``retry_after_cap``), else exponential backoff ``base * 2^attempt`` with jitter (half fixed, half
  random), capped at ``backoff_cap``;
- 401/403: the key is wrong or missing for every item alike, so the run stops at once with a
  one-line :class:`PspoError`;
- other 4xx (400 context too long, 404, 422): not retried; the item ends as ``api_error``.

A request's total time is bounded by ``asyncio.wait_for`` as well as httpx's timeouts, so a server
that trickles bytes cannot hold a worker forever.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import httpx

from pspo_eval.errors import PspoError
from pspo_eval.judge.records import Usage
from pspo_eval.judge.specs import JudgeSpec, redact

STRATEGIES = ("json_schema", "json_object", "prompt")


class JudgeCallError(Exception):
    """A request that failed for good (after retries). ``kind``: timeout, connection, http, malformed."""

    def __init__(self, kind: str, message: str, *, status: int | None = None, usage: Usage | None = None):
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.message = message
        self.usage = usage or Usage()


@dataclass
class ChatReply:
    content: str | None
    finish_reason: str | None
    refusal: str | None
    usage: Usage
    latency_s: float


@dataclass
class ClientStats:
    """Counters for a whole run (benchmarks read ``http_seconds`` to separate server time from overhead)."""

    requests: int = 0
    retries: int = 0
    http_seconds: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)


def parse_retry_after(headers: httpx.Headers, *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms``, ``Retry-After: <seconds>`` or ``Retry-After: <HTTP date>``."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            value = float(ms) / 1000.0
            if value >= 0:
                return value
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    raw = raw.strip()
    try:
        value = float(raw)
        return value if value >= 0 else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    delta = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, delta)


class JudgeClient:
    """One OpenAI-compatible chat endpoint (see the module docstring)."""

    def __init__(
        self,
        spec: JudgeSpec,
        *,
        base_url: str | None = None,
        model: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 4,
        concurrency: int = 8,
        backoff_base: float = 1.0,
        backoff_cap: float = 30.0,
        retry_after_cap: float = 120.0,
    ):
        self.spec = spec
        self.base_url = (base_url or spec.base_url or "").rstrip("/")
        self.model = model or spec.model
        self.url = self.base_url + "/chat/completions"
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff_base = float(backoff_base)
        self.backoff_cap = float(backoff_cap)
        self.retry_after_cap = float(retry_after_cap)
        self.stats = ClientStats()
        self._rng = random.Random()
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
            limits=httpx.Limits(max_connections=max(1, concurrency), max_keepalive_connections=max(1, concurrency)),
            trust_env=False,  # never pick up proxies or netrc credentials implicitly
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def _secrets(self) -> list[str]:
        key = self.spec.api_key()
        return [key] if key else []

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = self.spec.api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.backoff_cap, self.backoff_base * (2**attempt))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def body(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        seed: int | None,
        response_format: dict | None,
        top_p: float | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": temperature}
        if top_p is not None and top_p < 1.0:
            body["top_p"] = top_p
        # OpenAI's newer models only take max_completion_tokens; other servers know max_tokens.
        body["max_completion_tokens" if self.spec.kind == "openai" else "max_tokens"] = max_tokens
        if seed is not None:
            body["seed"] = seed
        if response_format is not None:
            body["response_format"] = response_format
        return body

    async def chat(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        seed: int | None = 0,
        response_format: dict | None = None,
        max_retries: int | None = None,
        top_p: float | None = None,
    ) -> ChatReply:
        body = self.body(messages, max_tokens=max_tokens, temperature=temperature, seed=seed,
                         response_format=response_format, top_p=top_p)
        data, usage, latency = await self._post(body, self.max_retries if max_retries is None else max_retries)
        choice = data["choices"][0]
        message = choice.get("message") or {}
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            # Some servers return a list of content parts; keep the text parts.
            if isinstance(content, list):
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            else:
                content = json.dumps(content)
        refusal = message.get("refusal")
        return ChatReply(
            content=content,
            finish_reason=choice.get("finish_reason"),
            refusal=refusal if isinstance(refusal, str) and refusal.strip() else None,
            usage=usage,
            latency_s=latency,
        )

    async def _post(self, body: dict, max_retries: int) -> tuple[dict, Usage, float]:
        usage = Usage()
        last: JudgeCallError | None = None
        started = time.perf_counter()
        for attempt in range(max_retries + 1):
            usage.requests += 1
            self.stats.requests += 1
            if attempt:
                usage.retries += 1
                self.stats.retries += 1
            retry_after: float | None = None
            t0 = time.perf_counter()
            try:
                response = await asyncio.wait_for(
                    self._http.post(self.url, json=body, headers=self._headers()), timeout=self.timeout
                )
            except (asyncio.TimeoutError, httpx.TimeoutException) as exc:
                if isinstance(exc, httpx.ConnectTimeout):
                    last = JudgeCallError("connection", f"cannot connect to {self.base_url} (timed out)")
                else:
                    last = JudgeCallError("timeout", f"no reply within {self.timeout:g}s")
                self._count("timeout")
            except httpx.ConnectError as exc:
                last = JudgeCallError("connection", f"cannot connect to {self.base_url} ({_short_exc(exc)})")
                self._count("connect")
            except httpx.TransportError as exc:  # the connection dropped mid-request
                last = JudgeCallError("connection", f"connection to {self.base_url} failed ({_short_exc(exc)})")
                self._count("transport")
            else:
                self._count(str(response.status_code))
                status = response.status_code
                if status == 200:
                    data, problem = _decode(response)
                    if problem is None:
                        assert data is not None
                        _add_usage(usage, data.get("usage"))
                        latency = time.perf_counter() - t0
                        self.stats.http_seconds += latency
                        return data, usage, time.perf_counter() - started
                    last = JudgeCallError("malformed", f"malformed reply body: {problem}", status=status)
                elif status in (401, 403):
                    raise PspoError(
                        f"judge {self.spec.identity} refused the request (HTTP {status}: "
                        f"{self._detail(response)})",
                        f"check the API key in ${self.spec.key_env}" if self.spec.key_env
                        else "this server needs a key: pass --api-key-env NAME with the key in $NAME",
                    )
                elif status in (408, 429) or status >= 500:
                    retry_after = parse_retry_after(response.headers)
                    last = JudgeCallError("http", f"HTTP {status}: {self._detail(response)}", status=status)
                else:
                    self.stats.http_seconds += time.perf_counter() - t0
                    raise JudgeCallError("http", f"HTTP {status}: {self._detail(response)}", status=status,
                                         usage=usage)
            self.stats.http_seconds += time.perf_counter() - t0
            if attempt >= max_retries:
                break
            delay = min(retry_after, self.retry_after_cap) if retry_after is not None else self._backoff(attempt)
            await asyncio.sleep(delay)
        assert last is not None
        if usage.retries:
            last.message += f" (after {usage.retries} retr{'y' if usage.retries == 1 else 'ies'})"
        last.usage = usage
        raise last

    def _count(self, what: str) -> None:
        self.stats.statuses[what] = self.stats.statuses.get(what, 0) + 1

    def _detail(self, response: httpx.Response) -> str:
        """The server's error message, short and with secrets removed."""
        try:
            text = response.text
        except Exception:  # pragma: no cover - undecodable body
            text = ""
        try:
            obj = json.loads(text)
            if isinstance(obj, dict):
                err = obj.get("error", obj.get("detail", obj))
                if isinstance(err, dict):
                    err = err.get("message", err)
                text = str(err)
        except (ValueError, RecursionError):
            pass
        text = " ".join(text.split())[:200] or response.reason_phrase
        return redact(text, self._secrets())


def _short_exc(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:120]


def _decode(response: httpx.Response) -> tuple[dict | None, str | None]:
    try:
        data = response.json()
    except (ValueError, RecursionError, UnicodeDecodeError):
        return None, "not JSON"
    if not isinstance(data, dict):
        return None, "not a JSON object"
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        return None, "no choices"
    first = choices[0]
    if not isinstance(first, dict) or not isinstance(first.get("message"), dict):
        return None, "the first choice has no message"
    return data, None


def _add_usage(usage: Usage, raw: Any) -> None:
    if not isinstance(raw, dict):
        return
    for name in ("prompt_tokens", "completion_tokens"):
        value = raw.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**9:
            setattr(usage, name, getattr(usage, name) + value)


# ---------------------------------------------------------------------------------------------
# The capability probe

PROBE_VALUE = "pspo-probe-ok"
_PROBE_SCHEMA = {
    "type": "object",
    "properties": {"probe": {"type": "string", "enum": [PROBE_VALUE]}},
    "required": ["probe"],
    "additionalProperties": False,
}


@dataclass
class ProbeResult:
    strategy: str
    detail: str
    usage: Usage


async def probe_strategy(client: JudgeClient) -> ProbeResult:
    """Find the best structured-output mode this endpoint really honours.

    1. A plain request checks that the endpoint answers at all (an unreachable URL, a wrong model
       name or a refused key ends here with a one-line :class:`PspoError`).
    2. ``json_schema``: the schema only admits ``{"probe": "pspo-probe-ok"}`` and the prompt does not
       mention that value, so only a server that enforces the schema can produce it. A 400/422, or
       any other reply, means unsupported — including servers that silently ignore
       ``response_format`` (``transformers serve`` does).
    3. ``json_object``: supported when the whole reply is one JSON object (a server ignoring the
       field may pass by luck; harmless, as the prompt also carries the schema in that mode).
    4. Otherwise ``prompt``: the schema goes into the prompt and the tolerant parser does the rest.
    """
    usage = Usage()
    retries = min(client.max_retries, 2)
    try:
        reply = await client.chat([{"role": "user", "content": "Reply with the word OK."}], max_tokens=5,
                                  temperature=0.0, seed=0, max_retries=retries)
        usage.add(reply.usage)
    except JudgeCallError as exc:
        if exc.kind in ("connection", "timeout"):
            raise PspoError(f"judge {client.spec.identity} at {client.base_url} is unreachable: {exc.message}",
                            "start the server or check the URL, then rerun") from None
        raise PspoError(f"judge {client.spec.identity} at {client.base_url} failed a test request: {exc.message}",
                        "check the model name and the URL (an OpenAI-compatible /v1 base)") from None

    async def attempt(fmt: dict, prompt: str) -> tuple[str | None, str]:
        try:
            r = await client.chat([{"role": "user", "content": prompt}], max_tokens=24, temperature=0.0, seed=0,
                                  response_format=fmt, max_retries=retries)
        except JudgeCallError as exc:
            return None, exc.message
        usage.add(r.usage)
        return r.content, ""

    content, err = await attempt(
        {"type": "json_schema", "json_schema": {"name": "probe", "strict": True, "schema": _PROBE_SCHEMA}},
        "Reply with a JSON object.",
    )
    if content is not None and _strict_json(content) == {"probe": PROBE_VALUE}:
        return ProbeResult("json_schema", "the server enforced a JSON schema", usage)
    why_schema = err or "the reply did not follow the schema (response_format ignored?)"
    content, err = await attempt(
        {"type": "json_object"},
        f'Reply with a JSON object whose only key is "probe" and whose value is "{PROBE_VALUE}".',
    )
    if content is not None and isinstance(_strict_json(content), dict):
        return ProbeResult("json_object", f"json_schema unsupported ({why_schema}); json_object honoured", usage)
    why_object = err or "the reply was not a bare JSON object"
    return ProbeResult("prompt", f"json_schema unsupported ({why_schema}); json_object unsupported ({why_object})",
                       usage)


def _strict_json(text: str) -> Any:
    try:
        return json.loads(text.strip()[:10_000])
    except (ValueError, RecursionError):
        return None


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
