"""Graders and statistics: answer extraction, math-verify in worker processes (timeouts included),
letters, tool calls, Wilson intervals and McNemar."""

from __future__ import annotations

import threading

import pytest

from posttrain.eval.answers import (
    choice_letter,
    extract_code,
    final_math_answer,
    parse_tool_calls,
    same_calls,
)
from posttrain.eval.graders import Grader, grade_choice, grade_tools
from posttrain.eval.items import EvalItem
from posttrain.eval.stats import mcnemar_p, wilson_interval
from posttrain.stages.checks.verify_pool import VerifyPool


def math_item(answer: str, item_id: str = "1") -> EvalItem:
    return EvalItem("m", item_id, "math", question="q", answer=answer)


@pytest.fixture(scope="module")
def grader():
    g = Grader(math_timeout_s=2, workers=2)
    yield g
    g.close()


# ------------------------------------------------------------------------------------------ extraction


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"<think>maybe \boxed{3}</think>So \boxed{4}.", ("4", "boxed")),
        (r"\boxed{1} then \boxed{\frac{a}{b}}", (r"\frac{a}{b}", "boxed")),
        ("The final answer is: 12.", ("12", "final_answer")),
        ("Natalia sold 72 clips.\n#### 72", ("72", "hashes")),
        ("Answer: 1,234", ("1234", "answer_colon")),
        ("she has 3 then 9 apples", ("9", "last_number")),
        ("<think>I am still thinking about 7", (None, "unfinished_reasoning")),
        ("no numbers at all", (None, "none")),
    ],
)
def test_final_math_answer_reads_the_final_answer_only(text, expected):
    assert final_math_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "n", "letter"),
    [
        (r"Therefore \boxed{C}", 4, "C"),
        (r"\boxed{\text{B}}", 4, "B"),
        ("The correct answer is (D).", 4, "D"),
        ("**Answer: A**", 4, "A"),
        ("B", 4, "B"),
        ("C) because the sky is blue", 4, "C"),
        ("<think>A or B?</think>\n\nanswer: b", 4, "B"),
        ("Answer: (c)", 4, "C"),
        ("The answer is a tricky one.", 4, None),  # an article, not option A
        ("The answer is E.", 4, None),  # only A-D exist
        ("I don't know", 4, None),
    ],
)
def test_choice_letter(text, n, letter):
    assert choice_letter(text, n)[0] == letter


def test_extract_code_prefers_the_block_that_defines_the_entry_point():
    text = "helper:\n```python\nimport math\n```\nsolution:\n```python\ndef f(x):\n    return x\n```\n```\nf(1)\n```"
    assert extract_code(text, "f") == ("def f(x):\n    return x\n", "block_with_entry_point")
    assert extract_code("```python\ndef f():\n    pass", "f")[1] == "unclosed_block"


@pytest.mark.parametrize(
    "text",
    [
        '<TOOLCALL>[{"name": "get_weather", "arguments": {"city": "Osaka"}}]</TOOLCALL>',
        '<tool_call>\n{"name": "get_weather", "arguments": "{\\"city\\": \\"Osaka\\"}"}\n</tool_call>',
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Osaka"}}]',
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Osaka"}}',
        'Sure.\n```json\n{"name": "get_weather", "arguments": {"city": "Osaka"}}\n```',
        '<think>call it</think>{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Osaka"}}}',
    ],
)
def test_tool_calls_parse_in_every_template_format(text):
    assert parse_tool_calls(text) == [{"name": "get_weather", "arguments": {"city": "Osaka"}}]


def test_tool_call_grading_is_name_and_json_argument_equality_order_free():
    expected = [{"name": "a", "arguments": {"x": 1, "y": [1, 2]}}, {"name": "b", "arguments": {}}]
    item = EvalItem("t", "1", "tools", expected_calls=expected)
    both = '<TOOLCALL>[{"name": "b", "arguments": {}}, {"name": "a", "arguments": {"y": [1, 2], "x": 1.0}}]</TOOLCALL>'
    assert grade_tools(item, both).verdict == "correct"
    assert grade_tools(item, '<TOOLCALL>[{"name": "a", "arguments": {"x": 1, "y": [1, 2]}}]</TOOLCALL>').verdict == "wrong"
    wrong_arg = both.replace('"x": 1.0', '"x": 2')
    assert grade_tools(item, wrong_arg).verdict == "wrong"
    assert grade_tools(item, both.replace('"b"', '"c"')).verdict == "wrong"
    assert grade_tools(item, "I will not call anything.").verdict == "no_answer"
    assert not same_calls(expected, None)


