"""The generation backends: the fast decode loop against transformers' generate, sampling, vLLM requests."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch

from pspo_eval.generation.base import GenRequest
from pspo_eval.generation.engine import sample_top_p, shared_prefix_length
from pspo_eval.generation.prompts import PAPER_SYSTEM_PROMPT, PromptConfig, render_plain, render_prompt
from pspo_eval.records import Problem

QUESTIONS = [
    "Janet has 3 apples and buys 5 more. How many apples does she have?",
    "A train travels 60 miles per hour for 2 hours. How far does it go?",
    "Tom had 12 marbles and gave away 7. How many marbles are left?",
    "There are 4 boxes with 6 pencils each. How many pencils are there in total, and how many would 3 boxes hold?",
]


@pytest.fixture(scope="module")
def fp32_model():
    from pspo_eval.generation.hf import load_model

    tok, model, path = load_model("smollm2-135m-instruct", dtype="fp32", device="cpu")
    return tok, model


def _prompts(tok, questions=QUESTIONS):
    cfg = PromptConfig()
    texts = [render_prompt(Problem(id=str(i), dataset="gsm8k", question=q, answer="0"), cfg, tok) for i, q in enumerate(questions)]
    return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


def _hf_greedy(model, tok, prompts, max_new, stop_ids):
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), tok.pad_token_id)
    mask = torch.zeros_like(ids)
    for r, p in enumerate(prompts):
        ids[r, width - len(p):] = torch.tensor(p)
        mask[r, width - len(p):] = 1
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
                             eos_token_id=stop_ids, pad_token_id=tok.pad_token_id)
    rows = []
    for row in out[:, width:].tolist():
        cut = next((j for j, t in enumerate(row) if t in stop_ids), None)
        rows.append(row[:cut] if cut is not None else row)
    return rows


@pytest.mark.slow
def test_fast_decoder_greedy_matches_generate_fp32(fp32_model):
    from pspo_eval.generation.engine import FastDecoder
    from pspo_eval.generation.hf import stop_token_ids

    tok, model = fp32_model
    prompts = _prompts(tok)
    stops = stop_token_ids(tok, model)
    expected = _hf_greedy(model, tok, prompts, 40, stops)
    got = FastDecoder(model).generate(prompts, max_new_tokens=40, stop_ids=stops)
    assert [c.token_ids for c in got] == expected
    for c, e in zip(got, expected):
        assert c.finish_reason == ("length" if len(e) == 40 else "stop")


@pytest.mark.slow
def test_fast_decoder_greedy_does_not_depend_on_batch_size_fp32(fp32_model):
    from pspo_eval.generation.engine import FastDecoder
    from pspo_eval.generation.hf import stop_token_ids

    tok, model = fp32_model
    prompts = _prompts(tok)
    stops = stop_token_ids(tok, model)
    dec = FastDecoder(model)
    together = [c.token_ids for c in dec.generate(prompts, max_new_tokens=32, stop_ids=stops)]
    alone = [dec.generate([p], max_new_tokens=32, stop_ids=stops)[0].token_ids for p in prompts]
    assert together == alone
    # The shared-prefix shortcut is an optimisation only: switching it off changes nothing.
    plain = FastDecoder(model, share_prefix=False)
    assert [c.token_ids for c in plain.generate(prompts, max_new_tokens=32, stop_ids=stops)] == together


MORE_QUESTIONS = QUESTIONS + [
    "What is 15 plus 27?",
    "A shop sells pens at 3 dollars each. How much do 9 pens cost?",
    "Sara reads 20 pages a day. How many pages does she read in a week?",
]


@pytest.mark.slow
def test_continuous_refill_changes_no_output_fp32(fp32_model):
    """With at most 2 rows decoding, finished rows refilled from the queue, every output is the same."""
    from pspo_eval.generation.engine import FastDecoder
    from pspo_eval.generation.hf import stop_token_ids

    tok, model = fp32_model
    prompts = _prompts(tok, MORE_QUESTIONS)
    stops = stop_token_ids(tok, model)
    dec = FastDecoder(model, cache_chunk=4)  # small chunks: the cache grows (and merges) many times
    together = dec.generate(prompts, max_new_tokens=32, stop_ids=stops)
    refilled = dec.generate(prompts, max_new_tokens=32, stop_ids=stops, max_batch=2)
    assert [(c.token_ids, c.finish_reason) for c in refilled] == [(c.token_ids, c.finish_reason) for c in together]
    assert {c.finish_reason for c in together} == {"stop", "length"}  # both ways of finishing are refilled
    seeds = list(range(100, 100 + len(prompts)))
    sampled = dec.generate(prompts, max_new_tokens=24, stop_ids=stops, temperature=0.8, top_p=0.9, seeds=seeds)
    sampled_refilled = dec.generate(prompts, max_new_tokens=24, stop_ids=stops, temperature=0.8, top_p=0.9,
                                    seeds=seeds, max_batch=3)
    assert [c.token_ids for c in sampled_refilled] == [c.token_ids for c in sampled]


@pytest.mark.slow
def test_sampling_is_per_sample_and_order_independent_fp32(fp32_model):
    from pspo_eval.generation.engine import FastDecoder
    from pspo_eval.generation.hf import stop_token_ids

    tok, model = fp32_model
    prompts = _prompts(tok)
    stops = stop_token_ids(tok, model)
    dec = FastDecoder(model)
    seeds = [11, 22, 33, 44]
    a = dec.generate(prompts, max_new_tokens=24, stop_ids=stops, temperature=0.8, top_p=0.9, seeds=seeds)
    order = [2, 0, 3, 1]
    b = dec.generate([prompts[i] for i in order], max_new_tokens=24, stop_ids=stops, temperature=0.8,
                     top_p=0.9, seeds=[seeds[i] for i in order])
    for pos, i in enumerate(order):
        assert b[pos].token_ids == a[i].token_ids
    c = dec.generate(prompts, max_new_tokens=24, stop_ids=stops, temperature=0.8, top_p=0.9, seeds=[5, 6, 7, 8])
    assert [x.token_ids for x in c] != [x.token_ids for x in a]  # other seeds, other samples


def test_sample_top_p_keeps_to_the_nucleus_and_matches_its_distribution():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05] + [0.0] * 60]).clamp_min(1e-12))
    rng = random.Random(0)
    counts = [0] * 4
    n = 4000
    for _ in range(n):
        tok = sample_top_p(logits, 1.0, 0.9, [rng.random()]).item()
        assert tok in (0, 1, 2)  # 0.5 + 0.3 < 0.9, so the third token completes the nucleus
        counts[tok] += 1
    expected = [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95]
    for c, e in zip(counts, expected):
        assert abs(c / n - e) < 0.03
    # Temperature sharpens: at T=0.1 the top token wins essentially always.
    assert all(sample_top_p(logits, 0.1, 1.0, [u]).item() == 0 for u in (0.01, 0.5, 0.99))


def test_sample_top_p_wide_nucleus_sorts_in_full():
    logits = torch.zeros(1, 500)  # uniform: the nucleus of 0.9 has 450 tokens, wider than the top-64 shortcut
    seen = {sample_top_p(logits, 1.0, 0.9, [u / 1000]).item() for u in range(1, 1000, 7)}
    assert len(seen) > 64


def test_shared_prefix_length():
    assert shared_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert shared_prefix_length([[5], [6]]) == 0
    assert shared_prefix_length([[1, 2], [1, 2]]) == 2


def test_plain_prompt_format_for_models_without_chat_template():
    cfg = PromptConfig(fewshot_examples=[{"question": "1+1?", "answer": "2\n#### 2"}], fewshot=1)
    text = render_plain(Problem(id="a", dataset="gsm8k", question="2+2?", answer="4"), cfg)
    assert text.startswith(PAPER_SYSTEM_PROMPT)
    assert text.endswith("Question: 2+2?\nAnswer:")
    assert "Question: 1+1?\nAnswer: 2\n#### 2" in text


def test_boxed_variant_only_for_math500():
    cfg = PromptConfig(math500_boxed=True)
    assert "boxed" in cfg.system_for("math500")
    assert cfg.system_for("gsm8k") == PAPER_SYSTEM_PROMPT


# -- vLLM: the request we build and the mapping of its outputs ---------------------------------------


class _FakeSamplingParams:
    def __init__(self, **kw):
        self.kw = kw


def test_vllm_request_building():
    from pspo_eval.generation.vllm_backend import build_requests

    reqs = [
        GenRequest("p1", [], 0.0, 0.9, 128, 7),
        GenRequest("p2", [], 0.8, 0.9, 64, 2**40 + 3),
    ]
    prompts, params = build_requests(reqs, lambda s: [len(s), 1, 2], [2, 7], _FakeSamplingParams)
    assert prompts == [{"prompt_token_ids": [2, 1, 2]}, {"prompt_token_ids": [2, 1, 2]}]
    greedy, sampled = params[0].kw, params[1].kw
    assert greedy["temperature"] == 0.0 and greedy["top_p"] == 1.0 and greedy["max_tokens"] == 128
    assert sampled["temperature"] == 0.8 and sampled["top_p"] == 0.9 and sampled["max_tokens"] == 64
    assert sampled["n"] == 1 and sampled["stop_token_ids"] == [2, 7]
    assert 0 <= sampled["seed"] < 2**31 and greedy["seed"] == 7


def test_vllm_output_mapping():
    from pspo_eval.generation.vllm_backend import map_outputs

    outs = [
        SimpleNamespace(prompt_token_ids=[1, 2, 3], outputs=[SimpleNamespace(text="#### 5", token_ids=[9, 9], finish_reason="stop")]),
        SimpleNamespace(prompt_token_ids=[1], outputs=[SimpleNamespace(text="long", token_ids=[4] * 8, finish_reason="length")]),
    ]
    res = map_outputs(outs, seconds=2.0)
    assert [r.response for r in res] == ["#### 5", "long"]
    assert [r.finish_reason for r in res] == ["stop", "length"]
    assert [(r.prompt_tokens, r.completion_tokens) for r in res] == [(3, 2), (1, 8)]
    assert res[0].seconds == pytest.approx(1.0)


def test_vllm_backend_missing_is_one_line_error():
    import importlib.util

    from pspo_eval.errors import PspoError
    from pspo_eval.generation.registry import make_backend

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    with pytest.raises(PspoError) as info:
        make_backend("vllm", "smollm2-135m-instruct")
    assert "pip install 'pspo-eval[vllm]'" in str(info.value)
    assert "\n" not in str(info.value)


def test_stop_set_with_and_without_the_end_of_turn_token():
    """rollout.stop=eos (TRL's, and so the paper's, stop set) leaves out the chat template's
    end-of-turn token; the default also stops there."""
    from transformers import AutoTokenizer

    from pspo_eval.generation.hf import stop_token_ids
    from pspo_eval.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))
    # As in a base Qwen2.5: EOS is <|endoftext|>, while the chat template ends turns with <|im_end|>.
    tok.eos_token = "<|endoftext|>"
    eos, im_end = tok.convert_tokens_to_ids("<|endoftext|>"), tok.convert_tokens_to_ids("<|im_end|>")
    assert eos != im_end and "<|im_end|>" in tok.chat_template

    class NoGenerationConfig:
        generation_config = None

    assert stop_token_ids(tok, NoGenerationConfig()) == sorted({eos, im_end})
    assert stop_token_ids(tok, NoGenerationConfig(), end_of_turn=False) == [eos]


def test_segments_minimise_padding_plus_a_cost_per_segment():
    from pspo_eval.generation.engine import _segments

    widths = [3, 3, 3, 90, 90]
    assert _segments(widths, 50) == [(0, 3), (3, 5)]  # 3·3 + 2·90 + 2·50 beats 5·90 + 50
    assert _segments(widths, 10**6) == [(0, 5)]  # one segment when a segment costs more than padding
    assert _segments(widths, float("inf")) == [(0, 5)]  # on a GPU (see FastDecoder.generate)
    assert _segments([7], 1) == [(0, 1)]
    assert _segments([1, 2, 3, 4], 0) == [(0, 1), (1, 2), (2, 3), (3, 4)]  # free segments: no padding at all


def test_segments_prefix_and_refill_change_no_output_on_a_tiny_model(tmp_path):
    """Rows decoded in many segments over one shared prefix, refilled and merged back (fp32), through
    the C kernels (finished rows skipped, greedy choice in C), give exactly what one dense batch
    without the shared prefix gives in the torch forms, greedy and sampled."""
    from collections import Counter

    from train_helpers import make_tiny_model
    from transformers import AutoModelForCausalLM

    from pspo_eval.generation.engine import FastDecoder

    model = AutoModelForCausalLM.from_pretrained(make_tiny_model(tmp_path / "tiny"), dtype=torch.float32).eval()
    rng = random.Random(0)
    prefix = [rng.randrange(100, 5000) for _ in range(20)]
    prompts = [prefix + [rng.randrange(100, 5000) for _ in range(rng.choice([3, 8, 40, 90]))] for _ in range(15)]
    dense = FastDecoder(model, share_prefix=False, segment_cost=10**9, native=False)
    # Stop at the tokens this random model emits most, so rows finish at different steps.
    first = dense.generate(prompts, max_new_tokens=24, stop_ids=[2])
    stops = [t for t, _ in Counter(t for c in first for t in c.token_ids[3:]).most_common(3)]
    split = FastDecoder(model, segment_cost=1, max_segments=3, cache_chunk=4)
    for kw in ({}, {"max_batch": 4}, {"temperature": 0.9, "top_p": 0.9, "seeds": list(range(15)), "max_batch": 5}):
        want = [(c.token_ids, c.finish_reason) for c in dense.generate(prompts, max_new_tokens=24, stop_ids=stops, **kw)]
        got = [(c.token_ids, c.finish_reason) for c in split.generate(prompts, max_new_tokens=24, stop_ids=stops, **kw)]
        assert got == want
        if "temperature" not in kw:
            assert {r for _, r in want} == {"stop", "length"}


def test_weights_cast_once_give_autocasts_tokens(tmp_path):
    """A bf16 rollout of an fp32 policy: weights and cache kept in bf16 (cast once per refresh)
    give exactly the tokens of autocast casting them at every product, greedy and sampled."""
    from train_helpers import make_tiny_model
    from transformers import AutoModelForCausalLM

    from pspo_eval.generation.engine import FastDecoder

    model = AutoModelForCausalLM.from_pretrained(make_tiny_model(tmp_path / "tiny"), dtype=torch.float32).eval()
    rng = random.Random(1)
    prompts = [[rng.randrange(100, 5000) for _ in range(rng.choice([4, 30, 70]))] for _ in range(9)]
    # Both attend through the torch form: under autocast the uncast decoder's cache stays fp32, which
    # the C kernel does not mix with bf16 queries (the kernel has its own tests, test_native.py).
    cast_once = FastDecoder(model, matmul_dtype=torch.bfloat16, native=False)
    assert cast_once.layers[0].wqkv.dtype == torch.bfloat16 and cast_once.embed.dtype == torch.float32
    uncast = FastDecoder(model, native=False)
    for kw in ({}, {"temperature": 0.9, "top_p": 0.9, "seeds": list(range(9)), "max_batch": 4}):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            want = [c.token_ids for c in uncast.generate(prompts, max_new_tokens=20, stop_ids=[2], **kw)]
            got = [c.token_ids for c in cast_once.generate(prompts, max_new_tokens=20, stop_ids=[2], **kw)]
        assert got == want


def test_fused_norm_is_checked_against_the_torch_form_at_first_use(fp32_model, monkeypatch):
    """The C residual-add-and-norm is used only where its bits equal FastDecoder._rms's here: a kernel
    that is off by one ulp is found at first use, and the decoder keeps the torch form."""
    from pspo_eval.generation import native
    from pspo_eval.generation.engine import FastDecoder

    _, model = fp32_model
    x, y = torch.randn(3, 1, 576), torch.randn(3, 1, 576)
    w = model.model.layers[0].input_layernorm.weight
    dec = FastDecoder(model)
    torch_form = (x + y, dec._rms(x + y, w))
    if native.kernel() is not None:  # the real kernel passes the check and gives the same bits
        got = dec._add_rms(x.clone(), y, w)
        assert dec._norm_checked == {(torch.float32, 576): True}
        assert torch.equal(got[0], torch_form[0]) and torch.equal(got[1], torch_form[1])
    def off_by_one_ulp(x, y, weight, eps, lib=None):  # the torch form, its norm one ulp up
        x = x if y is None else x.add_(y)
        h = FastDecoder._rms(SimpleNamespace(eps=eps), x, weight)
        return x, torch.nextafter(h, torch.full_like(h, float("inf")))

    monkeypatch.setattr(native, "add_rms", off_by_one_ulp)
    dec = FastDecoder(model)
    got = dec._add_rms(x.clone(), y, w)
    assert dec._norm_checked == {(torch.float32, 576): False}
    assert torch.equal(got[0], torch_form[0]) and torch.equal(got[1], torch_form[1])
