"""The learning benchmark's helpers: the task generator, the shared reward, format test, McNemar, summary."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


learning = _load("bench_learning", ROOT / "benchmarks" / "learning.py")
reward = _load("learning_reward", ROOT / "benchmarks" / "learning" / "learning_reward.py")


def test_split_is_deterministic_disjoint_and_answers_are_right():
    train, held = learning.make_split(300, 200, seed=0)
    assert (train, held) == learning.make_split(300, 200, seed=0)
    assert len(train) == 300 and len(held) == 200
    questions = [r["question"] for r in train + held]
    assert len(set(questions)) == len(questions)
    assert {r["category"] for r in held} == set(learning.KINDS)
    for r in train + held:
        nums = [int(x) for x in __import__("re").findall(r"\d+", r["question"])]
        expected = {"add": lambda n: n[0] + n[1], "sub": lambda n: n[0] - n[1], "mul": lambda n: n[0] * n[1],
                    "add_sub": lambda n: n[0] + n[1] - n[2]}[r["category"]](nums)
        assert r["answer"] == str(expected) and expected >= 0


def test_committed_data_matches_the_generator():
    train, held = learning.make_split(400, 200)
    for name, rows in (("train.jsonl", train), ("heldout.jsonl", held)):
        path = ROOT / "benchmarks" / "learning" / name
        if path.is_file():
            assert [json.loads(line) for line in path.read_text().splitlines()] == rows


def test_reward_shape():
    assert reward.reward(["3 + 4 = 7\n#### 7"], ["7"]) == [1.0]
    assert reward.reward(["the answer is 7"], ["7"]) == [1.0]  # right without the format: no bonus
    assert reward.reward(["#### 8"], ["7"]) == [0.05]  # wrong, in format
    assert reward.reward(["no idea"], ["7"]) == [0.0]  # no number: -0.2 clipped to 0
    assert reward.reward(["I had 5 then 3 more\n#### 1,208"], ["1208"]) == [1.0]
    assert reward.reward(["#### 7 and then 9"], ["7"]) == [1.0]  # the number after '####' wins
    assert reward.reward([[{"role": "assistant", "content": "#### 12"}]], ["12"]) == [1.0]  # chat messages
    with pytest.raises(ValueError):
        reward.reward(["a", "b"], ["1"])


def test_has_format():
    assert learning.has_format("so\n#### 42")
    assert learning.has_format("####-3")
    assert not learning.has_format("#### Step 1")
    assert not learning.has_format("The answer is 42")


def test_mcnemar_exact():
    base = [True] * 10 + [False] * 10
    assert learning.mcnemar_p(base, base) == (0, 0, 1.0)
    # 0 discordant pairs one way, 8 the other: p = 2 * 0.5**8
    other = [True] * 10 + [True] * 8 + [False] * 2
    b, c, p = learning.mcnemar_p(base, other)
    assert (b, c) == (0, 8) and math.isclose(p, 2 / 256)
    # symmetric, and balanced disagreement is not significant
    assert learning.mcnemar_p(other, base)[2] == p
    b, c, p = learning.mcnemar_p([True, False] * 5, [False, True] * 5)
    assert (b, c, p) == (5, 5, 1.0)
    with pytest.raises(ValueError):
        learning.mcnemar_p([True], [True, False])


def _write_eval(run: Path, model: str, outcomes: list[tuple[bool, str]]) -> None:
    d = run / "samples" / model / "heldout"
    d.mkdir(parents=True)
    with open(d / "t0.jsonl", "w") as f:
        for i, (ok, text) in enumerate(outcomes):
            f.write(json.dumps({"problem_id": f"heldout-{i}", "correct": ok, "response": text,
                                "completion_tokens": 10}) + "\n")


def test_summarize_and_table(tmp_path):
    run = tmp_path / "eval"
    _write_eval(run, "base", [(i < 2, "7") for i in range(10)])
    _write_eval(run, "pspo", [(i < 9, "#### 7") for i in range(10)])
    train = tmp_path / "pspo"
    train.mkdir()
    (train / "metrics.jsonl").write_text("\n".join(json.dumps({"step": s, "reward/mean": r})
                                                   for s, r in [(1, 0.1), (2, 0.1), (3, 0.5), (4, 0.5)]) + "\n")
    rows = learning.summarize({"base": run, "pspo": run}, ["base", "pspo"], {"pspo": train})
    assert rows[0]["acc"] == 0.2 and rows[0]["format"] == 0.0 and rows[0]["p"] is None
    assert rows[1]["acc"] == 0.9 and rows[1]["format"] == 1.0
    assert (rows[1]["only_base"], rows[1]["only_model"]) == (0, 7) and math.isclose(rows[1]["p"], 2 / 128)
    assert (rows[1]["reward_start"], rows[1]["reward_end"], rows[1]["steps"]) == (0.1, 0.5, 4)
    table = learning.markdown_table(rows)
    assert "| pspo | 4 | 0.100 | 0.500 | 100.0% | 90.0% (9/10) | 0 / 7 | 0.0156 |" in table


def test_summarize_pairs_each_objective_with_trl(tmp_path):
    run = tmp_path / "eval"
    _write_eval(run, "base", [(i < 2, "7") for i in range(10)])
    _write_eval(run, "pspo", [(i < 9, "#### 7") for i in range(10)])
    _write_eval(run, "trl", [(i < 3 or i == 9, "#### 7") for i in range(10)])
    rows = learning.summarize({m: run for m in ("base", "pspo", "trl")}, ["base", "pspo", "trl"], {})
    by = {r["model"]: r for r in rows}
    # TRL right alone on problem 9; pspo alone on 3..8
    assert (by["pspo"]["only_trl"], by["pspo"]["only_ours"]) == (1, 6) and math.isclose(by["pspo"]["p_vs_trl"], 16 / 128)
    assert "p_vs_trl" not in by["trl"] and "p_vs_trl" not in by["base"]
    table = learning.markdown_table(rows)
    assert table.splitlines()[0].endswith("| TRL-only / ours-only right | McNemar p vs TRL |")
    assert "| 0 / 7 | 0.0156 | 1 / 6 | 0.1250 |" in table and table.splitlines()[-1].endswith("| – | – |")


def test_summarize_refuses_different_problem_sets(tmp_path):
    run = tmp_path / "eval"
    _write_eval(run, "base", [(True, "1")] * 3)
    _write_eval(run, "clip", [(True, "1")] * 2)
    with pytest.raises(SystemExit):
        learning.summarize({"base": run, "clip": run}, ["base", "clip"], {})


train_step = _load("bench_train_step", ROOT / "benchmarks" / "train_step.py")


def test_train_step_prompt_files_give_both_tools_the_same_order(tmp_path):
    import numpy as np

    ours, trl, order = train_step.prompt_files(8, 3, tmp_path)
    ours_rows = [json.loads(line) for line in ours.read_text().split("\n") if line]
    trl_rows = [json.loads(line) for line in trl.read_text().split("\n") if line]
    # what our trainer does with a data.file: default_rng(split_seed).permutation, then file order
    seen_by_ours = [ours_rows[i]["question"] for i in np.random.default_rng(42).permutation(8)]
    assert [r["question"] for r in trl_rows] == seen_by_ours == order
    assert sorted(r["id"] for r in ours_rows) == sorted(r["id"] for r in trl_rows)
    assert ours_rows[0]["id"].endswith("0003")


def test_train_step_per_rollout_skips_the_warmup_rollout():
    assert train_step.per_rollout([9.0, 5.0, 3.0, 1.0], mu=2) == 2.0
    assert train_step.per_rollout([9.0, 5.0, 3.0, 1.0, 7.0], mu=2) == 2.0  # an unfinished rollout is dropped
    with pytest.raises(ValueError):
        train_step.per_rollout([9.0, 5.0], mu=2)
