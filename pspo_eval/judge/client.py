"""The judge's side of an OpenAI-compatible endpoint: :class:`JudgeClient` and the capability probe.

The requests themselves, their retries and the classification of failures live in
:mod:`pspo_eval.endpoint` (the ``openai`` SDK with tenacity; shared with the ``openai`` generation
backend). This module adds what is the judge's own:

- counters as the judge's :class:`~pspo_eval.judge.records.Usage` (which also counts re-asks and
  cost), on replies and on :class:`JudgeCallError`, the failure that ends an item as ``api_error``;
- a 401/403 stops the whole run with a one-line :class:`PspoError` naming the judge and the key's
  variable (the key is wrong for every item alike);
- :func:`probe_strategy`, which finds the structured-output mode the endpoint really honours.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from pspo_eval.endpoint.client import ChatClient, ChatReply
from pspo_eval.endpoint.retry import CallUsage, EndpointError, RetryPolicy, parse_retry_after
from pspo_eval.errors import PspoError
from pspo_eval.judge.config import STRATEGIES
from pspo_eval.judge.records import Usage
from pspo_eval.judge.specs import JudgeSpec

__all__ = ["STRATEGIES", "JudgeCallError", "JudgeClient", "JudgeReply", "ProbeResult", "now_iso",
           "parse_retry_after", "probe_strategy"]


class JudgeCallError(Exception):
    """A request that failed for good (after retries). ``kind``: timeout, connection, http, malformed."""

    def __init__(self, kind: str, message: str, *, status: int | None = None, usage: Usage | None = None):
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.message = message
        self.usage = usage or Usage()


@dataclass
class JudgeReply:
    """An endpoint reply with its counters as a judge :class:`Usage`; ``reply`` keeps the rest (log-probabilities)."""

    content: str | None
    finish_reason: str | None
    refusal: str | None
    usage: Usage
    latency_s: float
    reply: ChatReply

    @property
    def top_logprobs(self) -> list[dict[str, float]] | None:
        """Per reply token, its top alternatives (token -> logprob); None unless asked for and given."""
        return self.reply.top_logprobs

    @property
    def tokens(self) -> list[tuple[str, float]] | None:
        """The generated tokens with their log-probabilities; None unless asked for and given."""
        return self.reply.tokens


def _usage(counts: CallUsage) -> Usage:
    return Usage(**asdict(counts))


class JudgeClient:
    """One judge's endpoint: :class:`~pspo_eval.endpoint.client.ChatClient` with the judge's counters and errors."""

    def __init__(
        self,
        spec: JudgeSpec,
        *,
        base_url: str | None = None,
        model: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 4,
        backoff_base: float = 1.0,
        backoff_cap: float = 30.0,
        retry_after_cap: float = 120.0,
    ):
        self.spec = spec
        # Top-K log-probabilities to ask for (absolute rubrics: G-Eval expected scores). vLLM returns
        # them (up to 20); elsewhere only when the spec says ?logprobs=K, since some servers refuse it.
        self.top_logprobs = spec.options.logprobs or (20 if spec.kind == "vllm" else None)
        self.max_retries = int(max_retries)
        policy = RetryPolicy(self.max_retries, float(backoff_base), float(backoff_cap), float(retry_after_cap))
        self.endpoint = ChatClient(spec.endpoint(base_url=base_url, model=model), timeout=timeout, retry=policy)
        self.base_url = self.endpoint.base_url
        self.stats = self.endpoint.stats

    async def aclose(self) -> None:
        await self.endpoint.aclose()

    async def chat(self, messages: list[dict[str, str]], **request: Any) -> JudgeReply:
        """:meth:`ChatClient.chat <pspo_eval.endpoint.client.ChatClient.chat>` (same keywords), judge-typed."""
        try:
            reply = await self.endpoint.chat(messages, **request)
        except EndpointError as exc:
            if exc.kind == "auth":
                raise PspoError(
                    f"judge {self.spec.identity} refused the request ({exc.message})",
                    f"check the API key in ${self.spec.key_env}" if self.spec.key_env
                    else "this server needs a key: pass --api-key-env NAME with the key in $NAME",
                ) from None
            raise JudgeCallError(exc.kind, exc.message, status=exc.status, usage=_usage(exc.usage)) from None
        return JudgeReply(reply.content, reply.finish_reason, reply.refusal, _usage(reply.usage), reply.latency_s,
                          reply)


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
