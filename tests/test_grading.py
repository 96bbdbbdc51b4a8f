"""Answer extraction and numeric grading: every rule, on realistic small-model outputs.

Each case is (response, gold, expected extracted, expected correct, expected method), judged the way
a careful human reads the response. Symbolic (MATH-500) grading is in test_grading_symbolic.py.
"""

from __future__ import annotations

import pytest

from pspo_eval.grading import GradingPolicy, grade, grade_many, kind_of, parse_gold, policy_for
from pspo_eval.grading.numeric import Num, format_fraction, numbers_match, parse_number
from pspo_eval.records import Grade

# --- the '####' rule ---------------------------------------------------------------------------------

HASH_CASES = [
    ("Janet sells 16 - 3 - 4 = 9 eggs.\nShe makes 9 * 2 = $18.\n#### 18", "18", "18", True),
    ("#### 18", "18", "18", True),
    ("####18", "18", "18", True),
    ("#### 18.", "18", "18", True),
    ("#### 18.00", "18", "18", True),
    ("#### $18", "18", "18", True),
    ("#### \\$18", "18", "18", True),
    ("#### $18$", "18", "18", True),
    ("#### **18**", "18", "18", True),
    ("#### 18 dollars", "18", "18", True),
    ("#### 18 eggs.", "18", "18", True),
    ("#### 1,234", "1234", "1234", True),
    ("#### $1,234.50", "1234.5", "1234.5", True),
    ("#### 70,000", "70000", "70000", True),
    ("#### -7", "-7", "-7", True),
    ("#### \u22127", "-7", "-7", True),
    ("#### 0.5", "0.5", "0.5", True),
    ("#### .5", "0.5", "0.5", True),
    ("#### 3/4", "0.75", "0.75", True),
    ("#### \\frac{3}{4}", "0.75", "0.75", True),
    ("#### \\dfrac{3}{4}", "0.75", "0.75", True),
    ("#### -\\frac{1}{3}", "-1/3", "-1/3", True),
    ("#### 1.5e3", "1500", "1500", True),
    ("#### 2.5 \\times 10^{3}", "2500", "2500", True),
    ("#### \\boxed{18}", "18", "18", True),
    ("#### Final answer: 18", "18", "18", True),
    ("#### The answer is 18", "18", "18", True),
    ("#### x = 18", "18", "18", True),
    ("#### Total cost = $18", "18", "18", True),
    ("#### 16 - 3 - 4 = 9 * 2 = 18", "18", "18", True),
    ("#### (16 - 3 - 4) * 2 = 18", "18", "18", True),
    ("####\n18", "18", "18", True),
    ("#### eighteen", "18", "18", True),
    ("#### twenty-five", "25", "25", True),
    ("#### 2 million", "2000000", "2000000", True),
    ("#### 10,\\!080", "10080", "10080", True),
    ("#### 11,\\! 111,\\! 100", "11111100", "11111100", True),
    ("#### \u20ac18", "18", "18", True),
    ("#### \u00a31,200.50", "1200.5", "1200.5", True),
    ("#### -$5", "-5", "-5", True),
    ("#### 17", "18", "17", False),
    ("#### 180", "18", "180", False),
    ("#### 1.8", "18", "1.8", False),
]


@pytest.mark.parametrize("response,gold,extracted,correct", HASH_CASES)
def test_hash_rule(response, gold, extracted, correct):
    g = grade("gsm8k", response, gold)
    assert (g.extracted, g.correct, g.method) == (extracted, correct, "hash")


def test_first_hash_wins_over_a_made_up_continuation():
    # Small models keep going after their answer, often with a new problem and a new '####'.
    response = (
        "She has 5 + 3 = 8 apples.\n#### 8\n\n"
        "John buys 3 pens at $4 each. How much does he spend?\n3 * 4 = 12\n#### 12"
    )
    g = grade("gsm8k", response, "8")
    assert (g.extracted, g.correct, g.strict, g.method) == ("8", True, True, "hash")
    assert not grade("gsm8k", response, "12").correct


def test_hash_then_answer_sentence_the_demo_model_way():
    g = grade("gsm8k", "Melanie has 5 vacuum cleaners left.\n#### 5\nThe answer is: 5", "5")
    assert (g.extracted, g.correct, g.strict, g.method) == ("5", True, True, "hash")


