"""The light loader (pspo_eval.generation.light) against transformers on the demo model.

The light path exists only to start faster; everything it produces must be what the transformers
path produces: the same prompt text and token ids, the same decoded text, weights, rotary tables,
stop ids and greedy outputs. Checkpoints outside what it reproduces must fall back to transformers.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from pspo_eval.data.loaders import load_dataset
from pspo_eval.generation.hf import HFBackend, load_light, load_model, stop_token_ids
from pspo_eval.generation.light import LightModel, LightTokenizer, light_eligible
from pspo_eval.generation.prompts import PromptConfig, render_prompt
from pspo_eval.models import resolve_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_dir() -> Path:
    return Path(resolve_model("smollm2-135m-instruct"))


@pytest.fixture(scope="module")
def both(demo_dir):
    light = load_light(str(demo_dir), dtype="fp32", device="cpu")
    assert light is not None, light_eligible(demo_dir)
    lt, lm, _ = light
    ht, hm, _ = load_model(str(demo_dir), dtype="fp32", device="cpu")
    return lt, lm, ht, hm


def test_demo_model_is_eligible(demo_dir):
    assert light_eligible(demo_dir) is None


def test_prompts_token_ids_and_decoding_match_transformers(both):
    lt, _, ht, _ = both
    configs = [PromptConfig(), PromptConfig(math500_boxed=True), PromptConfig(fewshot=2),
               PromptConfig(system="Réponds en français: ü, 数学, <b>&</b>", user_template="Q: {question}\nA:")]
    checked = 0
    for name in ("gsm8k", "svamp", "asdiv", "math500"):
        for problem in load_dataset(name, limit=20):
            for cfg in configs:
                text = render_prompt(problem, cfg, lt)
                assert text == render_prompt(problem, cfg, ht)
                ids = lt(text, add_special_tokens=False)["input_ids"]
                assert ids == ht(text, add_special_tokens=False)["input_ids"]
                assert lt(text)["input_ids"] == ht(text)["input_ids"]
                # Generated text can hold special tokens (end of turn, a new turn's header).
                out = ids[-40:] + [lt.eos_token_id, lt.bos_token_id, lt.unk_token_id] + ids[5:15]
                assert lt.decode(out, skip_special_tokens=True) == ht.decode(out, skip_special_tokens=True)
                assert lt.decode(out) == ht.decode(out)
                checked += 1
    assert checked == 4 * 20 * len(configs)


def test_special_tokens_and_stop_ids_match(both):
    lt, lm, ht, hm = both
    for attr in ("bos_token", "eos_token", "unk_token", "pad_token",
                 "bos_token_id", "eos_token_id", "unk_token_id", "pad_token_id"):
        assert getattr(lt, attr) == getattr(ht, attr), attr
    assert lt.special_tokens_map == {k: v for k, v in ht.special_tokens_map.items() if isinstance(v, str)}
    assert stop_token_ids(lt, lm) == stop_token_ids(ht, hm)
    assert lt.convert_tokens_to_ids("<|im_end|>") == ht.convert_tokens_to_ids("<|im_end|>")
    assert lt.convert_tokens_to_ids("no-such-token-here") == ht.convert_tokens_to_ids("no-such-token-here")


def test_weights_and_rotary_tables_match(both):
    _, lm, _, hm = both
    state = hm.state_dict()
    assert set(state) == set(lm.weights)
    assert all(torch.equal(state[k], lm.weights[k]) for k in state)
    positions = torch.arange(0, 4096)[None]
    x = torch.zeros(1, dtype=torch.float32)
    for got, want in zip(lm.rotary(x, positions), hm.model.rotary_emb(x, positions)):
        assert torch.equal(got, want)


def test_greedy_outputs_match_through_the_backend(demo_dir, monkeypatch):
    problems = load_dataset("gsm8k", limit=6)
    light = HFBackend(str(demo_dir), dtype="fp32", device="cpu")
    monkeypatch.setenv("PSPO_EVAL_LOADER", "transformers")
    plain = HFBackend(str(demo_dir), dtype="fp32", device="cpu")
    assert light.describe()["loader"] == "light" and plain.describe()["loader"] == "transformers"
    assert plain.decoder is not None  # both decode with the fast loop: only loading differs
    from pspo_eval.generation.base import GenRequest

    def run(backend):
        reqs = [GenRequest(backend.render([], p, PromptConfig()), [], 0.0, 1.0, 24, i) for i, p in enumerate(problems)]
        return [(r.response, r.finish_reason, r.prompt_tokens, r.completion_tokens) for r in backend.generate(reqs)]

    assert run(light) == run(plain)


def test_generate_decoder_uses_transformers(demo_dir):
    backend = HFBackend(str(demo_dir), dtype="fp32", device="cpu", decoder="generate")
    assert backend.describe()["loader"] == "transformers" and backend.decoder is None


def _copy_without_weights(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, dst / f.name)
    os.symlink(src / "model.safetensors", dst / "model.safetensors")
    return dst


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "file, changes, reason",
    [
        ("config.json", {"rope_parameters": {"rope_type": "llama3", "rope_theta": 1e5, "factor": 8.0}}, "rope"),
        ("config.json", {"rope_parameters": None, "rope_scaling": {"type": "linear", "factor": 2.0}}, "rope"),
        ("config.json", {"model_type": "gpt2"}, "model_type"),
        ("config.json", {"hidden_act": "gelu"}, "activation"),
        ("config.json", {"quantization_config": {"quant_method": "bitsandbytes"}}, "quantized"),
        ("tokenizer_config.json", {"tokenizer_class": "LlamaTokenizer"}, "tokenizer class"),
        ("tokenizer_config.json", {"add_bos_token": True}, "tokenizer options"),
        ("tokenizer_config.json", {"clean_up_tokenization_spaces": True}, "clean_up"),
    ],
)
def test_checkpoints_outside_the_light_path_fall_back(demo_dir, tmp_path, file, changes, reason):
    d = _copy_without_weights(demo_dir, tmp_path / "m")
    _edit_json(d / file, **changes)
    why = light_eligible(d)
    assert why is not None and reason in why
    assert load_light(str(d), dtype="fp32", device="cpu") is None


def test_generation_tag_templates_and_missing_files_fall_back(demo_dir, tmp_path):
    d = _copy_without_weights(demo_dir, tmp_path / "m")
    (d / "chat_template.jinja").write_text("{% for m in messages %}{% generation %}{{ m.content }}{% endgeneration %}{% endfor %}")
    assert "generation" in light_eligible(d)
    (d / "tokenizer.json").unlink()
    assert "tokenizer.json" in light_eligible(d)
    assert light_eligible(tmp_path / "nothing-here") == "no local config.json"
    assert light_eligible("HuggingFaceTB/SmolLM2-135M-Instruct") == "no local config.json"  # hub ids


def test_sharded_checkpoint_loads_the_same_weights(demo_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    d = tmp_path / "sharded"
    d.mkdir()
    for f in demo_dir.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, d / f.name)
    state = load_file(str(demo_dir / "model.safetensors"))
    names = sorted(state)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    weight_map = {}
    for shard, keys in shards.items():
        save_file({k: state[k] for k in keys}, str(d / shard))
        weight_map.update({k: shard for k in keys})
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    assert light_eligible(d) is None
    model = LightModel(d, dtype=torch.float32, device="cpu")
    assert all(torch.equal(model.weights[k], state[k]) for k in state)
    assert model.weights["lm_head.weight"] is model.weights["model.embed_tokens.weight"]  # tied
    assert LightTokenizer(d).eos_token == "<|im_end|>"
