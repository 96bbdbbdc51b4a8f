"""The `openai` generation backend: the request it sends, retries, failures, and a real server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from judge_fault_server import FaultServer

from pspo_eval.errors import PspoError
from pspo_eval.evaluate import BackendConfig, EvalConfig, ModelSpec, SamplingConfig, run_evaluate
from pspo_eval.store import RunStore


def _problems(tmp_path: Path) -> Path:
    f = tmp_path / "mini.jsonl"
    f.write_text("\n".join(json.dumps({"id": f"q{i}", "question": f"What is {i} + {i}?", "answer": str(2 * i)}) for i in range(1, 4)) + "\n")
    return f


def _config(server_url: str, data: Path, **backend) -> EvalConfig:
    return EvalConfig(
        models=[ModelSpec(name="served", ref="served-model")],
        datasets=["mini"],
        dataset_file=str(data),
        sampling=SamplingConfig(temperatures=[0.7], samples=2, top_p=0.9, max_new_tokens=32, seed=3),
        backend=BackendConfig(name="openai", base_url=server_url, api_model="served-model", concurrency=2,
                              max_retries=backend.pop("max_retries", 3), timeout=backend.pop("timeout", 10.0), **backend),
    )


def _records(run: Path) -> list[dict]:
    return [r for s in RunStore(run).shards("samples") for r in s.read()]


def test_requests_carry_sampling_seed_and_key_and_results_are_graded(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_GEN_KEY", "sk-test-secret-123456")
    data = _problems(tmp_path)
    with FaultServer(default=("content", "Adding them gives 2. #### 2", "stop")) as server:
        server.queue(("429", 0.05))  # the first request is told to retry after 50 ms
        results = run_evaluate(_config(server.base_url, data, api_key_env="MY_GEN_KEY"), tmp_path / "run")
        sent = [r for r in server.requests if r["body"].get("messages")]
    assert len(sent) == 6 + 1  # 3 problems x 2 samples, plus the retried 429
    body = sent[-1]["body"]
    assert body["model"] == "served-model" and body["temperature"] == 0.7 and body["top_p"] == 0.9
    assert body["max_tokens"] == 32 and isinstance(body["seed"], int)
    assert body["messages"][0]["role"] == "system" and "####" in body["messages"][0]["content"]
    assert sent[-1]["headers"].get("Authorization") == "Bearer sk-test-secret-123456"
    assert len({r["body"]["seed"] for r in sent[1:]}) == 6  # one seed per sample
    recs = _records(tmp_path / "run")
    assert len(recs) == 6
    by_id = {r["problem_id"]: r for r in recs}
    assert by_id["q1"]["correct"] and not by_id["q2"]["correct"]
    assert results.rows[0].accuracy == pytest.approx(2 / 6)
    # The key is never written anywhere in the run directory.
    for f in (tmp_path / "run").rglob("*"):
        if f.is_file():
            assert "sk-test-secret" not in f.read_text(errors="ignore")


def test_failed_requests_store_nothing_and_a_rerun_fills_them(tmp_path):
    data = _problems(tmp_path)
    with FaultServer(default="500") as server:
        with pytest.raises(PspoError) as info:
            run_evaluate(_config(server.base_url, data, max_retries=1), tmp_path / "run")
    assert "6 samples could not be generated" in str(info.value) and "rerun" in str(info.value)
    assert _records(tmp_path / "run") == []
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["history"][-1]["status"] == "incomplete"
    with FaultServer(default=("content", "#### 4", "length")) as server:
        run_evaluate(_config(server.base_url, data), tmp_path / "run")
    recs = _records(tmp_path / "run")
    assert len(recs) == 6 and all(r["finish_reason"] == "length" for r in recs)


@pytest.mark.slow
def test_against_transformers_serve_on_loopback(tmp_path):
    from pspo_eval.judge.server import LocalServer

    data = _problems(tmp_path)
    with LocalServer("smollm2-135m-instruct") as server:
        cfg = _config(server.base_url, data, timeout=600.0)
        cfg = cfg.model_copy(update={"sampling": SamplingConfig(temperatures=[0.0], max_new_tokens=24)})
        cfg.backend.api_model = server.model_path
        run_evaluate(cfg, tmp_path / "run")
    recs = _records(tmp_path / "run")
    assert len(recs) == 3
    for r in recs:
        assert r["response"].strip() and r["prompt_tokens"] > 20 and 0 < r["completion_tokens"] <= 24
        assert json.loads(r["prompt"])[1]["content"].startswith("What is")