def test_repeated_hash_lines():
    response = "The final answer is 100.\n#### 100\nThe final answer is 100.\n#### 100\n#### 100\nThe final"
    g = grade("gsm8k", response, "100")
    assert (g.correct, g.strict, g.method) == (True, True, "hash")


@pytest.mark.parametrize(
    "heading",
    [
        "#### Step 1: Find the eggs left",
        "#### Step 2: 16 - 3 = 13",
        "#### 1. Compute the cost",
        "#### Solution:",
    ],
)
def test_markdown_headings_are_not_answers(heading):
    response = f"{heading}\nJanet has 16 - 3 - 4 = 9 eggs.\nShe makes 9 * 2 = 18 dollars.\n#### 18"
    g = grade("gsm8k", response, "18")
    assert (g.extracted, g.correct, g.method) == ("18", True, "hash")
    # and without a final '####', the heading is still not read as the answer
    g = grade("gsm8k", f"{heading}\nShe makes 9 * 2 = 18 dollars.", "18")
    assert (g.extracted, g.correct, g.method) == ("18", True, "last_number")


def test_numbered_line_is_a_heading_only_when_more_follows():
    g = grade("gsm8k", "She has 9 * 2 = 18 dollars.\n#### 18. That is the total.", "18")
    assert (g.extracted, g.correct, g.strict, g.method) == ("18", True, True, "hash")


def test_answer_is_not():
    g = grade("gsm8k", "The answer is not 18, it is 20.", "20")
    assert (g.extracted, g.correct) == ("20", True)


def test_negative_money():
    assert grade("gsm8k", "So she owes -$5.", "-5").correct
    assert grade("gsm8k", "#### -$5", "-5").correct


def test_five_hashes_are_not_the_marker():
    g = grade("gsm8k", "##### 12\nSo the total is 18.", "18")
    assert (g.extracted, g.method) == ("18", "last_number")


# --- strict vs lenient -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response,strict",
    [
        ("#### 18", True),
        ("#### -18", False),  # gold is 18: wrong, so never strict
        ("#### $18", False),  # lm-eval strict-match shape: a number right after '####'
        ("#### Final answer: 18", False),
        ("The answer is 18.", False),
        ("\\boxed{18}", False),
        ("So she makes 18 dollars.", False),
    ],
)
def test_strict_needs_the_paper_format_and_a_correct_answer(response, strict):
    g = grade("gsm8k", response, "18")
    assert g.strict is strict
    if response != "#### -18":
        assert g.correct


def test_strict_is_false_for_a_wrong_hash_answer():
    g = grade("gsm8k", "#### 17", "18")
    assert (g.correct, g.strict) == (False, False)


# --- \boxed ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response,gold,extracted,correct",
    [
        ("So the answer is $\\boxed{18}$.", "18", "18", True),
        ("\\boxed{18 \\text{ eggs}}", "18", "18", True),
        ("\\boxed{\\$1,234.50}", "1234.5", "1234.5", True),
        ("\\boxed{\\frac{3}{4}}", "0.75", "0.75", True),
        ("\\boxed{x = 5}", "5", "5", True),
        ("\\boxed{\\text{\\textbf{42}}}", "42", "42", True),
        ("First \\boxed{12}, then I rechecked: \\boxed{18}", "18", "18", True),  # the last box
        ("\\fbox{18}", "18", "18", True),
        ("\\boxed{1{,}234}", "1234", "1234", True),
        ("\\boxed{17}", "18", "17", False),
    ],
)
def test_boxed_rule(response, gold, extracted, correct):
    g = grade("gsm8k", response, gold)
    assert (g.extracted, g.correct, g.method) == (extracted, correct, "boxed")


def test_boxed_with_nested_braces_and_unbalanced_last_box():
    g = grade("gsm8k", "We get \\boxed{\\frac{\\text{36}}{2}} ... then \\boxed{", "18")
    # the last box is unbalanced (truncated response): the previous complete one is read
    assert g.method == "boxed"
    assert g.extracted == "18"
    assert g.correct


def test_hash_is_preferred_over_boxed():
    g = grade("gsm8k", "The total is \\boxed{20}.\n#### 18", "18")
    assert (g.extracted, g.method) == ("18", "hash")


