"""The `hf` backend: transformers models run locally, batched, through the fast decode loop.

Llama-family models (Llama, Qwen2, Qwen3, Mistral) decode with :class:`FastDecoder`; any other
architecture falls back to ``model.generate`` with left padding (``decoder="generate"`` forces it).
Prompts are sorted by length before batching and results are returned in the original order.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Sequence
from functools import lru_cache

from pspo_eval.errors import PspoError
from pspo_eval.generation.base import GenRequest, GenResult, Progress
from pspo_eval.machine import cpu_flags, cpu_name
from pspo_eval.models import resolve_model

END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>")


@lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX512-BF16 or AMX-BF16)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str, device: str):
    """'auto' → bf16 on GPUs that support it (else fp16) and on CPUs with bf16 instructions, else fp32."""
    import torch

    names = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16", "half": "float16",
             "fp32": "float32", "float32": "float32", "float": "float32"}
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_supports_bf16() else torch.float32
    if dtype not in names:
        raise PspoError(f"unknown dtype '{dtype}'", "use auto, bf16, fp16 or fp32")
    return getattr(torch, names[dtype])


def _device_and_dtype(dtype: str, device: str):
    """The concrete device and torch dtype for the user's ``--dtype`` / ``--device`` (both may be auto)."""
    device = default_device() if device == "auto" else device
    return device, resolve_dtype(dtype, device)


