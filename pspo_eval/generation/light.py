"""Loading a local Llama-family checkpoint for the fast decoder without importing transformers' models.

Why: in a whole ``pspo-eval evaluate`` process on a small CPU, transformers' ``AutoTokenizer`` and
``AutoModelForCausalLM`` cost about 6 s before the first token (importing the model and tokenizer
machinery, building the module tree, loading through it), more than a tenth of a 64-problem run
with the demo model. :class:`FastDecoder` only needs the weights, a handful of config values and
the rotary table, and the tokenizer is the ``tokenizers`` library's own object underneath, so for
the common case both are loaded directly (about 0.3 s):

- :class:`LightModel`: config.json + safetensors (one file or an index of shards), cast to the
  dtype and moved to the device as transformers would; rotary embeddings of the default type
  computed with the same formula and dtype steps as transformers' ``LlamaRotaryEmbedding``.
- :class:`LightTokenizer`: ``tokenizer.json`` through ``tokenizers``; special tokens from
  ``tokenizer_config.json``; the chat template rendered in a sandboxed Jinja environment set up as
  transformers sets up its own (trim/lstrip blocks, loop controls, a ``tojson`` that does not
  escape HTML, ``raise_exception``, ``strftime_now``, the special tokens as variables).

:func:`light_eligible` says whether a directory is within what these classes reproduce exactly; any
other checkpoint (hub ids, other architectures, rope scaling, tokenizer classes that rebuild their
pipeline in Python, templates using transformers-only tags, ...) is loaded through transformers.
Tests compare both paths on the demo model: the same prompt text, token ids, decoded text, rotary
tables and greedy outputs.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

# Tokenizer classes whose transformers implementation is the tokenizer.json pipeline as stored
# (no Python-side rebuilding of the normalizer/pre-tokenizer/post-processor).
_PLAIN_TOKENIZER_CLASSES = {"TokenizersBackend", "PreTrainedTokenizerFast"}
# tokenizer_config.json keys that either do not change encoding/decoding or are handled here.
_TOKENIZER_CONFIG_KEYS = {
    "backend", "tokenizer_class", "bos_token", "eos_token", "pad_token", "unk_token", "model_max_length",
    "is_local", "local_files_only", "chat_template", "clean_up_tokenization_spaces", "errors",
    "split_special_tokens", "added_tokens_decoder", "additional_special_tokens", "extra_special_tokens",
    "padding_side", "truncation_side", "model_input_names",
}
_SPECIAL = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def _read_json(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _rope_type_and_theta(cfg: dict[str, Any]) -> tuple[str | None, float | None]:
    params = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling") or {}
    rope_type = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    theta = params.get("rope_theta", cfg.get("rope_theta"))
    return rope_type, theta


def light_eligible(path: str | Path) -> str | None:
    """None when ``path`` can be loaded by :class:`LightModel` + :class:`LightTokenizer`, else why not."""
    from pspo_eval.generation.engine import SUPPORTED

    p = Path(path)
    if not (p / "config.json").is_file():
        return "no local config.json"
    cfg = _read_json(p / "config.json")
    if cfg.get("model_type") not in SUPPORTED:
        return f"model_type {cfg.get('model_type')!r}"
    if cfg.get("hidden_act", "silu") != "silu" or cfg.get("mlp_bias") or cfg.get("use_sliding_window"):
        return "activation, MLP bias or sliding window"
    if cfg.get("model_type") == "mistral" and cfg.get("sliding_window"):
        return "sliding window"
    if cfg.get("quantization_config"):
        return "quantized checkpoint"
    rope_type, theta = _rope_type_and_theta(cfg)
    if rope_type != "default" or theta is None or cfg.get("partial_rotary_factor", 1.0) != 1.0:
        return f"rope type {rope_type!r}"
    if not ((p / "model.safetensors").is_file() or (p / "model.safetensors.index.json").is_file()):
        return "no safetensors weights"
    if not (p / "tokenizer.json").is_file() or not (p / "tokenizer_config.json").is_file():
        return "no tokenizer.json / tokenizer_config.json"
    tcfg = _read_json(p / "tokenizer_config.json")
    if tcfg.get("tokenizer_class") not in _PLAIN_TOKENIZER_CLASSES:
        return f"tokenizer class {tcfg.get('tokenizer_class')!r}"
    unknown = set(tcfg) - _TOKENIZER_CONFIG_KEYS
    if unknown:
        return f"tokenizer options {sorted(unknown)}"
    if tcfg.get("split_special_tokens") or tcfg.get("clean_up_tokenization_spaces"):
        return "split_special_tokens / clean_up_tokenization_spaces"
    template = _chat_template(p, tcfg)
    if template is not None and not isinstance(template, str):
        return "several named chat templates"
    if isinstance(template, str) and "endgeneration" in template:
        return "chat template uses the {% generation %} tag"
    return None


def _chat_template(path: Path, tcfg: dict[str, Any]) -> Any:
    file = path / "chat_template.jinja"
    if file.is_file():
        return file.read_text(encoding="utf-8")
    return tcfg.get("chat_template")


def _token_content(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value


@lru_cache(maxsize=8)
def _compile_template(source: str):
    from jinja2 import ext
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # Jinja's own tojson escapes HTML characters; chat templates expect plain JSON.
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source)


class LightTokenizer:
    """The tokenizer interface the hf backend and prompt rendering use, on ``tokenizers`` alone."""

    def __init__(self, path: str | Path):
        from tokenizers import Tokenizer

        p = Path(path)
        self._tok = Tokenizer.from_file(str(p / "tokenizer.json"))
        # transformers encodes without the file's truncation/padding settings; so do we.
        self._tok.no_truncation()
        self._tok.no_padding()
        tcfg = _read_json(p / "tokenizer_config.json")
        self.special_tokens_map: dict[str, str] = {}
        for name in _SPECIAL:
            content = _token_content(tcfg.get(name))
            if content:
                self.special_tokens_map[name] = content
        tokens = self.special_tokens_map
        self.bos_token: str | None = tokens.get("bos_token")
        self.eos_token: str | None = tokens.get("eos_token")
        self.unk_token: str | None = tokens.get("unk_token")
        self.pad_token: str | None = tokens.get("pad_token") or self.eos_token  # as load_model does
        self.chat_template = _chat_template(p, tcfg)

    def convert_tokens_to_ids(self, token: str) -> int | None:
        tid = self._tok.token_to_id(token)
        return tid if tid is not None else self.unk_token_id

    def _id(self, token: str | None) -> int | None:
        return None if token is None else self._tok.token_to_id(token)

    @property
    def pad_token_id(self) -> int | None:
        return self._id(self.pad_token)

    @property
    def eos_token_id(self) -> int | None:
        return self._id(self.eos_token)

    @property
    def bos_token_id(self) -> int | None:
        return self._id(self.bos_token)

    @property
    def unk_token_id(self) -> int | None:
        return self._id(self.unk_token)

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": self._tok.encode(text, add_special_tokens=add_special_tokens).ids}

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: list[dict], *, tokenize: bool = False, add_generation_prompt: bool = False):
        if not isinstance(self.chat_template, str):
            raise ValueError("this tokenizer has no chat template")
        chat = [{k: v for k, v in m.items() if v is not None} for m in messages]
        text = _compile_template(self.chat_template).render(
            messages=chat, tools=None, documents=None, add_generation_prompt=add_generation_prompt,
            **self.special_tokens_map,
        )
        return self(text, add_special_tokens=False)["input_ids"] if tokenize else text


class LightRotary:
    """Default rotary embeddings, computed as transformers' ``LlamaRotaryEmbedding`` computes them."""

    def __init__(self, theta: float, dim: int, device):
        import torch

        self.inv_freq = (1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))).to(device)

    def __call__(self, x, position_ids):
        import torch

        freqs = position_ids[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype=x.dtype), emb.sin().to(dtype=x.dtype)