# --- 'the answer is' -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response,gold,extracted,correct",
    [
        ("The answer is: 5 apples", "5", "5", True),
        ("So, the final answer is 18.", "18", "18", True),
        ("Final answer: 18", "18", "18", True),
        ("**Answer:** 18", "18", "18", True),
        ("The answer is $18.", "18", "18", True),
        ("The answer is $1,234.50.", "1234.5", "1234.5", True),
        ("The answer is 5 + 3 = 8 apples.", "8", "8", True),
        ("The answer to the question is 42.", "42", "42", True),
        ("The answer would be -3.", "-3", "-3", True),
        ("Therefore, the answer is eighteen.", "18", "18", True),
        ("So the answer is 2.5 * 100 = 250 years.", "13", "250", False),
        ("The final answer is $\\frac{3}{4}$.", "0.75", "0.75", True),
        ("Answer:\n18", "18", "18", True),
    ],
)
def test_answer_is_rule(response, gold, extracted, correct):
    g = grade("gsm8k", response, gold)
    assert (g.extracted, g.correct, g.method) == (extracted, correct, "answer_is")


def test_last_answer_is_phrase_wins():
    response = "First I thought the answer is 12. Wait, that is wrong.\nSo the final answer is 18."
    g = grade("gsm8k", response, "18")
    assert (g.extracted, g.correct, g.method) == ("18", True, "answer_is")


def test_answer_phrase_without_a_number_is_skipped():
    g = grade("gsm8k", "To find the answer, we add 9 and 9 to get 18.", "18")
    assert (g.extracted, g.method) == ("18", "last_number")


# --- the last-number fallback ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response,gold,extracted,correct",
    [
        ("She makes 9 * 2 = $18 every day.", "18", "18", True),
        ("So she makes $18.", "18", "18", True),
        ("Therefore Janet makes 18 dollars per day at the market.", "18", "18", True),
        ("The total is $1,234.50.", "1234.5", "1234.5", True),
        ("The list is 1, 2, 3", "3", "3", True),  # '1, 2, 3' is a list, not 123
        ("16-3-4=9", "9", "9", True),
        ("x = -5", "-5", "-5", True),
        ("The temperature dropped to -5 degrees.", "-5", "-5", True),
        ("It costs 3-4 dollars", "4", "4", True),  # a hyphen after a digit is not a sign
        ("That is 25% of the class.", "25", "25%", True),
        ("She ran 2.5 miles.", "2.5", "2.5", True),
        ("He has 2 million dollars", "2000000", "2000000", True),
        ("The speed is 3e8 m/s", "300000000", "300000000", True),
        ("Janet starts with 18 eggs and sells 20 of them for 40 dollars.", "18", "40", False),
    ],
)
def test_last_number_rule(response, gold, extracted, correct):
    g = grade("gsm8k", response, gold)
    assert (g.extracted, g.correct, g.method) == (extracted, correct, "last_number")


def test_wrong_answers_that_mention_the_right_number_earlier_are_wrong():
    cases = [
        ("Janet has 16 eggs and eats 3, leaving 18 - 5 = 13.\n#### 13", "18"),
        ("She makes $18 per day, so in a week she makes 18 * 7 = $126.\n#### 126", "18"),
        ("18 is too small. The answer is 20.", "18"),
        ("First she has 18 eggs. \\boxed{24}", "18"),
        ("We know 18 = 9 * 2. Then 18 + 2 = 20 eggs in total.", "18"),
    ]
    for response, gold in cases:
        g = grade("gsm8k", response, gold)
        assert not g.correct, (response, g)
        assert not g.strict


def test_nothing_to_extract():
    for response in ["", "   ", "I don't know.", "####", "#### ???", "\\boxed{}"]:
        g = grade("gsm8k", response, "18")
        assert g.model_dump(exclude={"why"}) == Grade(extracted=None, correct=False, strict=False, method="none").model_dump(exclude={"why"})
        assert g.why.startswith("no rule found an answer")


# --- end of turn and made-up next turns ------------------------------------------------------------------