def test_letter_grading():
    item = EvalItem("c", "1", "choice", choices=["w", "x", "y", "z"], answer="C")
    assert grade_choice(item, r"\boxed{C}").correct
    assert grade_choice(item, "The answer is B").verdict == "wrong"
    assert grade_choice(item, "hmm").verdict == "no_answer"


# ------------------------------------------------------------------------------------------ math


def test_math_grading_exact_math_verify_and_missing(grader):
    items = [math_item("18"), math_item(r"\frac{1}{2}"), math_item(r"\sqrt{2}/2"), math_item("(1,2)"),
             math_item("5"), math_item("7"), math_item("x^2+2x+1")]  # fmt: skip
    texts = [
        "so 18 vacuum cleaners.\n#### 18",  # exact after extraction
        r"\boxed{0.5}",  # math-verify: 1/2 == 0.5
        r"\boxed{\frac{1}{\sqrt{2}}}",  # math-verify: symbolic equality
        r"\boxed{\left( 1, 2 \right)}",  # normalization
        r"\boxed{6}",  # wrong
        "<think>it is 7 but I ran out of tokens",  # unfinished trace: no answer
        r"\boxed{(x+1)^2}",  # math-verify: expanded vs factored
    ]
    grades = grader.grade(items, texts)
    assert [g.verdict for g in grades] == ["correct", "correct", "correct", "correct", "wrong", "no_answer", "correct"]
    assert grades[0].method == "hashes+exact"
    assert grades[1].method == "boxed+exact"  # two exact numbers: decided without math-verify
    assert grades[2].method == grades[6].method == "boxed+math-verify"
    assert grades[5].method == "unfinished_reasoning"


def test_math_verify_runs_in_worker_processes_so_it_works_from_threads(grader):
    """math-verify's own timeout is signal.alarm, which raises off the main thread; the grader's workers
    run it on their main thread, so grading from a thread pool works."""
    out = {}

    def grade():
        out["grades"] = grader.grade([math_item(r"\frac{2}{4}")], [r"\boxed{0.5}"])

    t = threading.Thread(target=grade)
    t.start()
    t.join(60)
    assert out["grades"][0].verdict == "correct"


def test_math_verify_timeout_inside_the_worker_is_reported_as_timeout():
    """A comparison that uses up math-verify's time budget (its alarm fires in the worker) is a timeout,
    not a silent mismatch; the run goes on."""
    with Grader(math_timeout_s=1, workers=1) as g:
        slow, fine = g.grade([math_item("1"), math_item("x+1")], [r"\boxed{9^{9^{9^{9}}}}", r"\boxed{1+x}"])
    assert (slow.verdict, slow.method) == ("timeout", "boxed+math-verify")
    assert fine.verdict == "correct"  # the same worker goes on after a timeout
    assert g.describe()["math_verify_timeout_s"] == 1


def test_grader_maps_a_killed_math_worker_to_timeout():
    """The pool's own deadline (validation's pool: the same one) reaches the records as a timeout with why."""
    with Grader(math_timeout_s=1, workers=1) as g:
        g.math.close()
        g.math = VerifyPool(timeout=60, deadline_s=2)  # the deadline comes before math-verify's own alarm
        slow, fine = g.grade([math_item("1"), math_item("x+1")], [r"\boxed{9^{9^{9^{9}}}}", r"\boxed{1+x}"])
    assert (slow.verdict, slow.correct) == ("timeout", False) and "killed" in slow.detail
    assert fine.verdict == "correct"


# ------------------------------------------------------------------------------------------ statistics


@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    [(8, 10, 0.4902, 0.9433), (0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0), (50, 100, 0.4038, 0.5962),
     (1, 30, 0.0059, 0.1667)],
)  # fmt: skip
def test_wilson_interval_matches_published_values(k, n, lo, hi):
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)


def test_wilson_interval_agrees_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    for k, n in [(3, 7), (150, 500), (29, 30), (0, 1)]:
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson_interval(k, n) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_wilson_edge_cases_and_mcnemar():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    assert mcnemar_p(0, 6) == pytest.approx(2 / 64)
    assert mcnemar_p(5, 5) == 1.0
    assert mcnemar_p(1, 9) == pytest.approx(2 * 11 / 1024)
