"""The generation protocol every backend (hf, vllm, openai) implements."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pspo_eval.errors import PspoError


@dataclass
class GenRequest:
    """One sample to generate. ``messages`` is used by chat APIs; ``prompt`` is the rendered text."""

    prompt: str
    messages: list[dict]
    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int


@dataclass
class GenResult:
    response: str
    finish_reason: str  # stop | length | error
    prompt_tokens: int
    completion_tokens: int
    seconds: float = 0.0  # this sample's share of its batch's wall time
    extra: dict = field(default_factory=dict)


Progress = Callable[[int], None]  # called with the number of samples just finished


class Backend(Protocol):
    name: str

    def describe(self) -> dict:
        """Backend, device, dtype and options, for the run manifest and the sample keys."""
        ...

    def render(self, messages: list[dict], problem, prompt_config) -> str:
        """The exact prompt text for a problem (chat template applied where the backend does it)."""
        ...

    def generate(self, requests: Sequence[GenRequest], progress: Progress | None = None) -> list[GenResult]:
        ...

    def close(self) -> None:
        ...


BACKENDS = ("hf", "vllm", "openai")


def make_backend(name: str, model_ref: str, **options) -> Backend:
    """Instantiate a backend by name (its heavy imports happen here, lazily)."""
    if name == "hf":
        from pspo_eval.generation.hf import HFBackend

        return HFBackend(model_ref, **options)
    if name == "vllm":
        from pspo_eval.generation.vllm_backend import VLLMBackend

        return VLLMBackend(model_ref, **options)
    if name == "openai":
        from pspo_eval.generation.openai_backend import OpenAIBackend

        return OpenAIBackend(model_ref, **options)
    raise PspoError(f"unknown backend '{name}'", f"use one of: {', '.join(BACKENDS)}")
