"""Eval items: built-in offline sets with answers and coverage, hub sets read with `datasets` from local
files laid out like the hub repos, and the held-out slice of prepared data."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from posttrain.errors import PosttrainError
from posttrain.eval.graders import Grader
from posttrain.eval.heldout import heldout_mask, in_heldout, row_item
from posttrain.eval.items import LETTERS, humaneval_items
from posttrain.eval.suites import expand_specs, load_items
from posttrain.io.benchmarks import ROOT_ENV, load_benchmark


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize(
    ("name", "available", "full", "kind"),
    [("humaneval", 164, 164, "code"), ("math500", 311, 500, "math"), ("aime24", 30, 30, "math"),
     ("aime25", 15, 30, "math"), ("gsm8k", 100, 1319, "math"), ("truthfulqa_mc1", 100, 817, "choice"),
     ("hellaswag", 100, 10042, "choice")],
)  # fmt: skip
def test_builtin_sets_have_answers_and_report_coverage(name, available, full, kind):
    items, cov = load_items(name)
    assert (cov.available, cov.full, len(items)) == (available, full, available)
    assert {it.kind for it in items} == {kind}
    assert len({it.item_id for it in items}) == available
    if kind == "math":
        assert all(it.question and it.answer for it in items)
    elif kind == "choice":
        assert all(it.answer in LETTERS[: len(it.choices)] for it in items)
    else:
        assert all(it.tests and it.entry_point and it.code_prompt for it in items)
    assert len(load_items(name, limit=3)[0]) == 3


def test_items_match_the_decontamination_loader():
    """Same package files, same ids and texts as posttrain.io.benchmarks (what decontamination removes)."""
    for name in ("humaneval", "aime25", "gsm8k"):
        ours = [(it.item_id, it.question) for it in load_items(name)[0]]
        theirs = [(it.item_id, it.text) for it in load_benchmark(name)]
        assert ours == theirs


def test_truthfulqa_choices_are_shuffled_the_same_way_every_time():
    first, _ = load_items("truthfulqa_mc1")
    again, _ = load_items("truthfulqa_mc1")
    assert [it.choices for it in first] == [it.choices for it in again]
    letters = Counter(it.answer for it in first)
    assert len(letters) >= 3 and max(letters.values()) < 60  # the source always had the right one first


def test_unknown_benchmark_is_a_one_line_error():
    with pytest.raises(PosttrainError, match="unknown eval benchmark 'nope'"):
        load_items("nope")
    assert expand_specs(["heldout", "gsm8k"]) == ["heldout/math", "heldout/stem", "heldout/tool_calling", "gsm8k"]


# ------------------------------------------------------------------------------------------ hub layout


@pytest.fixture
def hub_mirror(tmp_path, monkeypatch):
    """Local files in the hub repos' own layout; POSTTRAIN_BENCHMARK_ROOT points `datasets` at them."""
    root = tmp_path / "hub"
    gsm = root / "openai/gsm8k/main"
    gsm.mkdir(parents=True)
    pq.write_table(pa.table({"question": ["1+1?", "2*3?"], "answer": ["one and one\n#### 2", "so\n#### 6"]}),
                   gsm / "test-00000-of-00001.parquet")  # fmt: skip
    m5 = root / "HuggingFaceH4/MATH-500"
    m5.mkdir(parents=True)
    (m5 / "test.jsonl").write_text(json.dumps({"problem": "Half?", "answer": "\\frac{1}{2}",
                                               "unique_id": "test/x/1.json"}) + "\n")  # fmt: skip
    gp = root / "Idavidrein/gpqa"
    gp.mkdir(parents=True)
    pcsv.write_csv(pa.table({"Question": ["Q?"], "Correct Answer": ["right"], "Incorrect Answer 1": ["w1"],
                             "Incorrect Answer 2": ["w2"], "Incorrect Answer 3": ["w3"], "Record ID": ["rec1"]}),
                   gp / "gpqa_diamond.csv")  # fmt: skip
    mm = root / "cais/mmlu/all"
    mm.mkdir(parents=True)
    pq.write_table(pa.table({"question": ["Largest?"], "subject": ["astronomy"], "choices": [["moon", "sun", "rock", "cat"]],
                             "answer": [1]}), mm / "test-00000-of-00001.parquet")  # fmt: skip
    he = root / "openai/openai_humaneval/openai_humaneval"
    he.mkdir(parents=True)
    rows = [{"task_id": it.item_id, "prompt": it.code_prompt, "canonical_solution": it.answer, "test": it.tests,
             "entry_point": it.entry_point} for it in humaneval_items()[:3]]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), he / "test-00000-of-00001.parquet")
    aime24 = root / "HuggingFaceH4/aime_2024"
    (aime24 / "data").mkdir(parents=True)
    (aime24 / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*\n---\n")
    pq.write_table(pa.table({"id": [60], "problem": ["Find x."], "answer": ["204"]}),
                   aime24 / "data/train-00000-of-00001.parquet")  # fmt: skip
    aime25 = root / "opencompass/AIME2025"
    aime25.mkdir(parents=True)
    card = "---\nconfigs:\n" + "".join(
        f"- config_name: AIME2025-{p}\n  data_files:\n  - split: test\n    path: aime2025-{p}.jsonl\n" for p in ("I", "II"))
    (aime25 / "README.md").write_text(card + "---\n")
    for part, answer in (("I", "70"), ("II", "588")):
        (aime25 / f"aime2025-{part}.jsonl").write_text(json.dumps({"question": f"Part {part}?", "answer": answer}) + "\n")
    monkeypatch.setenv(ROOT_ENV, str(root))
    return root


def test_hub_sets_read_with_datasets_from_the_hub_layout(hub_mirror):
    gsm, cov = load_items("openai/gsm8k")
    assert [(it.question, it.answer) for it in gsm] == [("1+1?", "2"), ("2*3?", "6")]
    assert (cov.available, cov.full) == (2, 1319) and cov.source.startswith(str(hub_mirror))
    [m5], _ = load_items("math500-hub")
    assert (m5.item_id, m5.answer, m5.kind) == ("test/x/1.json", "\\frac{1}{2}", "math")
    [gpqa], cov = load_items("gpqa")
    assert gpqa.choices[LETTERS.index(gpqa.answer)] == "right" and sorted(gpqa.choices) == ["right", "w1", "w2", "w3"]
    assert cov.full == 198
    [mmlu], _ = load_items("cais/mmlu")
    assert (mmlu.answer, mmlu.choices[1]) == ("B", "sun") and "astronomy" in mmlu.question
    he, cov = load_items("humaneval-hub")
    assert [it.item_id for it in he] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"] and cov.full == 164
    [a24], cov = load_items("aime24-hub")
    assert (a24.item_id, a24.answer, cov.full) == ("60", "204", 30)
    a25, _ = load_items("aime25-hub")  # two card configs, one split
    assert [(it.question, it.answer) for it in a25] == [("Part I?", "70"), ("Part II?", "588")]
    with Grader(workers=1) as grader:
        grades = grader.grade(he, [f"```python\n{it.code_prompt}{it.answer}```" for it in he])
    assert all(g.correct for g in grades)


def test_missing_hub_mirror_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv(ROOT_ENV, str(tmp_path / "empty"))
    with pytest.raises(PosttrainError, match="cannot load openai/gsm8k"):
        load_items("openai/gsm8k")


# ------------------------------------------------------------------------------------------ held-out slice


def test_heldout_slice_is_a_stable_salted_hash_of_the_uuid():
    uuids = [f"row-{i}" for i in range(20000)]
    mask = heldout_mask(uuids, 0.05)
    assert 800 < mask.sum() < 1200
    assert (heldout_mask(uuids, 0.05) == mask).all()
    assert (mask <= heldout_mask(uuids, 0.10)).all()  # a bigger slice contains the smaller one
    assert heldout_mask(uuids, 1.0).all() and in_heldout("row-1", 1.0)


def test_heldout_items_from_the_bundled_sample_by_category():
    math, cov = load_items("heldout/math", heldout_fraction=0.05)
    assert math and {it.kind for it in math} == {"math"} and cov.available <= cov.full
    assert all(it.messages[-1]["role"] == "user" and it.answer for it in math)
    stem, _ = load_items("heldout/stem", heldout_fraction=0.05)
    assert stem and all(it.kind in ("choice", "math") for it in stem)
    tools, _ = load_items("heldout/tool_calling", heldout_fraction=0.05)
    assert tools and all(it.kind == "tools" and it.expected_calls and it.tools for it in tools)
    assert all(isinstance(c["arguments"], dict) for it in tools for c in it.expected_calls)
    with pytest.raises(PosttrainError, match="cannot be graded"):
        load_items("heldout/chat")


def test_row_item_uses_the_reference_answer_and_skips_withheld_prompts():
    def row(content, answer, meta="{}", category="math"):
        return {"uuid": "u", "category": category, "metadata": meta,
                "messages": [{"role": "user", "content": content, "tool_calls": []},
                             {"role": "assistant", "content": answer, "tool_calls": []}]}  # fmt: skip

    assert row_item(row("2+2?", "<think>\\boxed{5}</think> so \\boxed{4}"), "math").answer == "4"
    assert row_item(row("2+2?", "x", '{"expected_answer": "4"}'), "math").answer == "4"
    assert row_item(row("2+2?", "no box"), "math") is None
    assert row_item(row("-", "\\boxed{1}"), "math") is None
    letter = row_item(row("Pick", "\\boxed{C}", '{"expected_answer": "\\\\text{C}"}', "stem"), "stem")
    assert (letter.kind, letter.answer) == ("choice", "C")


def test_eval_config_is_strict_and_hashes_only_what_changes_generations():
    from pydantic import ValidationError

    from posttrain.eval.config import EvalConfig

    cfg = EvalConfig(model="m", out="o")
    assert cfg.modes() == ["off"] and cfg.sampling_for("off").greedy
    assert (cfg.sampling_on.temperature, cfg.sampling_on.top_p) == (0.6, 0.95)
    with pytest.raises(ValidationError):
        EvalConfig(model="m", out="o", max_new_token=5)  # a typo is an error, not a silent default
    with pytest.raises(ValidationError):
        EvalConfig(model="m", out="o", benchmarks=["gsm8k", "gsm8k"])
    same = cfg.model_copy(update={"out": "elsewhere", "benchmarks": ["aime24"], "limit": 3, "code_timeout_s": 30.0})
    assert same.settings_hash() == cfg.settings_hash()
    assert cfg.model_copy(update={"max_new_tokens": 7}).settings_hash() != cfg.settings_hash()
    assert cfg.model_copy(update={"seed": 1}).settings_hash() != cfg.settings_hash()
