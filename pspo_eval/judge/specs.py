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

Any form may end in endpoint options written like a URL query after the model,
``openai:gpt-4o-mini?organization=org-1&project=proj_2&header.X-Team=evals``, or
``https://RESOURCE.openai.azure.com::DEPLOYMENT?api_version=2024-10-21&key_env=AZURE_OPENAI_API_KEY``
for Azure OpenAI; :func:`pspo_eval.endpoint.config.parse_options` lists them. Options never change
a judge's identity.

A judge's **identity** (part of every cache key, and its folder name under ``judgments/``) is the
model it runs, not where it runs: ``openai:gpt-4o-mini``, ``local:smollm2-135m-instruct``, or the
served model name for ``URL::MODEL``. A vLLM server moved to another host or port therefore reuses
its earlier verdicts, and the local judge's random port never invalidates anything.

Keys are read from the environment when the judge's client is built and live only in its request
headers; :func:`redact` scrubs them (and any ``Bearer …`` token) from every message the judge
subsystem stores or prints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from pspo_eval.endpoint.config import (
    ENV_NAME,
    Endpoint,
    EndpointOptions,
    clean_url,
    parse_options,
    redact,
    redact_url,
)
from pspo_eval.errors import PspoError
from pspo_eval.store import safe_name

__all__ = ["JudgeSpec", "check_key", "known_secrets", "model_identity", "parse_judge_spec", "redact", "redact_url"]

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
    options: EndpointOptions = field(default_factory=EndpointOptions)  # from ``?key=value&…`` after the model

    @property
    def label(self) -> str:
        """The file-system-safe folder name of this judge's judgments."""
        return safe_name(self.identity)

    def api_key(self) -> str | None:
        if not self.key_env:
            return None
        return os.environ.get(self.key_env) or None

    def endpoint(self, *, base_url: str | None = None, model: str | None = None) -> Endpoint:
        """Where requests go (``base_url``/``model`` override the spec's: a local server's, once started)."""
        url = base_url or self.base_url
        if not url:
            raise ValueError(f"judge {self.identity} has no URL yet (start its server first)")
        return Endpoint(url.rstrip("/"), model or self.model, self.key_env, self.kind == "openai", self.options)


def _clean_url(url: str, default_path: str = "/v1") -> str:
    return clean_url(url, default_path=default_path, what="judge URL", hint=_SPEC_HINT)


def parse_judge_spec(spec: str, *, api_key_env: str | None = None) -> JudgeSpec:
    """Parse one ``--judge`` value: its form (see the module docstring), then any ``?options``."""
    text, sep, query = _split_options(spec.strip())
    options = parse_options(query) if sep else EndpointOptions()
    parsed = _parse_form(text, api_key_env=api_key_env, default_path="" if options.api_version else "/v1")
    return _with_options(parsed, options) if sep else parsed


def _split_options(text: str) -> tuple[str, str, str]:
    """(form, "?", options): options start at the first ``?`` after the last ``::`` (a URL may hold a ``?``)."""
    head, colons, tail = text.rpartition("::")
    form, sep, query = tail.partition("?")
    return head + colons + form, sep, query


def _with_options(spec: JudgeSpec, options: EndpointOptions) -> JudgeSpec:
    if options.api_version is not None and spec.kind != "url":
        raise PspoError("the api_version option is for Azure OpenAI endpoints",
                        "write https://RESOURCE.openai.azure.com::DEPLOYMENT?api_version=…&key_env=NAME")
    if options.key_env is not None and spec.kind == "local":
        raise PspoError("a local judge takes no key", "drop key_env=… from the spec")
    return replace(spec, spec=f"{spec.spec}?{options.describe()}", key_env=options.key_env or spec.key_env,
                   options=options)


def _parse_form(spec: str, *, api_key_env: str | None, default_path: str) -> JudgeSpec:
    """One form (``local[:MODEL]``, ``URL::MODEL``, ``openai:MODEL``), without options."""
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
        base = _clean_url(url, default_path)
        if api_key_env is not None and not ENV_NAME.fullmatch(api_key_env):
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
    """Fail early (one line) when a judge needs a key, or a header value, that is not set."""
    if spec.kind == "openai" and not spec.api_key():
        raise PspoError(f"judge {spec.identity} needs an API key, but ${spec.key_env} is not set",
                        f"export {spec.key_env}=… (it is never written to disk)")
    if spec.kind == "url" and spec.key_env and not spec.api_key():
        given = "key_env" if spec.options.key_env else "--api-key-env"
        raise PspoError(f"{given} {spec.key_env}: that environment variable is not set",
                        f"export {spec.key_env}=…, or drop {given} for a server without a key")
    if spec.options.api_version is not None and not spec.key_env:
        raise PspoError(f"judge {spec.identity} is an Azure OpenAI deployment and needs a key",
                        "add key_env=NAME after the deployment, or pass --api-key-env NAME")
    spec.options.header_values()  # a header read from an unset variable fails here, before any work


def known_secrets(*specs: JudgeSpec) -> list[str]:
    """The key (and secret header) values currently in the environment for these judges, to scrub them."""
    out = []
    for spec in specs:
        key = spec.api_key()
        if key:
            out.append(key)
        out += spec.options.secrets()
    return out
