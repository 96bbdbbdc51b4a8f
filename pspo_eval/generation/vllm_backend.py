"""The `vllm` backend: vLLM's offline engine (``vllm.LLM``), imported lazily.

Every sample is its own request with ``n=1`` and its own seed (derived from the run seed, the problem
and the sample index), so sampled results do not depend on batch order, exactly as in the `hf`
backend. Prompts are rendered with the model's chat template by the tokenizer vLLM loads and passed
as token ids, so the prompt text stored with each sample is exactly what the engine saw.

vLLM needs a CUDA GPU; it cannot run on the CPU-only machines this project is tested on. The pieces
that do not need the engine (the request it builds, the mapping of its outputs) are plain functions
tested against vLLM's documented types.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from pspo_eval.errors import BackendMissing
from pspo_eval.generation.base import GenRequest, GenResult, Progress
from pspo_eval.models import resolve_model


def sampling_kwargs(request: GenRequest, stop_ids: Sequence[int]) -> dict[str, Any]:
    """Keyword arguments for ``vllm.SamplingParams`` for one sample (greedy when temperature is 0)."""
    greedy = request.temperature <= 0
    return {
        "n": 1,
        "temperature": 0.0 if greedy else float(request.temperature),
        "top_p": 1.0 if greedy else float(request.top_p),
        "top_k": -1,  # disabled: nucleus sampling only, as in the paper
        "max_tokens": int(request.max_new_tokens),
        "seed": int(request.seed) & 0x7FFFFFFF,
        "stop_token_ids": list(stop_ids),
        "skip_special_tokens": True,
    }


def build_requests(
    requests: Sequence[GenRequest], encode, stop_ids: Sequence[int], sampling_params_cls=None
) -> tuple[list[dict], list[Any]]:
    """The (prompts, sampling params) lists passed to ``LLM.generate``: one entry per sample."""
    prompts = [{"prompt_token_ids": list(encode(r.prompt))} for r in requests]
    params = [sampling_kwargs(r, stop_ids) for r in requests]
    if sampling_params_cls is not None:
        params = [sampling_params_cls(**p) for p in params]
    return prompts, params


def map_outputs(outputs: Sequence[Any], seconds: float = 0.0) -> list[GenResult]:
    """Map ``RequestOutput`` objects (in request order) to our results."""
    results = []
    share = seconds / max(1, len(outputs))
    for out in outputs:
        completion = out.outputs[0]
        reason = completion.finish_reason
        finish = "length" if reason == "length" else "stop" if reason in {"stop", "eos", None} else "error"
        results.append(
            GenResult(
                response=completion.text,
                finish_reason=finish,
                prompt_tokens=len(out.prompt_token_ids or []),
                completion_tokens=len(completion.token_ids or []),
                seconds=share,
            )
        )
    return results


class VLLMBackend:
    name = "vllm"

    def __init__(
        self,
        model_ref: str,
        *,
        dtype: str = "auto",
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        seed: int = 0,
        trust_remote_code: bool = False,
        **_: object,
    ):
        try:
            import vllm
        except ImportError as exc:
            raise BackendMissing("vllm", extra="vllm", what="the vllm backend") from exc
        from pspo_eval.generation.hf import stop_token_ids

        self._vllm = vllm
        self.path = resolve_model(model_ref)
        self.options = {
            "dtype": {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(dtype, dtype),
            "tensor_parallel_size": int(tensor_parallel_size),
            "gpu_memory_utilization": float(gpu_memory_utilization),
            "seed": int(seed),
            "trust_remote_code": bool(trust_remote_code),
        }
        if max_model_len:
            self.options["max_model_len"] = int(max_model_len)
        self.llm = vllm.LLM(model=self.path, **self.options)
        self.tokenizer = self.llm.get_tokenizer()

        class _ModelView:  # stop_token_ids() reads generation_config.eos_token_id when present
            generation_config = None

        self.stop_ids = stop_token_ids(self.tokenizer, _ModelView())

    def describe(self) -> dict:
        return {"backend": "vllm", "vllm_version": getattr(self._vllm, "__version__", "?"), **self.options}

    def render(self, messages: list[dict], problem, prompt_config) -> str:
        from pspo_eval.generation.prompts import render_prompt

        return render_prompt(problem, prompt_config, self.tokenizer)

    def encode(self, prompt: str) -> list[int]:
        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        return self.tokenizer(prompt, add_special_tokens=not has_template)["input_ids"]

    def generate(self, requests: Sequence[GenRequest], progress: Progress | None = None) -> list[GenResult]:
        prompts, params = build_requests(requests, self.encode, self.stop_ids, self._vllm.SamplingParams)
        t0 = time.perf_counter()
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        results = map_outputs(outputs, time.perf_counter() - t0)
        if progress:
            progress(len(results))
        return results

    def close(self) -> None:
        self.llm = None
