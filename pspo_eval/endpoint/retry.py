"""Which failures of a chat request are transient, and how long to wait before trying again.

Each failed attempt becomes one :class:`EndpointError` (:func:`classify`, from the ``openai`` SDK's
exception, whose response still carries the status and headers):

=========================================================  ===========  =======
what happened                                              ``kind``     retried
=========================================================  ===========  =======
429, 408, any 5xx                                          http         yes
no reply within the timeout                                timeout      yes
connection refused, dropped, or timed out while connecting connection   yes
a 200 whose body is not JSON, or has no choices/message    malformed    yes
401, 403: the key is wrong for every request alike         auth         no
any other 4xx (400 context too long, 404, 422, …)          http         no
=========================================================  ===========  =======

Waits (:class:`RetryPolicy`, a tenacity policy): the server's ``retry-after-ms`` / ``Retry-After``
(seconds or an HTTP date) when it sends one, capped at ``retry_after_cap``; otherwise exponential
backoff ``base * 2^n`` with equal jitter (half fixed, half uniform random), capped at
``backoff_cap``. The SDK's own retries are off, so these are the only ones.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timezone

import openai
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random_exponential,
)
from tenacity.wait import wait_base

from pspo_eval.endpoint.config import redact

TRANSIENT_STATUS = frozenset({408, 429})  # and every 5xx


@dataclass
class CallUsage:
    """What one call cost, over all its attempts (tokens only from the reply that came back)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    retries: int = 0


class EndpointError(Exception):
    """A failed attempt, or (raised by the client) a call that failed for good; ``kind`` as in the table above."""

    def __init__(self, kind: str, message: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.usage = CallUsage()

    @property
    def transient(self) -> bool:
        if self.kind in ("timeout", "connection", "malformed"):
            return True
        return self.kind == "http" and self.status is not None and (self.status in TRANSIENT_STATUS
                                                                     or self.status >= 500)


def classify(exc: BaseException, *, where: str, timeout: float, secrets: list[str]) -> EndpointError:
    """The :class:`EndpointError` for an exception raised by one SDK call (see the module docstring)."""
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        return EndpointError("auth" if status in (401, 403) else "http",
                             f"HTTP {status}: {redact(_detail(exc), secrets)}", status=status,
                             retry_after=parse_retry_after(exc.response.headers))
    if isinstance(exc, openai.APIConnectionError) or isinstance(exc, asyncio.TimeoutError):
        cause = exc.__cause__
        # The SDK wraps its HTTP transport's exception; its class name tells whether a connection
        # was ever made (naming the transport's classes would import an SDK internal).
        if type(cause).__name__ in ("ConnectError", "ConnectTimeout"):
            return EndpointError("connection", f"cannot connect to {where} ({_short(cause)})")
        if isinstance(exc, (openai.APITimeoutError, asyncio.TimeoutError)):
            return EndpointError("timeout", f"no reply within {timeout:g}s")
        return EndpointError("connection", f"connection to {where} failed ({_short(cause or exc)})")
    if isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError)):  # the SDK decoding a 200 body
        return EndpointError("malformed", "malformed reply body: not JSON", status=200)
    return EndpointError("malformed", f"malformed reply: {redact(_short(exc), secrets)}", status=200)


def _detail(exc: openai.APIStatusError) -> str:
    """The server's error message, short (the SDK has already unwrapped ``{"error": {...}}``)."""
    body = exc.body
    if isinstance(body, dict):
        body = body.get("message", body.get("detail", body))
    text = body if isinstance(body, str) else json.dumps(body, default=str) if body is not None else ""
    return " ".join(text.split())[:200] or exc.response.reason_phrase


def _short(exc: BaseException | None) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:120]


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms``, ``Retry-After: <seconds>`` or ``Retry-After: <HTTP date>``.

    ``headers`` is the response's (case-insensitive) header mapping; a value that parses as none
    of these is ignored.
    """
    ms = _seconds(headers.get("retry-after-ms"))
    if ms is not None:
        return ms / 1000.0
    raw = (headers.get("retry-after") or "").strip()
    seconds = _seconds(raw)
    if seconds is not None or not raw:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _seconds(text: str | None) -> float | None:
    try:
        value = float(text or "")
    except ValueError:
        return None
    return value if 0 <= value < float("inf") else None


class wait_retry_after(wait_base):  # noqa: N801 - named like tenacity's own wait strategies
    """Wait what the server asked for (capped) when it did, else ``fallback``."""

    def __init__(self, fallback: wait_base, cap: float):
        self.fallback = fallback
        self.cap = cap

    def __call__(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, EndpointError) and exc.retry_after is not None:
            return min(exc.retry_after, self.cap)
        return self.fallback(retry_state)


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, EndpointError) and exc.transient


@dataclass(frozen=True)
class RetryPolicy:
    """How many times to retry a transient failure and how long to wait (see the module docstring)."""

    max_retries: int = 4
    backoff_base: float = 1.0
    backoff_cap: float = 30.0
    retry_after_cap: float = 120.0

    def retrying(self, max_retries: int | None = None) -> AsyncRetrying:
        """A fresh tenacity controller for one call (``max_retries`` overrides the policy's)."""
        half, cap = self.backoff_base / 2, self.backoff_cap / 2
        backoff = wait_exponential(multiplier=half, max=cap) + wait_random_exponential(multiplier=half, max=cap)
        retries = self.max_retries if max_retries is None else max_retries
        return AsyncRetrying(stop=stop_after_attempt(retries + 1), wait=wait_retry_after(backoff, self.retry_after_cap),
                             retry=retry_if_exception(_is_transient), reraise=True)
