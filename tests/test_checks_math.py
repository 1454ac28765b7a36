"""Math answers: boxed extraction (property-tested), the exact shortcut, and math-verify in a pool."""

from __future__ import annotations

import json
import multiprocessing
import pickle
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from posttrain.schema import NEMOTRON_SCHEMA
from posttrain.stages.checks.math import BoxedAnswerCheck, boxed_answers, quick_verdict, same_answer
from posttrain.stages.checks.verify_pool import TIMEOUT, VerifyPool, verify_answer

SLOW = r"9^{9^{9^{9}}}"  # math-verify parses it at once, then sympy grinds on 9**(9**(9**9)) for ever


def row(answer, expected="\\frac{1}{2}", category="math"):
    meta = json.dumps({"expected_answer": expected}) if expected is not None else "{}"
    return {
        "uuid": "u", "category": category, "reasoning": "on", "metadata": meta,
        "messages": [{"role": "user", "content": "q", "tool_calls": []},
                     {"role": "assistant", "content": answer, "tool_calls": []}],
    }  # fmt: skip


def run(check, *rows):
    b = pa.RecordBatch.from_pylist(list(rows), schema=NEMOTRON_SCHEMA)
    return check.process(b).column("reasons").to_pylist()


def test_boxed_extraction_tricky():
    assert boxed_answers(r"\boxed{\frac{1}{2}}") == [r"\frac{1}{2}"]
    assert boxed_answers(r"\boxed{\left\{ 1, 2 \right\}}") == [r"\left\{ 1, 2 \right\}"]
    assert boxed_answers(r"\boxed {x^{2}} then \fbox{3}") == ["x^{2}", "3"]
    assert boxed_answers(r"\boxed{never closed") == []
    assert boxed_answers("答案是 \\boxed{五}") == ["五"]


balanced = st.recursive(
    st.text(alphabet="abc123+-^ ", max_size=5),
    lambda inner: st.builds(lambda a, b: a + "{" + b + "}", st.text(alphabet="xy ", max_size=3), inner),
    max_leaves=6,
)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="pq .\n", max_size=10), balanced, st.text(alphabet="rs .\n", max_size=10))
def test_boxed_roundtrip(before, inner, after):
    assert boxed_answers(f"{before}\\boxed{{{inner}}}{after}") == [inner]


def test_same_answer_shortcut():
    assert same_answer(r"\dfrac{1}{2}", r"\frac{1}{2}")
    assert same_answer("(1, 2)", r"\left( 1,\ 2 \right)")
    assert same_answer(r"\boxed{7}", "7.")
    assert same_answer("0.5", r"\frac{1}{2}") and same_answer("-3/4", r"-\frac{6}{8}")  # exact numbers
    assert quick_verdict("44", "45") == "mismatch"
    assert quick_verdict("x+1", "1+x") is None  # symbolic: math-verify's to decide


def test_math_codes_with_pool():
    check = BoxedAnswerCheck(verify_timeout=5)
    rows = [
        row("<think>t \\boxed{9}</think>so \\boxed{\\frac{1}{2}}"),  # boxed in the trace does not count
        row("<think>t</think>so \\boxed{0.5}"),  # equal by math-verify
        row("<think>t</think>so \\boxed{3}"),
        row("<think>t \\boxed{\\frac{1}{2}}</think>the answer is one half"),
        row("<think>t</think>\\boxed{1} or \\boxed{\\frac{1}{2}}"),
        row("<think>t</think>\\boxed{\\frac{1}{2}} and again \\boxed{\\dfrac{1}{2}}"),
        row("<think>t</think>\\boxed{)(}", expected="\\frac{1}{2}"),
        row("<think>t</think>no answer", category="chat"),
        row("<think>never closed \\boxed{3}"),
        row("<think>t</think>\\boxed{5}", expected=None),
        row("<think>t</think>\\boxed{1 + x}", expected="x+1"),  # math-verify: equal
        row("<think>t</think>\\boxed{x^3}", expected="x^2"),  # math-verify: different
    ]
    try:
        got = run(check, *rows)
    finally:
        check.close()
    assert got == [
        [], [], ["math.mismatch"], ["math.no_boxed"], ["math.multiple_boxed"], [], ["math.unverifiable"], [], [], [],
        [], ["math.mismatch"],
    ]  # fmt: skip


def pool_children(before: set[int]) -> set[int]:
    return {p.pid for p in multiprocessing.active_children()} - before


