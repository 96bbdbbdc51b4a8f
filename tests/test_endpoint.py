"""The shared endpoint client (pspo_eval.endpoint) against the loopback fault server: which failures
are retried, Retry-After and backoff, the headers the SDK sends (keys, organisation, project, extra
headers, timeouts) from judge-spec options, Azure deployments, log-probabilities, and the import
direction (generation and the endpoint never import the judge)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from judge_fault_server import FaultServer
from judge_helpers import VERDICT, make_run, sample

from pspo_eval.endpoint.client import ChatClient, ChatReply
from pspo_eval.endpoint.config import Endpoint, EndpointOptions, parse_options
from pspo_eval.endpoint.retry import EndpointError, RetryPolicy
from pspo_eval.errors import PspoError
from pspo_eval.judge.specs import check_key, parse_judge_spec

FAST = RetryPolicy(max_retries=3, backoff_base=0.01)


def _chat(endpoint: Endpoint, *, timeout: float = 5.0, retry: RetryPolicy = FAST, **request) -> ChatReply:
    async def go() -> ChatReply:
        client = ChatClient(endpoint, timeout=timeout, retry=retry)
        try:
            return await client.chat([{"role": "user", "content": "hi"}], max_tokens=8, **request)
        finally:
            await client.aclose()

    return asyncio.run(go())


def _gaps(server: FaultServer) -> list[float]:
    times = [r["t"] for r in server.requests]
    return [b - a for a, b in zip(times, times[1:])]


# ---------------------------------------------------------------------------------------------
# Which failures are retried


@pytest.mark.parametrize("behaviour, kind", [
    ("429", "http"), ("408", "http"), ("500", "http"), ("503", "http"), ("drop", "connection"),
    ("malformed", "malformed"), ("empty_choices", "malformed"),
])
def test_transient_failures_are_retried(behaviour, kind):
    fault = ("429", 0) if behaviour == "429" else behaviour
    with FaultServer(default=("content", "fine")) as server:
        server.queue(fault)
        with pytest.raises(EndpointError) as info:
            _chat(Endpoint(server.base_url, "m"), retry=RetryPolicy(0))
        assert info.value.kind == kind and info.value.transient
        server.queue(fault)
        reply = _chat(Endpoint(server.base_url, "m"))
        assert len(server.requests) == 3
    assert reply.content == "fine" and (reply.usage.requests, reply.usage.retries) == (2, 1)
    assert reply.usage.prompt_tokens == 100  # only the reply that came back carried usage


@pytest.mark.parametrize("body, content_type", [
    (b"[1, 2]", "application/json"), (b'"text"', "application/json"), (b'{"choices": [1]}', "application/json"),
    (b'{"choices": [{"message": "hi"}]}', "application/json"), (b"<html>busy</html>", "text/html"),
])
def test_odd_200_bodies_are_malformed_and_retried(body, content_type):
    with FaultServer(default=("content", "fine")) as server:
        server.queue(("raw", body, content_type))
        with pytest.raises(EndpointError) as info:
            _chat(Endpoint(server.base_url, "m"), retry=RetryPolicy(0))
        assert info.value.kind == "malformed" and info.value.message.startswith("malformed reply")
        server.queue(("raw", body, content_type))
        assert _chat(Endpoint(server.base_url, "m")).usage.retries == 1


@pytest.mark.parametrize("behaviour, kind", [
    ("400", "http"), ("404", "http"), ("422", "http"), ("401", "auth"), ("403", "auth"),
])
def test_permanent_failures_are_not_retried(behaviour, kind, monkeypatch):
    monkeypatch.setenv("EP_KEY", "sk-endpoint-test-key-0123")
    with FaultServer(default=("content", "never")) as server:
        server.queue(behaviour)
        with pytest.raises(EndpointError) as info:
            _chat(Endpoint(server.base_url, "m", key_env="EP_KEY"))
        assert len(server.requests) == 1
    error = info.value
    assert (error.kind, error.status, error.usage.requests, error.usage.retries) == (kind, int(behaviour), 1, 0)
    assert error.message.startswith(f"HTTP {behaviour}: failure (Bearer ***")  # the echoed key is redacted
    assert "sk-endpoint" not in error.message


def test_retry_after_ms_and_retry_after_are_honoured_and_capped():
    with FaultServer(default=("content", "fine")) as server:
        server.queue(("429ms", 300), ("429", 30))
        reply = _chat(Endpoint(server.base_url, "m"), retry=RetryPolicy(3, backoff_base=0.01, retry_after_cap=0.5))
        first, second = _gaps(server)
    assert reply.usage.retries == 2
    assert first >= 0.29  # retry-after-ms: 300, not the 10 ms backoff
    assert 0.49 <= second < 5  # Retry-After: 30, capped at 0.5 s


def test_backoff_grows_with_jitter_up_to_its_cap_and_exhaustion_says_so():
    with FaultServer(default="500") as server:
        with pytest.raises(EndpointError) as info:
            _chat(Endpoint(server.base_url, "m"), retry=RetryPolicy(3, backoff_base=0.2, backoff_cap=0.3))
        gaps = _gaps(server)
    # attempt n waits ceiling/2 + U(0, ceiling/2), ceiling = min(cap, base * 2^n): 0.2, then 0.3 (capped)
    assert len(gaps) == 3 and gaps[0] >= 0.1 and gaps[1] >= 0.15 and gaps[2] >= 0.15 and max(gaps) < 3
    assert info.value.kind == "http" and info.value.message.endswith("(after 3 retries)")
    assert info.value.usage.requests == 4


def test_a_request_is_bounded_in_total_by_the_timeout_option():
    with FaultServer(hang_s=3.0, default="hang") as server:
        started = time.monotonic()
        with pytest.raises(EndpointError) as info:
            _chat(Endpoint(server.base_url, "m", options=EndpointOptions(timeout=0.3)), timeout=60,
                  retry=RetryPolicy(0))
    assert info.value.kind == "timeout" and info.value.message == "no reply within 0.3s"
    assert time.monotonic() - started < 2.5


# ---------------------------------------------------------------------------------------------
# What is sent: keys, SDK options, Azure


def test_without_a_key_no_authorization_is_sent_even_with_openai_variables_set(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-must-never-reach-this-server")
    monkeypatch.setenv("EP_KEY", "sk-the-right-key-4567")
    with FaultServer(default=("content", "fine")) as server:
        _chat(Endpoint(server.base_url, "m"))
        _chat(Endpoint(server.base_url, "m", key_env="EP_KEY"))
        keyless, keyed = server.requests
    assert keyless["headers"].get("Authorization") is None
    assert keyed["headers"].get("Authorization") == "Bearer sk-the-right-key-4567"
    assert keyless["body"]["max_tokens"] == 8 and "max_completion_tokens" not in keyless["body"]


def test_judge_spec_options_reach_the_server_and_secrets_stay_out_of_the_run(tmp_path, monkeypatch):
    from pspo_eval.judge.run import judge_run

    secret = "team-secret-value-0123456789"
    monkeypatch.setenv("TEAM_KEY", secret)
    run = make_run(tmp_path / "run", [sample("m", "p0", "3 + 4 = 7\n#### 7")])
    with FaultServer(verdict=VERDICT) as server:
        spec = (f"{server.spec()}?organization=org-9&project=proj-3&header.X-Team=evals"
                "&header.X-Api-Key=env:TEAM_KEY&timeout=7")
        summary = judge_run(run, [spec], "math_response_quality", backoff_base=0.01, timeout=5.0)
        sent = list(server.requests)
    assert summary.outcomes["fault-judge"]["ok"] == 1  # options never change the judge's identity
    assert len(sent) >= 3  # the probe's requests carry the options too
    for request in sent:
        headers = request["headers"]
        assert (headers["OpenAI-Organization"], headers["OpenAI-Project"]) == ("org-9", "proj-3")
        assert (headers["X-Team"], headers["X-Api-Key"]) == ("evals", secret)
        assert float(headers["X-Stainless-Read-Timeout"]) == 7.0  # the spec's timeout wins over --timeout
    manifest = json.loads((run / "manifest.json").read_text())
    stored = manifest["judging"]["fault-judge/math_response_quality"]["spec"]
    assert stored.endswith("?organization=org-9&project=proj-3&timeout=7.0&header.X-Team=evals"
                           "&header.X-Api-Key=env:TEAM_KEY")
    for path in run.rglob("*"):
        if path.is_file():
            assert secret not in path.read_text(errors="replace"), path
    monkeypatch.delenv("TEAM_KEY")
    with pytest.raises(PspoError, match=r"header X-Api-Key reads \$TEAM_KEY, which is not set"):
        check_key(parse_judge_spec(spec))


def test_an_azure_deployment_uses_its_path_api_version_and_api_key_header(monkeypatch):
    monkeypatch.setenv("AZ_KEY", "azure-key-0123456789")
    with FaultServer(default=("content", "fine")) as server:
        spec = parse_judge_spec(f"http://127.0.0.1:{server.port}::my-deploy?api_version=2024-10-21&key_env=AZ_KEY")
        assert spec.base_url == f"http://127.0.0.1:{server.port}" and spec.identity == "my-deploy"
        check_key(spec)
        reply = _chat(spec.endpoint())
        (request,) = server.requests
    assert reply.content == "fine"
    assert request["path"] == "/openai/deployments/my-deploy/chat/completions?api-version=2024-10-21"
    assert request["headers"]["api-key"] == "azure-key-0123456789"
    assert request["headers"].get("Authorization") is None
    with pytest.raises(PspoError, match="Azure OpenAI deployment and needs a key"):
        check_key(parse_judge_spec("https://res.openai.azure.com::d?api_version=2024-10-21"))


# ---------------------------------------------------------------------------------------------
# Log-probabilities


def test_logprobs_give_each_token_and_its_top_k_alternatives():
    with FaultServer(default=("content", "The answer is 7"), logprobs=True) as server:
        reply = _chat(Endpoint(server.base_url, "m"), logprobs=True, top_logprobs=3)
        plain = _chat(Endpoint(server.base_url, "m"))
        asked, not_asked = (r["body"] for r in server.requests)
    assert (asked["logprobs"], asked["top_logprobs"]) == (True, 3)
    assert "logprobs" not in not_asked and "top_logprobs" not in not_asked
    assert reply.tokens == [("The", -0.25), (" answer", -0.5), (" is", -0.75), (" 7", -1.0)]
    assert reply.top_logprobs is not None and len(reply.top_logprobs) == 4
    assert reply.top_logprobs[1] == {" answer": -0.5, " answer#1": -1.5, " answer#2": -2.5}
    assert plain.tokens is None and plain.top_logprobs is None


def test_the_judge_client_passes_logprobs_through():
    from pspo_eval.judge.client import JudgeClient

    async def ask(spec: str):
        client = JudgeClient(parse_judge_spec(spec), timeout=5)
        try:
            return await client.chat([{"role": "user", "content": "rate"}], max_tokens=4, logprobs=True,
                                     top_logprobs=2)
        finally:
            await client.aclose()

    with FaultServer(default=("content", "4"), logprobs=True) as server:
        reply = asyncio.run(ask(server.spec()))
    assert reply.content == "4" and reply.usage.requests == 1  # the judge's own Usage
    assert reply.reply.top_logprobs == [{"4": -0.25, "5": -1.25}]


def test_logprobs_are_none_when_the_endpoint_does_not_return_them():
    with FaultServer(default=("content", "The answer is 7")) as server:  # ignores logprobs
        reply = _chat(Endpoint(server.base_url, "m"), logprobs=True, top_logprobs=2)
    assert reply.content == "The answer is 7" and reply.tokens is None and reply.top_logprobs is None


# ---------------------------------------------------------------------------------------------
# Options and specs


def test_options_parse_round_trip_and_keep_the_spec_identity():
    options = parse_options("organization=org-1&project=p&timeout=2.5&header.X-Team=a%26b&header.X-Key=env:K")
    assert (options.organization, options.project, options.timeout) == ("org-1", "p", 2.5)
    assert options.headers == (("X-Team", "a&b"), ("X-Key", "env:K"))
    assert parse_options(options.describe()) == options
    spec = parse_judge_spec("openai:gpt-4o-mini?project=p1&key_env=MY_OPENAI_KEY")
    assert (spec.identity, spec.model, spec.key_env) == ("openai:gpt-4o-mini", "gpt-4o-mini", "MY_OPENAI_KEY")
    assert spec.spec == "openai:gpt-4o-mini?project=p1&key_env=MY_OPENAI_KEY" and spec.endpoint().openai_api
    url = parse_judge_spec("http://h:1/v1?x=1::m?organization=o")  # a "?" before the model is the URL's
    assert (url.base_url, url.model, url.options.organization) == ("http://h:1/v1", "m", "o")
    assert parse_judge_spec("http://h:1::m").options == EndpointOptions()


@pytest.mark.parametrize("spec, message", [
    ("openai:m?nope=1", "unknown endpoint option 'nope'"),
    ("openai:m?timeout=-1", "not a positive number of seconds"),
    ("openai:m?timeout=nan", "not a positive number of seconds"),
    ("openai:m?organization=", "has no value"),
    ("openai:m?project=a&project=b", "is given twice"),
    ("openai:m?project", "are not key=value pairs"),
    ("openai:m?header.Authorization=Bearer%20sk-abc", "looks like a credential"),
    ("openai:m?header.bad%20name=x", "is not an HTTP header name"),
    ("openai:m?key_env=sk-abcdefgh", "is not an environment variable name"),
    ("openai:m?api_version=2024-10-21", "api_version option is for Azure"),
    ("local?key_env=K", "a local judge takes no key"),
])
def test_bad_options_are_one_line_errors(spec, message):
    with pytest.raises(PspoError, match=message) as info:
        parse_judge_spec(spec)
    assert "\n" not in str(info.value) and "sk-abc" not in str(info.value)


def test_generation_and_the_endpoint_never_import_the_judge():
    code = ("import sys, pspo_eval.generation.openai_backend, pspo_eval.endpoint.client; "
            "print([m for m in sys.modules if m.startswith('pspo_eval.judge')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[1])
    assert out.stdout.strip() == "[]"
