"""The generation protocol every backend (hf, vllm, openai) implements."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol


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
