"""What an OpenAI-compatible endpoint is, the options a spec can set on it, and the secret handling.

An :class:`Endpoint` holds the *name* of the environment variable with its key, never the key:
the key is read when the client is built and lives only in that client's request headers.
:func:`redact` scrubs keys (and any ``Bearer …`` token) from every message that is stored or
printed. No ``openai`` import here, so parsing a spec stays cheap.

Options (:func:`parse_options`) are written like a URL query string after the model, e.g.
``openai:gpt-4o-mini?organization=org-1&project=proj_2&header.X-Team=evals``:

- ``organization``, ``project``: sent as ``OpenAI-Organization`` / ``OpenAI-Project``;
- ``header.NAME=VALUE``: an extra header on every request; ``header.NAME=env:VAR`` reads the value
  from ``$VAR`` (required for names that look like credentials: ``*auth*``, ``*key*``, ``*token*``,
  ``*secret*``, ``*cookie*``), so a secret header never appears in a spec that is stored;
- ``timeout``: seconds per request for this endpoint (wins over the caller's default);
- ``key_env``: the environment variable holding this endpoint's key;
- ``api_version``: an Azure OpenAI endpoint (``AsyncAzureOpenAI``); the model is the deployment;
- ``logprobs=K``: ask for the top-K log-probabilities of every reply token (1..20), from which a
  judge computes probability-weighted scores (``vllm:`` judges ask for 20 without being told).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from pspo_eval.errors import PspoError

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")  # an HTTP token (RFC 9110)
_SECRET_HEADER = re.compile(r"(?i)auth|key|token|secret|cookie")
_OPTION_HINT = (
    "options: organization, project, timeout, key_env, api_version, logprobs, header.NAME (e.g. MODEL?project=p1)"
)


@dataclass(frozen=True)
class EndpointOptions:
    """The SDK options a spec can set (see the module docstring); every field optional."""

    organization: str | None = None
    project: str | None = None
    timeout: float | None = None
    key_env: str | None = None
    api_version: str | None = None
    headers: tuple[tuple[str, str], ...] = ()  # (name, value or "env:VAR")
    logprobs: int | None = None  # ask for the top-K log-probabilities of every reply token (1..20)

    def describe(self) -> str:
        """The options as a query string (no secret: secret headers are only ever ``env:VAR``)."""
        pairs = [(k, getattr(self, k))
                 for k in ("organization", "project", "timeout", "key_env", "api_version", "logprobs")]
        pairs += [(f"header.{name}", value) for name, value in self.headers]
        return "&".join(f"{k}={quote(str(v), safe=':/._-')}" for k, v in pairs if v is not None)

    def header_values(self) -> dict[str, str]:
        """The extra headers with ``env:VAR`` values read now; an unset variable is a PspoError."""
        out = {}
        for name, value in self.headers:
            if value.startswith("env:"):
                var = value[4:]
                value = os.environ.get(var, "")
                if not value:
                    raise PspoError(f"header {name} reads ${var}, which is not set", f"export {var}=…")
            out[name] = value
        return out

    def secrets(self) -> list[str]:
        """Header values that came from the environment (scrubbed from messages like keys)."""
        return [os.environ[v[4:]] for _, v in self.headers if v.startswith("env:") and os.environ.get(v[4:])]


def parse_options(query: str) -> EndpointOptions:
    """Parse ``key=value&…`` (URL-encoded values) into :class:`EndpointOptions`; a bad option is a PspoError."""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise PspoError(f"endpoint options '{query}' are not key=value pairs joined by &", _OPTION_HINT) from None
    seen: set[str] = set()
    values: dict[str, Any] = {}
    headers: list[tuple[str, str]] = []
    for key, value in pairs:
        if key.lower() in seen:
            raise PspoError(f"endpoint option '{key}' is given twice", _OPTION_HINT)
        seen.add(key.lower())
        if not value:
            raise PspoError(f"endpoint option '{key}' has no value", _OPTION_HINT)
        if key.startswith("header."):
            headers.append(_header(key[len("header."):], value))
        elif key in ("organization", "project", "api_version"):
            values[key] = value
        elif key == "key_env":
            values[key] = _env_name(value, "key_env")
        elif key == "timeout":
            values[key] = _positive(value)
        elif key == "logprobs":
            if not value.isdigit() or not 1 <= int(value) <= 20:
                raise PspoError(f"endpoint option logprobs={value}: give the number of alternatives, 1 to 20",
                                "e.g. ?logprobs=20 (OpenAI and vLLM return at most 20)")
            values[key] = int(value)
        else:
            raise PspoError(f"unknown endpoint option '{key}'", _OPTION_HINT)
    return EndpointOptions(headers=tuple(headers), **values)


def _header(name: str, value: str) -> tuple[str, str]:
    if not _HEADER_NAME.fullmatch(name):
        raise PspoError(f"'{name}' is not an HTTP header name", "e.g. header.X-Team=evals")
    if value.startswith("env:"):
        _env_name(value[4:], f"header.{name}")
    elif _SECRET_HEADER.search(name):
        raise PspoError(f"header {name} looks like a credential and would be stored with the spec",
                        f"put it in an environment variable and write header.{name}=env:VAR")
    return name, value


def _env_name(value: str, what: str) -> str:
    if not ENV_NAME.fullmatch(value):
        raise PspoError(f"{what}: '{redact(value)}' is not an environment variable name",
                        "give the NAME of the variable that holds the secret, not the secret")
    return value


def _positive(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):  # also refuses nan
        raise PspoError(f"endpoint option timeout={value} is not a positive number of seconds", _OPTION_HINT)
    return seconds


@dataclass(frozen=True)
class Endpoint:
    """One chat endpoint: where, which model, whose key (by variable name), and its options."""

    base_url: str
    model: str
    key_env: str | None = None
    openai_api: bool = False  # OpenAI's own API, whose newer models only take max_completion_tokens
    options: EndpointOptions = field(default_factory=EndpointOptions)

    def api_key(self) -> str | None:
        return (os.environ.get(self.key_env) or None) if self.key_env else None

    def secrets(self) -> list[str]:
        key = self.api_key()
        return ([key] if key else []) + self.options.secrets()


def clean_url(url: str, *, default_path: str = "/v1", what: str = "URL", hint: str | None = None) -> str:
    """Drop credentials, query and fragment from a URL; add ``default_path`` when it has no path."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PspoError(f"{what} '{redact_url(url)}' is not an http(s) URL", hint or "e.g. http://127.0.0.1:8000/v1")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") or default_path, "", ""))


def redact_url(url: str) -> str:
    """The URL without its query, fragment and any credentials (``***@host``)."""
    try:
        parts = urlsplit(url)
        if parts.username or parts.password:
            netloc = parts.hostname or ""
            if parts.port:
                netloc += f":{parts.port}"
            return urlunsplit((parts.scheme, "***@" + netloc, parts.path, "", ""))
        return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    except ValueError:
        return "<unparsable URL>"


_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',;]+")
_SK = re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}")
_AUTH_HEADER = re.compile(r"(?i)(authorization\"?\s*[:=]\s*\"?)[^\"\n,}]+")


def redact(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """Remove API keys and Authorization values from a message before it is stored or printed."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    text = _BEARER.sub(r"\1***", text)
    text = _AUTH_HEADER.sub(r"\1***", text)
    return _SK.sub("sk-***", text)