class LightModel:
    """A checkpoint's config and weights, as :class:`FastDecoder` reads them (no nn.Module tree)."""

    def __init__(self, path: str | Path, *, dtype, device: str):
        from safetensors.torch import load_file

        p = Path(path)
        raw = _read_json(p / "config.json")
        cfg = dict(raw)
        cfg.setdefault("num_key_value_heads", cfg["num_attention_heads"])
        cfg["head_dim"] = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
        cfg.setdefault("rms_norm_eps", 1e-6)
        cfg.setdefault("tie_word_embeddings", True)
        self.config = SimpleNamespace(**cfg)
        if (p / "model.safetensors.index.json").is_file():
            files = sorted(set(_read_json(p / "model.safetensors.index.json")["weight_map"].values()))
        else:
            files = ["model.safetensors"]
        weights: dict[str, Any] = {}
        for f in files:
            weights.update(load_file(str(p / f)))
        self.weights = {k: v.to(device=device, dtype=dtype) for k, v in weights.items()}
        if "lm_head.weight" not in self.weights or cfg["tie_word_embeddings"]:
            self.weights["lm_head.weight"] = self.weights["model.embed_tokens.weight"]
        _, theta = _rope_type_and_theta(raw)
        if theta is None:
            raise ValueError("config.json gives no rope_theta")
        self.rotary = LightRotary(float(theta), cfg["head_dim"], device)
        gen = p / "generation_config.json"
        eos = _read_json(gen).get("eos_token_id") if gen.is_file() else None
        self.generation_config = SimpleNamespace(eos_token_id=eos if eos is not None else raw.get("eos_token_id"))

    def parameters(self):
        return iter(self.weights.values())
