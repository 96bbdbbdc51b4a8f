"""The `openai` backend: any OpenAI-compatible chat server (vLLM, transformers serve, OpenAI, …).

Requests go through the shared endpoint client (:class:`pspo_eval.endpoint.client.ChatClient`, the
``openai`` SDK with our tenacity retries), so generation gets the judges' per-request timeout and
retries (429/5xx/timeouts, honouring ``Retry-After``) and their key handling: the key is read from
the environment variable named by ``--api-key-env`` and never stored. Concurrency is bounded here.
The server applies its own chat template; the prompt recorded with each sample is the JSON of the
messages sent. Token counts come from ``usage``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence

from pspo_eval.endpoint.config import Endpoint, clean_url
from pspo_eval.errors import PspoError
from pspo_eval.generation.base import GenRequest, GenResult, Progress


class OpenAIBackend:
    name = "openai"

    def __init__(
        self,
        model_ref: str,
        *,
        base_url: str | None = None,
        api_model: str | None = None,
        api_key_env: str | None = None,
        concurrency: int = 8,
        timeout: float = 120.0,
        max_retries: int = 6,
        **_: object,
    ):
        if not base_url or not api_model:
            raise PspoError("the openai backend needs --base-url and --api-model", "e.g. --base-url http://127.0.0.1:8000/v1 --api-model my-model")
        self.endpoint = Endpoint(clean_url(base_url, what="--base-url"), api_model, api_key_env)
        if api_key_env and not self.endpoint.api_key():
            raise PspoError(f"--api-key-env {api_key_env}: that environment variable is not set", f"export {api_key_env}=…")
        self.concurrency = max(1, int(concurrency))
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)

    def describe(self) -> dict:
        return {"backend": "openai", "base_url": self.endpoint.base_url, "api_model": self.endpoint.model,
                "concurrency": self.concurrency, "api_key_env": self.endpoint.key_env}

    def render(self, messages: list[dict], problem, prompt_config) -> str:
        return json.dumps(messages, ensure_ascii=False)

    def generate(self, requests: Sequence[GenRequest], progress: Progress | None = None) -> list[GenResult]:
        return asyncio.run(self._generate(list(requests), progress))

    async def _generate(self, requests: list[GenRequest], progress: Progress | None) -> list[GenResult]:
        from pspo_eval.endpoint.client import ChatClient
        from pspo_eval.endpoint.retry import EndpointError, RetryPolicy

        client = ChatClient(self.endpoint, timeout=self.timeout, retry=RetryPolicy(max_retries=self.max_retries))
        gate = asyncio.Semaphore(self.concurrency)

        async def one(req: GenRequest) -> GenResult:
            async with gate:
                t0 = time.perf_counter()
                try:
                    reply = await client.chat(
                        req.messages,
                        max_tokens=req.max_new_tokens,
                        temperature=req.temperature,
                        seed=req.seed,
                        top_p=req.top_p if req.temperature > 0 else None,
                    )
                except EndpointError as exc:
                    if exc.kind == "auth":  # the key is wrong for every request alike
                        raise PspoError(f"the server at {self.endpoint.base_url} refused the request ({exc.message})",
                                        f"check the key in ${self.endpoint.key_env}" if self.endpoint.key_env
                                        else "this server needs a key: pass --api-key-env NAME") from None
                    # Stored as finish_reason "error" and graded incorrect; a rerun does not redo it
                    # automatically, so the count of errors is reported with the results.
                    return GenResult("", "error", 0, 0, time.perf_counter() - t0, {"error": exc.message})
                finish = "length" if reply.finish_reason == "length" else "stop"
                result = GenResult(
                    reply.content or "",
                    finish,
                    reply.usage.prompt_tokens,
                    reply.usage.completion_tokens,
                    time.perf_counter() - t0,
                )
            if progress:
                progress(1)
            return result

        try:
            results = await asyncio.gather(*(one(r) for r in requests))
        finally:
            await client.aclose()
        return list(results)

    def close(self) -> None:
        pass