def test_text_after_end_of_turn_token_is_ignored():
    g = grade("gsm8k", "So she makes $18.<|im_end|>\n<|im_start|>user\nWhat is 5 + 7?", "18")
    assert (g.extracted, g.correct) == ("18", True)
    g = grade("gsm8k", "#### 18</s>Question: what is 2+2? #### 4", "18")
    assert (g.extracted, g.correct, g.method) == ("18", True, "hash")


def test_hallucinated_next_question_is_cut():
    response = (
        "She makes 9 * 2 = 18 dollars.\n\nQuestion: Tom has 3 apples and buys 4 more. How many?\nAnswer: 7"
    )
    g = grade("gsm8k", response, "18")
    assert (g.extracted, g.correct, g.method) == ("18", True, "last_number")
    response = "The answer is 18.\nUser: thanks! What about 3 + 4?\nThat is 7."
    assert grade("gsm8k", response, "18").correct


def test_a_restated_question_at_the_start_is_kept():
    response = "Question: How much does Janet make?\nShe sells 9 eggs at $2, so she makes $18.\n#### 18"
    g = grade("gsm8k", response, "18")
    assert (g.correct, g.strict) == (True, True)


# --- realistic rambling outputs (the style of 0.1B-1.5B instruct models) -----------------------------------


REALISTIC = [
    (
        "To solve this problem, we need to find out how many eggs Janet has left.\n\n"
        "Step 1: Janet's ducks lay 16 eggs per day.\nStep 2: She eats 3 for breakfast, so 16 - 3 = 13.\n"
        "Step 3: She bakes with 4, so 13 - 4 = 9 eggs are left.\nStep 4: She sells each for $2, so 9 x $2 = $18.\n\n"
        "Therefore, Janet makes $18 every day at the farmers' market.\n\n#### 18",
        "18",
        "18",
        True,
        True,
        "hash",
    ),
    (
        "Let's break it down:\n- Blue fiber: 2 bolts\n- White fiber: half of 2 = 1 bolt\n"
        "Total: 2 + 1 = 3 bolts.\n\nThe answer is: 3",
        "3",
        "3",
        True,
        False,
        "answer_is",
    ),
    (
        "Josh bought the house for $80,000 and spent $50,000 on repairs, for a total of $130,000.\n"
        "The value increased by 150%, so the new value is $80,000 * 2.5 = $200,000.\n"
        "Profit = $200,000 - $130,000 = $70,000.\n#### 70,000\nThe answer is 70,000.",
        "70000",
        "70000",
        True,
        True,
        "hash",
    ),
    (
        "He runs 3 sprints 3 times a week, which is 3 * 3 = 9 sprints. Each sprint is 60 meters, "
        "so 9 * 60 = 540 meters.\n\n**Final Answer:** 540 meters",
        "540",
        "540",
        True,
        False,
        "answer_is",
    ),
    (
        "Total profit = Profit * Original price = $62,500 * $80,000 = $56,250,000\n\nSo, the answer is 56,250,000.",
        "70000",
        "56250000",
        False,
        False,
        "answer_is",
    ),
    (
        "So, 20 chickens * 3 meals per chicken = 60 meals per chicken.\nTotal feed needed = 60 + 60 = 120.\n\n"
        "So, the answer is 120.\n\nThe final answer is 120.",
        "20",
        "120",
        False,
        False,
        "answer_is",
    ),
    (
        "Kylar pays 5 * 16 / 2 = $40 for the cheap glasses and 5 * 0.6 * 16 / 2 = $24 for the others. "
        "In total 40 + 24 = $64.\n#### $64",
        "64",
        "64",
        True,
        False,
        "hash",
    ),
    (
        "The percentage is (15 / 60) * 100 = 25%.\n#### 25%",
        "25",
        "25%",
        True,
        True,
        "hash",
    ),
    (
        "The load time is 200 GB/minute * 2 = 400 GB/minute * 2 = 800 GB/minute * 2 = 1600 GB/minute * 2 = 3",
        "160",
        "3",
        False,
        False,
        "last_number",
    ),
    (
        "Eliza's earnings for this week are $16.25 * 45 hours = $72.50.\n\nSo, her earnings for this week are $72.50.",
        "72.5",
        "72.5",
        True,
        False,
        "last_number",
    ),
    (
        "First, find the cost of the apples: 4 * $0.50 = $2.00.\nThen the oranges: 3 * $0.75 = $2.25.\n"
        "Total: $2.00 + $2.25 = $4.25\n\n#### 4.25\n\nI hope this helps! Let me know if you have other questions.",
        "4.25",
        "4.25",
        True,
        True,
        "hash",
    ),
    (
        "The temperature changed from 5 to -3, a change of -3 - 5 = -8 degrees.\n#### -8",
        "-8",
        "-8",
        True,
        True,
        "hash",
    ),
    (
        "We need to find the total number of legs.\n\n#### Step 1: Chickens\n10 chickens * 2 legs = 20 legs\n\n"
        "#### Step 2: Cows\n5 cows * 4 legs = 20 legs\n\n#### Step 3: Total\n20 + 20 = 40 legs\n\n#### 40",
        "40",
        "40",
        True,
        True,
        "hash",
    ),
]


