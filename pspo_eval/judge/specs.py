"""Judge specs (``--judge``) and secret handling.

Three forms:

- ``openai:MODEL`` — the OpenAI API (``$OPENAI_BASE_URL`` or https://api.openai.com/v1), key from
  ``$OPENAI_API_KEY``;
- ``URL::MODEL`` — any OpenAI-compatible server (``vllm serve``, ``transformers serve``, …), e.g.
  ``http://gpu-node:8000/v1::Qwen/Qwen2.5-7B-Instruct``; a key, if the server wants one, from the
  environment variable named by ``--api-key-env``;
- ``local`` (or ``local:MODEL``) — ``transformers serve`` started on a free loopback port with the
  demo model (or MODEL), stopped afterwards;
- ``vllm:MODEL`` — vLLM's OpenAI-compatible server (``vllm serve``) started the same way, MODEL a
  directory, hub id or the demo model's name (``vllm`` alone: the demo model); its structured
  outputs enforce the verdict's JSON schema.

A judge's **identity** (part of every cache key, and its folder name under ``judgments/``) is the
model it runs, not where it runs: ``openai:gpt-4o-mini``, ``local:smollm2-135m-instruct``, or the
served model name for ``URL::MODEL``. A vLLM server moved to another host or port therefore reuses
its earlier verdicts, and the local judge's random port never invalidates anything.

Keys are read from the environment when a request is built and live only in that request's
headers; :func:`redact` scrubs them (and any ``Bearer …`` token) from every message the judge
subsystem stores or prints.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pspo_eval.errors import PspoError
from pspo_eval.store import safe_name

OPENAI_BASE_URL = "https://api.openai.com/v1"
_SPEC_HINT = "use openai:MODEL, URL::MODEL (e.g. http://localhost:8000/v1::Qwen/Qwen2.5-7B-Instruct), local or vllm:MODEL"


@dataclass(frozen=True)
class JudgeSpec:
    spec: str
    kind: str  # "openai" | "url" | "local" | "vllm"
    model: str  # the model name sent in requests ("local": resolved when the server starts)
    base_url: str | None  # None for "local" until the server runs
    key_env: str | None  # the environment variable holding the key (never the key itself)
    identity: str

    @property
    def label(self) -> str:
        """The file-system-safe folder name of this judge's judgments."""
        return safe_name(self.identity)

    def api_key(self) -> str | None:
        if not self.key_env:
            return None
        return os.environ.get(self.key_env) or None


def _clean_url(url: str) -> str:
    """Drop credentials, query and fragment from a URL; add ``/v1`` when no path is given."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PspoError(f"judge URL '{redact_url(url)}' is not an http(s) URL", _SPEC_HINT)
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    path = parts.path.rstrip("/")
    if path in ("",):
        path = "/v1"
    return urlunsplit((parts.scheme, netloc, path, "", ""))


def redact_url(url: str) -> str:
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


def parse_judge_spec(spec: str, *, api_key_env: str | None = None) -> JudgeSpec:
    """Parse one ``--judge`` value (see the module docstring); an unknown form is a one-line PspoError."""
    text = spec.strip()
    if not text:
        raise PspoError("empty --judge value", _SPEC_HINT)
    if text == "local" or text.startswith("local:"):
        from pspo_eval.models import DEMO_MODEL, model_label

        model = text.partition(":")[2].strip() or DEMO_MODEL
        return JudgeSpec(text, "local", model, None, None, f"local:{model_label(model)}")
    if text == "vllm" or text.startswith("vllm:"):
        from pspo_eval.models import DEMO_MODEL, model_label

        model = text.partition(":")[2].strip() or DEMO_MODEL
        return JudgeSpec(text, "vllm", model, None, None, f"vllm:{model_label(model)}")
    if "::" in text:
        url, _, model = text.rpartition("::")
        model = model.strip()
        if not model:
            raise PspoError(f"judge spec '{redact_url(url)}::' names no model", _SPEC_HINT)
        base = _clean_url(url)
        if api_key_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", api_key_env):
            raise PspoError(f"--api-key-env '{api_key_env}' is not an environment variable name",
                            "give the NAME of the variable that holds the key, not the key")
        identity = model_identity(model)
        return JudgeSpec(redact_url(url) + "::" + model, "url", model, base, api_key_env, identity)
    if text.startswith("openai:"):
        model = text.partition(":")[2].strip()
        if not model:
            raise PspoError("judge spec 'openai:' names no model", "e.g. --judge openai:gpt-4o-mini")
        base = _clean_url(os.environ.get("OPENAI_BASE_URL") or OPENAI_BASE_URL)
        return JudgeSpec(text, "openai", model, base, "OPENAI_API_KEY", f"openai:{model}")
    raise PspoError(f"unknown judge spec '{redact(text)}'", _SPEC_HINT)


def model_identity(model: str) -> str:
    """The served model name, shortened to its last path part when it is a local directory."""
    if model.startswith("/") or model.startswith("~"):
        return Path(model).name or model
    return model


def check_key(spec: JudgeSpec) -> None:
    """Fail early (one line) when a judge needs a key that is not set."""
    if spec.kind == "openai" and not spec.api_key():
        raise PspoError(f"judge {spec.identity} needs an API key, but $OPENAI_API_KEY is not set",
                        "export OPENAI_API_KEY=… (it is never written to disk)")
    if spec.kind == "url" and spec.key_env and not spec.api_key():
        raise PspoError(f"--api-key-env {spec.key_env}: that environment variable is not set",
                        f"export {spec.key_env}=…, or drop --api-key-env for a server without a key")


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


def known_secrets(*specs: JudgeSpec) -> list[str]:
    """The key values currently in the environment for these judges (to scrub them from messages)."""
    out = []
    for spec in specs:
        key = spec.api_key()
        if key:
            out.append(key)
    return out
