"""The training reward: the paper's reward, the fixed format bonus, the registry, user functions."""

from __future__ import annotations

import sys
import textwrap

import pytest

from pspo_eval.errors import PspoError
from pspo_eval.grading import (
    REWARD_FUNCTIONS,
    format_reward,
    get_reward_function,
    has_answer_format,
    load_reward_function,
    paper_reward,
    weighted_reward,
)
from pspo_eval.grading.reward import ORIGINAL_FORMAT_RE


@pytest.mark.parametrize(
    "response,fixed,original",
    [
        ("#### 7", True, False),  # the authors' bug: a single-digit answer ending its line
        ("#### 7\nThe answer is 7.", True, False),
        ("#### 72", True, True),
        ("#### 7 apples", True, True),
        ("#### -7", True, False),
        ("####\n7", True, False),
        ("#### 1,234", True, True),
        ("#### $18", False, False),
        ("#### Step 1: add", False, False),
        (
            "#### 1. Compute the cost\nIt costs 5.",
            False,
            True,
        ),  # a numbered markdown heading is not the format
        ("The answer is 7.", False, False),
        ("\\boxed{7}", False, False),
        ("", False, False),
    ],
)
def test_format_bonus_fixed_and_original(response, fixed, original):
    assert has_answer_format(response) is fixed
    assert has_answer_format(response, original=True) is original
    assert (ORIGINAL_FORMAT_RE.search(response) is not None) is original


@pytest.mark.parametrize(
    "response,gold,fixed,original",
    [
        ("#### 7", "7", 1.0, 1.0),  # correct: 1.0 + 0.05 clipped to 1.0 either way
        ("So she has 7.", "7", 1.0, 1.0),  # correct without the format
        ("#### 8", "7", 0.05, 0.0),  # wrong but formatted: the bonus, which the original missed
        ("#### 72", "7", 0.05, 0.05),
        ("#### -7", "-7", 1.0, 1.0),
        ("#### -8", "-7", 0.05, 0.0),
        ("The answer is 8.", "7", 0.0, 0.0),
        ("I don't know.", "7", 0.0, 0.0),  # no number: -0.2, clipped to 0
        ("#### 80 dollars", "7", 0.05, 0.05),
    ],
)
def test_paper_reward(response, gold, fixed, original):
    assert paper_reward(response, gold) == pytest.approx(fixed)
    assert paper_reward(response, gold, original_format_regex=True) == pytest.approx(original)


def test_paper_reward_is_clipped_and_on_other_datasets():
    assert 0.0 <= paper_reward("#### 18 eggs", "18") <= 1.0
    assert paper_reward("#### 51", "51.0", dataset="svamp") == 1.0
    assert paper_reward("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}", dataset="math500") == 1.0


def test_registry_functions_share_one_signature():
    responses = ["#### 7", "#### 8", "The answer is 7.", "nothing"]
    golds = ["7", "7", "7", "7"]
    assert set(REWARD_FUNCTIONS) == {"correctness", "format", "paper"}
    assert REWARD_FUNCTIONS["correctness"](responses, golds) == [1.0, 0.0, 1.0, 0.0]
    assert REWARD_FUNCTIONS["format"](responses, golds) == [1.0, 1.0, 0.0, 0.0]
    assert REWARD_FUNCTIONS["format"](responses, golds, original_format_regex=True) == [0.0, 0.0, 0.0, 0.0]
    assert REWARD_FUNCTIONS["paper"](responses, golds) == pytest.approx([1.0, 0.05, 1.0, 0.0])
    # extra keyword arguments from a trainer (prompts, ids, …) are ignored
    assert REWARD_FUNCTIONS["correctness"](responses, golds, prompts=["q"] * 4, dataset="gsm8k") == [
        1.0,
        0.0,
        1.0,
        0.0,
    ]


def test_chat_message_completions_are_accepted():
    completions = [[{"role": "assistant", "content": "#### 7"}], {"role": "assistant", "content": "#### 3"}]
    assert REWARD_FUNCTIONS["correctness"](completions, ["7", "7"]) == [1.0, 0.0]
    assert format_reward(completions) == [1.0, 1.0]


def test_mismatched_lengths_are_a_user_error():
    with pytest.raises(PspoError, match="2 responses but 1 gold"):
        REWARD_FUNCTIONS["paper"](["a", "b"], ["1"])


def test_weighted_reward_combines_by_name():
    fn = weighted_reward({"correctness": 1.0, "format": 0.05})
    assert fn(["#### 7", "#### 8", "7"], ["7", "7", "7"]) == pytest.approx([1.05, 0.05, 1.0])
    with pytest.raises(PspoError, match="unknown reward"):
        weighted_reward({"nope": 1.0})
    with pytest.raises(PspoError):
        weighted_reward({})


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    package = tmp_path / "myrewards"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "length.py").write_text(
        textwrap.dedent(
            """
            def short_is_good(responses, golds, **kw):
                return [1.0 / (1 + len(r)) for r in responses]

            class Holder:
                @staticmethod
                def ones(responses, golds, **kw):
                    return [1.0] * len(responses)

            NOT_CALLABLE = 3

            def wrong_length(responses, golds, **kw):
                return [1.0]
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "myrewards.length"
    for name in [m for m in sys.modules if m.startswith("myrewards")]:
        del sys.modules[name]


def test_user_reward_function_by_import_path(user_module):
    fn = load_reward_function(f"{user_module}:short_is_good")
    assert fn(["ab", "abcd"], ["1", "1"]) == pytest.approx([1 / 3, 1 / 5])
    assert get_reward_function(f"{user_module}:Holder.ones")(["x"], ["1"]) == [1.0]
    combined = weighted_reward({"correctness": 1.0, f"{user_module}:Holder.ones": 0.5})
    assert combined(["#### 1"], ["1"]) == [1.5]
    with pytest.raises(PspoError, match="one float per response"):
        weighted_reward({f"{user_module}:wrong_length": 1.0})(["a", "b"], ["1", "2"])


@pytest.mark.parametrize(
    "spec,message",
    [
        ("myrewards.length", "unknown reward function"),
        ("myrewards.length:", "not of the form"),
        (":fn", "not of the form"),
        ("myrewards.nope:fn", "cannot import module"),
        ("myrewards.length:missing", "has no attribute"),
        ("myrewards.length:NOT_CALLABLE", "is not callable"),
    ],
)
def test_user_reward_function_errors(user_module, spec, message):
    with pytest.raises(PspoError, match=message):
        get_reward_function(spec)


def test_builtin_lookup_is_case_insensitive():
    assert get_reward_function("Paper") is REWARD_FUNCTIONS["paper"]