# Real outputs of the bundled demo model (SmolLM2-135M-Instruct, the paper's system prompt), tails kept.
DEMO_MODEL = [
    (
        "To find the total amount of money she makes every day, she makes 1440 / 16 = 720 dollars per day.\n\n"
        "#### 720\n\nThe answer is: 720",
        "18",
        "720",
        False,
        False,
        "hash",
    ),
    (
        "Total profit = Profit * Original price = $62,500 * $80,000 = $56,250,000\n\nSo, the answer is 56,250,000.",
        "70000",
        "56250000",
        False,
        False,
        "answer_is",
    ),
    (
        "Melanie started with 5 + 16 leftover = 24 leftover = 5^3 = 125.\nThe number of leftover she started with is 125.\n"
        "#### 125\nThe answer is: 125",
        "18",
        "125",
        False,
        False,
        "hash",
    ),
    (
        "Charlotte = 160 + 160 = 220\n\nTherefore,\nSeattle has 20 + 20 = 40 sheep.\n\nThe answer is\n220\n\n"
        "A very thorough math solver can do it for you.",
        "260",
        "220",
        False,
        False,
        "answer_is",
    ),
    (
        "Last but not least, A robe is made up of one white fiber that takes two bolts of blue fiber.\n"
        "This answer is in the format: 4 * 2 * 2 = 16 bolts.",
        "3",
        "16",
        False,
        False,
        "answer_is",
    ),
    (
        "He runs 9 sprints / 3 = 27 sprints per week.\nTherefore, he runs 238 / 27 = 9.44 meters per week.\n#### 9.44",
        "540",
        "9.44",
        False,
        False,
        "hash",
    ),
    (
        "He has 2 customers on Tuesday.\nHe has 2 customers on Tuesday.\nHe has 2 customers on Tuesday.\nHe has ",
        "7",
        "2",
        False,
        False,
        "last_number",
    ),
    (
        "Finally, we can find the difference between the two events: 12 - 48 = 12 years ago.\n\n"
        "So, the answer is 12 years ago.\n\nThe answer is 12.",
        "12",
        "12",
        True,
        False,
        "answer_is",
    ),
    (
        "The number of calories burned by the candle is 20 / 1.10 = 15 calories.\n\n"
        "The number of calories burned by the candle is 15 - 20 = ",
        "8",
        "20",
        False,
        False,
        "last_number",
    ),
]


@pytest.mark.parametrize("response,gold,extracted,correct,strict,method", DEMO_MODEL)
def test_demo_model_outputs(response, gold, extracted, correct, strict, method):
    g = grade("gsm8k", response, gold)
    assert (g.extracted, g.correct, g.strict, g.method) == (extracted, correct, strict, method)


@pytest.mark.parametrize("response,gold,extracted,correct,strict,method", REALISTIC)
def test_realistic_outputs(response, gold, extracted, correct, strict, method):
    g = grade("gsm8k", response, gold)
    assert (g.extracted, g.correct, g.strict, g.method) == (extracted, correct, strict, method)


# --- numbers and their comparison -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,value",
    [
        ("18", "18"),
        ("1,234", "1234"),
        ("1,234,567.5", "1234567.5"),
        ("-3/4", "-0.75"),
        ("$18.00", "18"),
        ("51.0", "51"),
        ("1e-3", "0.001"),
        ("10/3", "10/3"),
        ("2 thousand", "2000"),
    ],
)
def test_parse_number(text, value):
    n = parse_number(text)
    assert n is not None and format_fraction(n.value) == value


