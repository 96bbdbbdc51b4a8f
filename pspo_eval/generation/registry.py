"""The generation backends by name. ``base.py`` holds only the types every backend shares, so it
names none of them; this module sits above the backends and imports one only when it is asked for
(torch, vLLM and the SDK stay unimported until then).
"""

from __future__ import annotations

import importlib

from pspo_eval.errors import PspoError
from pspo_eval.generation.base import Backend

# name -> "module:class"
BACKENDS = {
    "hf": "pspo_eval.generation.hf:HFBackend",
    "vllm": "pspo_eval.generation.vllm_backend:VLLMBackend",
    "openai": "pspo_eval.generation.openai_backend:OpenAIBackend",
}


def make_backend(name: str, model_ref: str, **options) -> Backend:
    """Instantiate a backend by name (its heavy imports happen here, lazily)."""
    if name not in BACKENDS:
        raise PspoError(f"unknown backend '{name}'", f"use one of: {', '.join(BACKENDS)}")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)(model_ref, **options)