def load_model(ref: str, *, dtype: str = "auto", device: str = "auto", trust_remote_code: bool = False):
    """Load (tokenizer, model, resolved path) from a model reference, safetensors only."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(ref)
    device, torch_dtype = _device_and_dtype(dtype, device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch_dtype, trust_remote_code=trust_remote_code, use_safetensors=True
        )
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PspoError(
            f"could not load model '{ref}': {first}",
            "give a directory with config.json and *.safetensors, or a hub id reachable from here",
        ) from exc
    model.to(device).eval()  # type: ignore[arg-type]
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, model, path


def load_light(ref: str, *, dtype: str = "auto", device: str = "auto"):
    """(tokenizer, model, path) without transformers' model classes, or None when the checkpoint
    needs them (see :mod:`pspo_eval.generation.light`; ``PSPO_EVAL_LOADER=transformers`` turns it off)."""
    from pspo_eval.generation.light import LightModel, LightTokenizer, light_eligible

    path = resolve_model(ref)
    if light_eligible(path) is not None:
        return None
    device, torch_dtype = _device_and_dtype(dtype, device)
    try:
        return LightTokenizer(path), LightModel(path, dtype=torch_dtype, device=device), path
    except (OSError, ValueError, KeyError) as exc:
        raise PspoError(f"could not load model '{ref}': {exc}", "check the checkpoint directory's files") from exc


def stop_token_ids(tokenizer, model, *, end_of_turn: bool = True) -> list[int]:
    """EOS ids from the generation config and tokenizer, plus (``end_of_turn``) the chat template's
    end-of-turn token, such as ``<|im_end|>``."""
    ids: set[int] = set()
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (gen_eos, tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    template = (getattr(tokenizer, "chat_template", None) or "") if end_of_turn else ""
    for token in END_OF_TURN_TOKENS:
        if token in template:
            tid = tokenizer.convert_tokens_to_ids(token)
            if isinstance(tid, int) and tid >= 0 and tid != tokenizer.unk_token_id:
                ids.add(tid)
    return sorted(ids)


class HFBackend:
    name = "hf"

    def __init__(
        self,
        model_ref: str,
        *,
        dtype: str = "auto",
        device: str = "auto",
        batch_size: int = 64,
        decoder: str = "auto",
        trust_remote_code: bool = False,
        threads: int | None = None,
        **_: object,
    ):
        import torch

        if threads:
            torch.set_num_threads(threads)
        light = None
        if decoder != "generate" and not trust_remote_code and os.environ.get("PSPO_EVAL_LOADER") != "transformers":
            light = load_light(model_ref, dtype=dtype, device=device)
        if light is not None:
            self.tokenizer, self.model, self.path = light
            self.loader = "light"
        else:
            self.tokenizer, self.model, self.path = load_model(
                model_ref, dtype=dtype, device=device, trust_remote_code=trust_remote_code
            )
            self.loader = "transformers"
        self.batch_size = max(1, int(batch_size))
        self.stop_ids = stop_token_ids(self.tokenizer, self.model)
        self.decoder = None
        if decoder not in {"auto", "fast", "generate"}:
            raise PspoError(f"unknown decoder '{decoder}'", "use auto, fast or generate")
        from pspo_eval.generation.engine import FastDecoder, supports

        if decoder != "generate" and supports(self.model):
            self.decoder = FastDecoder(self.model)
        elif decoder == "fast":
            raise PspoError(
                f"the fast decoder does not support model_type '{self.model.config.model_type}'",
                "use --decoder generate (or auto)",
            )

    def describe(self) -> dict:
        import torch

        dev = next(self.model.parameters()).device
        return {
            "backend": "hf",
            "decoder": "fast" if self.decoder else "generate",
            "loader": self.loader,
            "dtype": str(next(self.model.parameters()).dtype).replace("torch.", ""),
            "device": str(dev),
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name(),
            "threads": torch.get_num_threads(),
            "batch_size": self.batch_size,
        }

    def render(self, messages: list[dict], problem, prompt_config) -> str:
        from pspo_eval.generation.prompts import render_prompt

        return render_prompt(problem, prompt_config, self.tokenizer)

    def encode(self, prompt: str) -> list[int]:
        # Chat templates already carry their special tokens; the plain format gets BOS if the model uses one.
        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        return self.tokenizer(prompt, add_special_tokens=not has_template)["input_ids"]

    def generate(self, requests: Sequence[GenRequest], progress: Progress | None = None) -> list[GenResult]:
        results: list[GenResult | None] = [None] * len(requests)
        encoded = [self.encode(r.prompt) for r in requests]
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, r in enumerate(requests):
            groups[(r.temperature, r.top_p, r.max_new_tokens)].append(i)
        for (temperature, top_p, max_new), idx in groups.items():
            idx.sort(key=lambda i: (-len(encoded[i]), i))  # longest first: memory problems show at once
            # The fast decoder takes the whole group and keeps batch_size rows decoding, refilling
            # finished ones; plain generate runs it batch by batch.
            step = len(idx) if self.decoder is not None else self.batch_size
            for start in range(0, len(idx), step):
                chunk = idx[start : start + step]
                t0 = time.perf_counter()
                batch = self._generate_batch(
                    [encoded[i] for i in chunk], [requests[i].seed for i in chunk], temperature, top_p, max_new
                )
                share = (time.perf_counter() - t0) / len(chunk)
                for i, (tokens, finish) in zip(chunk, batch):
                    text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                    results[i] = GenResult(text, finish, len(encoded[i]), len(tokens), share)
                if progress:
                    progress(len(chunk))
        return results  # type: ignore[return-value]

    def _generate_batch(self, prompts, seeds, temperature, top_p, max_new) -> list[tuple[list[int], str]]:
        if self.decoder is not None:
            done = self.decoder.generate(
                prompts, max_new_tokens=max_new, stop_ids=self.stop_ids, temperature=temperature, top_p=top_p,
                seeds=seeds, max_batch=self.batch_size,
            )
            return [(c.token_ids, c.finish_reason) for c in done]
        return self._generate_plain(prompts, seeds, temperature, top_p, max_new)

    def _generate_plain(self, prompts, seeds, temperature, top_p, max_new):
        """``model.generate`` with left padding. Sampling is seeded per batch, not per sample."""
        import torch

        dev = next(self.model.parameters()).device
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, p in enumerate(prompts):
            ids[r, width - len(p) :] = torch.tensor(p)
            mask[r, width - len(p) :] = 1
        kwargs = dict(max_new_tokens=max_new, eos_token_id=self.stop_ids, pad_token_id=pad)
        if temperature > 0:
            torch.manual_seed(seeds[0])
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            out = self.model.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev), **kwargs)
        results = []
        stops = set(self.stop_ids)
        for row in out[:, width:].tolist():
            cut = next((j for j, t in enumerate(row) if t in stops), None)
            results.append((row[:cut], "stop") if cut is not None else (row, "length"))
        return results

    def close(self) -> None:
        self.decoder = None
        self.model = None