@pytest.mark.parametrize("text", ["", "abc", "1, 2", "1 2", "1e99999", "9" * 200, "1/0", "--5"])
def test_parse_number_refuses_non_numbers(text):
    assert parse_number(text) is None


@pytest.mark.parametrize(
    "answer,gold,match",
    [
        ("25%", "25", True),  # '25%' matches a gold written as the percentage...
        ("25%", "0.25", True),  # ...and as the fraction
        ("0.25", "25", False),  # a bare fraction does not match a percentage gold
        ("25", "25%", True),
        ("0.25", "25%", True),
        ("3.3333", "3.333", True),  # gold rounded to 3 decimals (ASDiv '3.333 (minutes)')
        ("10/3", "3.333", True),
        ("3.33", "3.333", False),  # a less precise answer than a decimal gold is not accepted
        ("0.33", "1/3", True),  # ...unless the gold has no finite decimal form
        ("0.3", "1/3", False),  # one decimal is not enough to call it a rounding
        ("7", "7.333", False),
        ("7.4", "7", False),
        ("1.24", "1.2", False),
        ("2.4", "2.42", False),
        ("0.30000000000000004", "0.3", True),  # float-printing noise
        ("18.0000001", "18", False),
        ("100000000", "100000001", False),  # no relative slack on large integers
        ("1/2", "0.5", True),
    ],
)
def test_numbers_match(answer, gold, match):
    a, g = parse_number(answer), parse_number(gold)
    assert a is not None and g is not None
    assert numbers_match(a, g) is match


def test_num_canonical():
    assert Num(18, 0).canonical() == "18"
    assert parse_number("25%").canonical() == "25%"
    assert parse_number("-0.50").canonical() == "-0.5"


# --- gold formats of the numeric benchmarks ----------------------------------------------------------------


@pytest.mark.parametrize(
    "gold,kind",
    [
        ("18", "number"),
        ("51.0", "number"),  # SVAMP as published
        ("9 (apples)", "number"),  # ASDiv as published
        ("5/2", "number"),
        ("-(1/3)", "number"),
        ("-1/3", "number"),
        ("Janet sells 9 eggs.\n#### 1,080", "number"),  # a whole GSM8K solution
        ("5; 15; 20", "list"),
        ("5 (years old); 15 (years old)", "list"),
        ("3:5", "text"),
        ("3:30 p.m.", "text"),
        ("Mrs. Hilt", "text"),
    ],
)
def test_parse_gold_kinds(gold, kind):
    assert parse_gold(gold).kind == kind


def test_svamp_and_gsm8k_style_golds():
    assert grade("svamp", "#### 51", "51.0").correct
    assert grade("svamp", "The answer is 51.", "51").correct
    assert grade("gsm8k_train", "#### 1080", "Annotated solution text\n#### 1,080").correct


def test_asdiv_single_number_golds():
    assert grade("asdiv", "#### 9", "9 (apples)").correct
    assert grade("asdiv", "The answer is 2.5 cups.", "5/2").correct
    assert grade("asdiv", "#### -1/3", "-1/3").correct
    assert grade("asdiv", "#### -0.33", "-1/3").correct
    assert grade("asdiv", "#### 1.333 hours", "1.33").correct
    assert not grade("asdiv", "#### 1.3 hours", "1.33").correct


