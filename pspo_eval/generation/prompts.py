"""How a problem becomes the text a model sees.

- Default: the PSPO paper's system prompt (:data:`PAPER_SYSTEM_PROMPT`) and the question as the user
  turn, rendered with the model's chat template (``add_generation_prompt=True``).
- ``math500_boxed``: for MATH-500, a variant that asks for ``\\boxed{}`` (:data:`BOXED_SYSTEM_PROMPT`).
- A prompt file (YAML or JSON with ``system`` and optionally ``user`` — a template with ``{question}``
  — and ``fewshot``) overrides both.
- Models without a chat template get the plain format::

      {system}

      Question: {question}
      Answer:

  with optional few-shot examples (``Question: …\\nAnswer: …`` blocks, solutions ending with
  ``#### <answer>``) between the system text and the question.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from pspo_eval.errors import PspoError
from pspo_eval.records import Problem

# The paper's system prompt (the authors' maths_dataset_loading.py), verbatim; training's default too.
PAPER_SYSTEM_PROMPT = (
    "You are a careful math solver. Think through the solution and show the steps. Use English only. "
    "End the response with the final answer only in the format: '#### <final numeric answer only>'"
)
BOXED_SYSTEM_PROMPT = (
    "You are a careful math solver. Think through the solution and show the steps. Use English only. "
    "End the response with the final answer in LaTeX inside \\boxed{}, e.g. \\boxed{\\frac{1}{2}}."
)


class PromptConfig(BaseModel):
    """Everything that decides the prompt text (part of every sample's cache key)."""

    model_config = ConfigDict(extra="forbid")

    system: str = Field(PAPER_SYSTEM_PROMPT, description="System prompt.")
    user_template: str = Field("{question}", description="User turn; {question} is replaced.")
    math500_boxed: bool = Field(False, description="Use the \\boxed{} system prompt for MATH-500.")
    chat_template: str = Field("auto", description="auto | always | never (never = plain format).")
    fewshot: int = Field(0, ge=0, description="Few-shot examples (from GSM8K train) in the plain format.")
    fewshot_examples: list[dict] = Field(default_factory=list, description="Explicit few-shot {question, answer}.")

    def system_for(self, dataset: str) -> str:
        if self.math500_boxed and dataset == "math500" and self.system == PAPER_SYSTEM_PROMPT:
            return BOXED_SYSTEM_PROMPT
        return self.system


def load_prompt_file(path: str | Path) -> dict:
    """Read a prompt file (YAML or JSON): keys system, user (template with {question}), fewshot."""
    path = Path(path)
    if not path.exists():
        raise PspoError(f"prompt file {path} not found", "check the path given to --prompt-file")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in {".json"}:
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:
        raise PspoError(f"prompt file {path} is not valid YAML/JSON: {exc}", "fix its syntax") from exc
    if isinstance(data, str):
        data = {"system": data}
    if not isinstance(data, dict) or not isinstance(data.get("system", ""), str):
        raise PspoError(f"prompt file {path} must map 'system' to a string", "e.g. system: You are …")
    out: dict = {}
    if "system" in data:
        out["system"] = data["system"]
    if "user" in data:
        if "{question}" not in str(data["user"]):
            raise PspoError(f"prompt file {path}: 'user' must contain {{question}}", "add {question} where the problem goes")
        out["user_template"] = str(data["user"])
    if "fewshot" in data:
        shots = data["fewshot"]
        if not isinstance(shots, list) or not all(isinstance(s, dict) and {"question", "answer"} <= set(s) for s in shots):
            raise PspoError(f"prompt file {path}: 'fewshot' must be a list of {{question, answer}}", "fix the fewshot list")
        out["fewshot_examples"] = shots
    unknown = set(data) - {"system", "user", "fewshot"}
    if unknown:
        raise PspoError(f"prompt file {path}: unknown keys {sorted(unknown)}", "allowed: system, user, fewshot")
    return out


def fewshot_examples(config: PromptConfig) -> list[dict]:
    if config.fewshot_examples:
        return config.fewshot_examples[: config.fewshot or None]
    if config.fewshot <= 0:
        return []
    from pspo_eval.data import load_dataset

    shots = []
    for p in load_dataset("gsm8k_train", limit=config.fewshot):
        shots.append({"question": p.question, "answer": f"{p.solution or ''}\n#### {p.answer}".strip()})
    return shots


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


# --- the one prompt builder (evaluation and training) -----------------------------------------------


def chat_messages(
    question: str, system: str | None, *, user_template: str = "{question}", fewshot: Sequence[dict] = ()
) -> list[dict]:
    """The chat turns of one prompt: the system turn (none when ``system`` is None), few-shot turns, the question."""
    messages = [] if system is None else [{"role": "system", "content": system}]
    for shot in fewshot:
        messages.append({"role": "user", "content": user_template.format(question=shot["question"])})
        messages.append({"role": "assistant", "content": shot["answer"]})
    messages.append({"role": "user", "content": user_template.format(question=question)})
    return messages


def plain_prompt(
    question: str, system: str | None, *, user_template: str = "{question}", fewshot: Sequence[dict] = ()
) -> str:
    """The plain format (models without a chat template): system text, few-shot blocks, ``Question: …\nAnswer:``."""
    parts = [] if system is None else [system.strip(), ""]
    for shot in fewshot:
        parts += [f"Question: {shot['question']}", f"Answer: {shot['answer']}", ""]
    parts += [f"Question: {user_template.format(question=question)}", "Answer:"]
    return "\n".join(parts)


def tokenize_prompt(text: str, tokenizer) -> list[int]:
    """Token ids of a rendered prompt: chat templates carry their special tokens; the plain format gets
    BOS (if the model uses one) from the tokenizer."""
    return list(tokenizer(text, add_special_tokens=not has_chat_template(tokenizer))["input_ids"])


def render_messages(problem: Problem, config: PromptConfig) -> list[dict]:
    """The chat messages for a problem (system, optional few-shot turns, user)."""
    return chat_messages(
        problem.question, config.system_for(problem.dataset), user_template=config.user_template,
        fewshot=fewshot_examples(config),
    )


def render_plain(problem: Problem, config: PromptConfig) -> str:
    return plain_prompt(
        problem.question, config.system_for(problem.dataset), user_template=config.user_template,
        fewshot=fewshot_examples(config),
    )


def render_prompt(problem: Problem, config: PromptConfig, tokenizer) -> str:
    """The exact text fed to a local model (chat template when it has one, else the plain format)."""
    use_chat = config.chat_template == "always" or (config.chat_template == "auto" and has_chat_template(tokenizer))
    if use_chat:
        if not has_chat_template(tokenizer):
            raise PspoError("this model's tokenizer has no chat template", "use --chat-template never (plain prompt format)")
        return tokenizer.apply_chat_template(render_messages(problem, config), tokenize=False, add_generation_prompt=True)
    return render_plain(problem, config)


def encode_prompt(question: str, tokenizer, system_prompt: str | None) -> list[int]:
    """Token ids of one training prompt: the same builder as evaluation's default prompt.

    With the paper's system prompt these are the ids evaluation feeds the model for the same
    question (``render_prompt`` with the default :class:`PromptConfig`, then :func:`tokenize_prompt`).
    Training differs on purpose in one corner: an empty or null ``data.system_prompt`` means no
    system turn at all (a chat template may then add its own default), where evaluation always
    sends its ``system`` text, even an empty one.
    """
    system = system_prompt or None
    if has_chat_template(tokenizer):
        messages = chat_messages(question, system)
        return tokenize_prompt(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), tokenizer)
    return tokenize_prompt(plain_prompt(question, system), tokenizer)
