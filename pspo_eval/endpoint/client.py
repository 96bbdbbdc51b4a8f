"""One OpenAI-compatible chat endpoint through the ``openai`` SDK: a typed reply or a typed failure.

:class:`ChatClient` wraps one ``AsyncOpenAI`` client (``AsyncAzureOpenAI`` when the endpoint has an
``api_version``) built with the SDK's own retries off (``max_retries=0``): the retry policy is ours
(:mod:`.retry`, tenacity), so every attempt is counted in :class:`~.retry.CallUsage`, waits honour
the server's ``Retry-After``, and each failure ends as an :class:`~.retry.EndpointError` whose
``kind`` the judge and the generation backend turn into their own outcomes. The same client serves
OpenAI, Azure OpenAI, vLLM and ``transformers serve``, and the fault-injection tests exercise the
code that runs in production.

Besides the SDK's per-read timeout, each attempt is bounded in total by ``asyncio.wait_for``, so a
server that trickles bytes cannot hold a worker forever. The SDK is given its own HTTP client with
``trust_env=False``: no proxy or netrc credentials are picked up implicitly.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import openai

from pspo_eval.endpoint.config import Endpoint
from pspo_eval.endpoint.retry import CallUsage, EndpointError, RetryPolicy, classify
from pspo_eval.errors import PspoError


@dataclass
class ChatReply:
    """The first choice of a completion, with what the call cost."""

    content: str | None
    finish_reason: str | None
    refusal: str | None
    usage: CallUsage
    latency_s: float
    # Only when asked for (``logprobs=True``) and the endpoint returned them, else None: each
    # generated token with its log-probability, and per generated token the top-K alternatives.
    tokens: list[tuple[str, float]] | None = None
    top_logprobs: list[dict[str, float]] | None = None


@dataclass
class ClientStats:
    """Counters over the client's life (benchmarks read ``http_seconds`` to separate server time from overhead)."""

    requests: int = 0
    retries: int = 0
    http_seconds: float = 0.0