def test_check_pickles_without_its_workers():
    before = pool_children(set())
    check = BoxedAnswerCheck()
    clone = None
    try:
        assert run(check, row("<think>t</think>\\boxed{1+x}", expected="x+1")) == [[]]  # starts a worker
        started = pool_children(before)
        assert len(started) == 1
        clone = pickle.loads(pickle.dumps(check))
        assert pool_children(before) == started  # unpickling started nothing: workers are not state
        assert run(clone, row("<think>t</think>\\boxed{x^3}", expected="x^2")) == [["math.mismatch"]]
        assert len(pool_children(before) - started) == 1  # the clone has its own worker
    finally:
        check.close()
        if clone is not None:
            clone.close()
    assert pool_children(before) == set()


def test_verifier_outcomes_from_several_threads_with_at_most_its_workers():
    """Validation judges batches on threads that share one check: the pool stays at `workers` processes."""
    before = pool_children(set())
    v = VerifyPool(timeout=5, workers=2)
    pairs = [("2", "2.0"), ("x+1", "1+x"), ("3", "4"), ("1", ""), ("2x", "x+x")]
    try:
        with ThreadPoolExecutor(4) as threads:
            got = list(threads.map(lambda k: v.verify_many(pairs[k:] + pairs[:k]), range(4)))
        assert len(pool_children(before)) == 2
    finally:
        v.close()
    verdicts = ["ok", "ok", "mismatch", "unverifiable", "ok"]
    assert [[o.verdict for o in g] for g in got] == [verdicts[k:] + verdicts[:k] for k in range(4)]
    assert pool_children(before) == set()


def test_a_math_verify_timeout_is_its_own_code_and_the_next_rows_are_still_graded():
    """math-verify reports its own timeout as False: the pool times it, so validation says
    math.verify_timeout (a warning), not math.mismatch (an error that would reject the row)."""
    assert verify_answer("1", SLOW, 1) == TIMEOUT  # the worker's function itself, on this main thread
    before = pool_children(set())
    check = BoxedAnswerCheck(verify_timeout=1)
    try:
        got = run(check,
                  row(f"<think>t</think>\\boxed{{{SLOW}}}", expected="1"),
                  row("<think>t</think>\\boxed{1 + x}", expected="x+1"),
                  row("<think>t</think>\\boxed{x^3}", expected="x^2"))  # fmt: skip
    finally:
        check.close()
    assert got == [["math.verify_timeout"], [], ["math.mismatch"]]
    assert pool_children(before) == set()


def test_a_worker_past_the_deadline_is_killed_alone_and_replaced():
    """The caller's own deadline (here before math-verify's alarm would fire): that worker is killed, the
    other goes on, the next item gets a fresh worker, and closing leaves no process behind."""
    before = pool_children(set())
    pool = VerifyPool(timeout=60, workers=2, deadline_s=3)
    try:
        got = pool.verify_many([("1", SLOW), ("x+1", "1+x"), ("x^2", "x^3"), ("1", SLOW)])
        assert [o.verdict for o in got] == ["timeout", "ok", "mismatch", "timeout"]
        assert "killed" in got[0].detail and got[1].detail == ""
        assert len(pool_children(before)) <= 2  # killed workers are gone, not piling up
        assert pool.verify("2x", "x+x").verdict == "ok"
    finally:
        pool.close()
    assert pool_children(before) == set()


def test_decorated_expected_answers_are_reduced_to_their_stated_answer():
    # issue 12 item 9: real expected_answer values such as `$V=\frac{2}{3}m^3…=\frac{m^3…}{3}$`
    from posttrain.stages.checks.math import answer_core

    volume = r"$V=\frac{2}{3}m^3\sqrt{2}=\frac{2\sqrt{2}m^3}{3}$"
    assert answer_core(volume) == r"\frac{2\sqrt{2}m^3}{3}"
    assert quick_verdict(volume, r"\frac{2\sqrt{2}m^3}{3}") == "ok"
    assert quick_verdict("x = 5", "5") == "ok" and quick_verdict("x=5", "x = 5") == "ok"
    assert quick_verdict(r"\boxed{f(x)=2x+1}", "2x+1") == "ok"
    assert quick_verdict("n = 12", "13") == "mismatch"
    assert quick_verdict("a=1, b=2", "2") is None  # a list of assignments keeps its form: math-verify decides
    assert answer_core(r"x \le 3") == r"x \le 3" and answer_core("x <= 3") == "x <= 3"
    check = BoxedAnswerCheck(verify_timeout=5)
    try:
        got = run(check,
                  row(r"<think>t</think>so \boxed{\frac{2\sqrt{2}m^3}{3}}", expected=volume),
                  row(r"<think>t</think>\boxed{V = \dfrac{2\sqrt{2}\,m^3}{3}}", expected=volume),
                  row(r"<think>t</think>\boxed{\frac{m^3}{3}}", expected=volume),
                  row(r"<think>t</think>\boxed{y=2+x}", expected="y = x + 2"))  # fmt: skip
    finally:
        check.close()
    assert got == [[], [], ["math.mismatch"], []]