def test_asdiv_multi_answer_rows():
    """ASDiv rows with several answers (meta.multi_answer): how each kind is graded.

    - ';' lists: all values must be present, in any order (the k numbers of the answer segment,
      or the last k numbers of the text);
    - ratios and clock times: the same written form ('3:5', '3 : 5'; '3:30 p.m.' ~ '3:30 PM'),
      from an explicit answer or the last such token of the text; '3/5' or '6:10' are not accepted;
    - names and phrases: an explicit answer whose words begin with the gold's words.
    """
    gold = "5; 15; 20"
    assert grade("asdiv", "#### 5, 15, 20", gold).correct
    assert grade("asdiv", "#### 20, 15 and 5", gold).correct
    assert grade("asdiv", "Tom is 5, Ann is 15 and Bob is 20 years old.", gold).correct
    assert not grade("asdiv", "#### 5, 15", gold).correct
    assert not grade("asdiv", "#### 5, 15, 21", gold).correct
    g = grade("asdiv", "\\boxed{5}, \\boxed{15}, \\boxed{20}", gold)
    assert (g.correct, g.method) == (True, "boxed")

    assert grade("asdiv", "#### 3:5", "3:5").correct
    assert grade("asdiv", "The ratio of boys to girls is 3 : 5.", "3:5").correct
    assert not grade("asdiv", "#### 6:10", "3:5").correct
    assert not grade("asdiv", "#### 3/5", "3:5").correct
    assert grade("asdiv", "She arrives at 3:30 PM.", "3:30 p.m.").correct
    assert grade("asdiv", "#### 3:30 p.m.", "3:30 p.m.").correct

    assert grade("asdiv", "#### Mrs. Hilt", "Mrs. Hilt").correct
    assert grade("asdiv", "The answer is Mrs. Hilt, who has more money.", "Mrs. Hilt").correct
    assert grade("asdiv", "#### The men's track team", "The men's track team").correct
    assert not grade("asdiv", "#### Mr. Hilt", "Mrs. Hilt").correct
    assert grade("asdiv", "#### February 3", "February 3rd").correct
    assert grade("asdiv", "The answer is the 60th caller.", "The 60th caller.").correct
    g = grade("asdiv", "Mrs. Hilt has more money.", "Mrs. Hilt")  # no explicit answer: not guessed
    assert (g.correct, g.method) == (False, "none")


# --- policies and the API --------------------------------------------------------------------------------------


def test_policies():
    assert policy_for("gsm8k").kind == "numeric"
    assert policy_for("gsm8k_train").kind == "numeric"
    assert policy_for("svamp").kind == "numeric"
    assert policy_for("asdiv").kind == "numeric"
    assert policy_for("math500").kind == "symbolic"
    assert policy_for("MATH-500").name == "math500"
    assert kind_of("my_benchmark", "42") == "numeric"
    assert kind_of("my_benchmark", "\\frac{1}{2}") == "numeric"  # a number, in LaTeX
    assert kind_of("my_benchmark", "\\sqrt{2}") == "symbolic"
    assert kind_of("my_benchmark", "x^2 + 1") == "symbolic"
    assert isinstance(policy_for("other", "x"), GradingPolicy)
    assert "hash" in policy_for("gsm8k").strict_methods and "boxed" not in policy_for("gsm8k").strict_methods
    assert "boxed" in policy_for("math500").strict_methods


def test_unknown_dataset_with_numeric_gold_is_graded_numerically():
    g = grade("my_benchmark", "So the result is 42.", "42")
    assert (g.correct, g.method) == (True, "last_number")


def test_grade_many_keeps_order():
    pairs = [("#### 1", "1"), ("#### 2", "3"), ("The answer is 3.", "3"), ("nothing", "4")]
    grades = grade_many("gsm8k", pairs)
    assert [g.correct for g in grades] == [True, False, True, False]
    assert [g.method for g in grades] == ["hash", "hash", "answer_is", "none"]
    assert grades == [grade("gsm8k", r, g) for r, g in pairs]


def test_gold_as_a_number_is_accepted():
    assert grade("gsm8k", "#### 18", 18).correct  # type: ignore[arg-type]
    assert grade("svamp", "#### 51", 51.0).correct  # type: ignore[arg-type]


def test_known_limits_documented_in_docs_grading():
    # nothing is evaluated
    assert grade("gsm8k", "\\boxed{5+3}", "5").extracted == "5"
    assert not grade("gsm8k", "\\boxed{5+3}", "8").correct
    # mixed numbers in numeric grading read their whole part
    assert grade("gsm8k", "#### 1\\frac{1}{2}", "1").extracted == "1"
    # several values after one '####': the first one
    assert grade("gsm8k", "#### 1, 2, 3", "1").correct
    # flexible-extract semantics: a truncated response's last number counts as lenient-correct, never strict
    g = grade("gsm8k", "We take the number of chickens, which is 20, and subtracting those", "20")
    assert (g.correct, g.strict, g.method) == (True, False, "last_number")