class ChatClient:
    """Chat completions against one :class:`Endpoint` (see the module docstring)."""

    def __init__(self, endpoint: Endpoint, *, timeout: float = 120.0, retry: RetryPolicy | None = None):
        self.endpoint = endpoint
        self.timeout = float(endpoint.options.timeout or timeout)
        self.retry = retry or RetryPolicy()
        self.stats = ClientStats()
        self._secrets = endpoint.secrets()
        self._keyless = endpoint.api_key() is None
        self._sdk = _sdk_client(endpoint, self.timeout)

    @property
    def base_url(self) -> str:
        return self.endpoint.base_url

    async def aclose(self) -> None:
        await self._sdk.close()

    async def chat(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        seed: int | None = 0,
        response_format: dict | None = None,
        top_p: float | None = None,
        logprobs: bool = False,
        top_logprobs: int | None = None,
        max_retries: int | None = None,
    ) -> ChatReply:
        """One completion, retried on transient failures; raises :class:`EndpointError` when it fails for good.

        ``logprobs=True`` (with ``top_logprobs=K`` alternatives per token) fills the reply's
        ``tokens`` and ``top_logprobs`` when the endpoint supports them.
        """
        params: dict[str, Any] = {"model": self.endpoint.model, "messages": messages, "temperature": temperature}
        params["max_completion_tokens" if self.endpoint.openai_api else "max_tokens"] = max_tokens
        optional = {"top_p": top_p if top_p is not None and top_p < 1.0 else None, "seed": seed,
                    "response_format": response_format, "logprobs": True if logprobs else None,
                    "top_logprobs": top_logprobs if logprobs else None}
        params.update({k: v for k, v in optional.items() if v is not None})
        if self._keyless:  # nothing to authenticate with: send no Authorization header at all
            params["extra_headers"] = {"Authorization": openai.Omit()}
        usage = CallUsage()
        started = time.perf_counter()
        try:
            choice: Any = await self.retry.retrying(max_retries)(self._attempt, params, usage)
        except EndpointError as exc:
            if usage.retries:
                exc.message += f" (after {usage.retries} retr{'y' if usage.retries == 1 else 'ies'})"
                exc.args = (exc.message,)
            exc.usage = usage
            raise
        return _reply(choice, usage, time.perf_counter() - started)

    async def _attempt(self, params: dict[str, Any], usage: CallUsage) -> Any:
        """One request: the first choice of a well-formed completion, or an EndpointError."""
        usage.requests += 1
        self.stats.requests += 1
        if usage.requests > 1:
            usage.retries += 1
            self.stats.retries += 1
        t0 = time.perf_counter()
        try:
            completion = await asyncio.wait_for(self._sdk.chat.completions.create(**params), self.timeout)
        except (openai.APIError, asyncio.TimeoutError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise classify(exc, where=self.base_url, timeout=self.timeout, secrets=self._secrets) from exc
        finally:
            self.stats.http_seconds += time.perf_counter() - t0
        choice = _first_choice(completion)
        _add_usage(usage, getattr(completion, "usage", None))
        return choice


def _sdk_client(endpoint: Endpoint, timeout: float) -> openai.AsyncOpenAI:
    opts = endpoint.options
    key = endpoint.api_key()
    if opts.api_version is not None and key is None:
        raise PspoError(f"the Azure OpenAI endpoint {endpoint.base_url} needs a key",
                        "name the variable that holds it: key_env=NAME after the model, or --api-key-env NAME")
    common: dict[str, Any] = dict(
        # Without a key the SDK would read $OPENAI_API_KEY, and send it to whatever server this is:
        # a placeholder keeps it from looking; chat() then omits the Authorization header.
        api_key=key or "no-key",
        organization=opts.organization,
        project=opts.project,
        default_headers=opts.header_values() or None,
        timeout=openai.Timeout(timeout, connect=min(timeout, 10.0)),
        max_retries=0,
        http_client=openai.DefaultAsyncHttpxClient(trust_env=False),
    )
    if opts.api_version is not None:
        return openai.AsyncAzureOpenAI(azure_endpoint=endpoint.base_url, api_version=opts.api_version, **common)
    return openai.AsyncOpenAI(base_url=endpoint.base_url, **common)


def _first_choice(completion: Any) -> Any:
    """The first choice; a 200 without one is malformed (and retried). The SDK does not validate replies."""
    choices = getattr(completion, "choices", None)
    if not isinstance(choices, list) or not choices:
        raise EndpointError("malformed", "malformed reply body: no choices", status=200)
    if not hasattr(getattr(choices[0], "message", None), "content"):  # absent, null, or not an object
        raise EndpointError("malformed", "malformed reply body: the first choice has no message", status=200)
    return choices[0]


def _add_usage(usage: CallUsage, raw: Any) -> None:
    for name in ("prompt_tokens", "completion_tokens"):
        value = getattr(raw, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**9:
            setattr(usage, name, getattr(usage, name) + value)


def _reply(choice: Any, usage: CallUsage, latency: float) -> ChatReply:
    message = choice.message
    refusal = getattr(message, "refusal", None)
    tokens, top = _logprobs(choice)
    return ChatReply(
        content=_text(getattr(message, "content", None)),
        finish_reason=getattr(choice, "finish_reason", None),
        refusal=refusal if isinstance(refusal, str) and refusal.strip() else None,
        usage=usage,
        latency_s=latency,
        tokens=tokens,
        top_logprobs=top,
    )


def _text(content: Any) -> str | None:
    """The reply text; some servers send a list of content parts (the text parts are kept)."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") if isinstance(p, dict) else getattr(p, "text", None) for p in content]
        return "".join(p for p in parts if isinstance(p, str))
    return json.dumps(content, default=str)


def _logprobs(choice: Any) -> tuple[list[tuple[str, float]] | None, list[dict[str, float]] | None]:
    """Per generated token (token, logprob) and {alternative: logprob}; None when absent or unreadable."""
    entries = getattr(getattr(choice, "logprobs", None), "content", None)
    if not isinstance(entries, list) or not entries:
        return None, None
    try:
        tokens = [(str(e.token), float(e.logprob)) for e in entries]
        top = [{str(alt.token): float(alt.logprob) for alt in (e.top_logprobs or [])} for e in entries]
    except (AttributeError, TypeError, ValueError):
        return None, None
    return tokens, top
