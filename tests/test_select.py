"""Filters and mixing: deterministic draws, exact quotas, upsampling, nothing lost, the CLI."""

from __future__ import annotations

import json
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from posttrain.cli import app
from posttrain.config import SelectConfig, Where, parse_where
from posttrain.errors import RecipeError
from posttrain.io.sources import open_source
from posttrain.jobs.select import run_select
from posttrain.reduce.mix import GroupStats, plan_key, refine_threshold, row_hashes
from posttrain.schema import NEMOTRON_SCHEMA
from posttrain.stages.filters import FILTERED, UNSAMPLED, FilterStage

runner = CliRunner()
CATEGORIES = ("math", "code", "chat", "stem")


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def make_rows(n: int, tokens: bool = False) -> list[dict]:
    rows = []
    for i in range(n):
        cat = CATEGORIES[i % 4]
        r = {
            "uuid": f"{cat}-{i:05d}",
            "license": "CC BY 4.0",
            "generator": "Qwen3-235B-A22B" if i % 5 == 0 else "R1",
            "version": "v1",
            "category": cat,
            "reasoning": "off" if (i // 4) % 3 == 0 else "on",
            "messages": [
                {"role": "user", "content": f"question {i} " + "w " * (i % 40), "tool_calls": None},
                {"role": "assistant", "content": "answer", "tool_calls": None},
            ],
            "metadata": json.dumps(
                {
                    "problem_source": "aops_c6_high_school" if i % 8 == 0 else "math_stackexchange",
                    "index": i % 3,
                }
            ),
        }
        if tokens:
            r["num_tokens"] = 10 + (i * 7) % 90
        rows.append(r)
    return rows


def write(
    tmp_path: Path, rows: list[dict], tokens: bool = False, name: str = "math-00000-of-00001.parquet"
) -> Path:
    schema = NEMOTRON_SCHEMA.append(pa.field("num_tokens", pa.int64())) if tokens else NEMOTRON_SCHEMA
    path = tmp_path / "src" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, row_group_size=333)
    return path


class TableSource:
    """A source over an in-memory table (for columns the parquet reader would not carry, like num_tokens)."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table

    def iter_batches(self, batch_size: int = 1024):
        yield from self.table.to_batches(max_chunksize=batch_size)


RECIPE = {
    "seed": 7,
    "where": ["num_chars<=60"],
    "mix": {
        "by": "category",
        "rows": 600,
        "weights": {"math": 0.5, "code": 0.25},
        "quotas": {"chat": 90},
        "epochs": {"stem": 1.5},
        "reasoning_on": {"math": 0.75},
    },
}


def kept(out: Path) -> pa.Table:
    return pq.read_table(out / "kept")


def test_same_recipe_same_rows_across_runs_and_batch_sizes(tmp_path):
    path = write(tmp_path, make_rows(2000))
    results = []
    for name, bs in (("a", 1024), ("b", 1024), ("c", 57)):
        run_select(
            open_source(str(path)), tmp_path / name, SelectConfig.model_validate({**RECIPE, "batch_size": bs})
        )
        results.append((tmp_path / name / "kept" / "part-00000.parquet").read_bytes())
    assert results[0] == results[1] == results[2]
    assert kept(tmp_path / "a").column("uuid").to_pylist() == kept(tmp_path / "c").column("uuid").to_pylist()


def test_achieved_mixture_matches_asked(tmp_path):
    path = write(tmp_path, make_rows(2000))
    summary = run_select(open_source(str(path)), tmp_path / "out", SelectConfig.model_validate(RECIPE))
    mix = {m["key"]: m for m in summary["mixture"]}
    for m in mix.values():
        assert m["achieved_rows"] == round(m["asked"]), m
    assert mix["math|reasoning=on"]["asked"] == 225 and mix["math|reasoning=off"]["asked"] == 75
    assert mix["code"]["asked"] == 150 and mix["chat"]["asked"] == 90
    assert mix["stem"]["asked"] == 1.5 * mix["stem"]["available_rows"]
    table = kept(tmp_path / "out")
    assert Counter(table.column("category").to_pylist())["chat"] == 90
    math = [
        r
        for r, c in zip(
            table.column("reasoning").to_pylist(), table.column("category").to_pylist(), strict=True
        )
        if c == "math"
    ]
    assert Counter(math) == {"on": 225, "off": 75}


def test_nothing_lost_rejects_carry_reasons(tmp_path):
    path = write(tmp_path, make_rows(800))
    s = run_select(open_source(str(path)), tmp_path / "out", SelectConfig.model_validate(RECIPE))
    rejects = pq.read_table(tmp_path / "out" / "rejects")
    reasons = Counter(code for rs in rejects.column("reasons").to_pylist() for code in rs)
    assert reasons == {FILTERED: s[FILTERED], UNSAMPLED: s[UNSAMPLED]}
    distinct = set(kept(tmp_path / "out").column("source_uuid").to_pylist())
    assert len(distinct) + rejects.num_rows == 800 == s["rows_in"]
    assert s["balanced"] and s["rows_selected"] == len(distinct)


def test_upsampling_repeats_deterministically(tmp_path):
    path = write(tmp_path, make_rows(400))
    config = SelectConfig.model_validate({"seed": 3, "mix": {"epochs": {"chat": 2.5}, "rest": 0}})
    run_select(open_source(str(path)), tmp_path / "a", config)
    run_select(open_source(str(path)), tmp_path / "b", config.model_copy(update={"batch_size": 7}))
    a, b = kept(tmp_path / "a"), kept(tmp_path / "b")
    assert a.equals(b)
    per_source = Counter(a.column("source_uuid").to_pylist())
    assert set(per_source.values()) == {2, 3} and sum(per_source.values()) == 250  # 100 chat rows x 2.5
    uuids = set(a.column("uuid").to_pylist())
    for src, n in per_source.items():
        assert {src, *(f"{src}#r{k}" for k in range(1, n))} <= uuids
    assert set(a.column("category").to_pylist()) == {"chat"}


def test_filters_by_metadata_field_and_columns(tmp_path):
    rows = make_rows(200)
    path = write(tmp_path, rows)
    config = SelectConfig(
        where=["metadata.problem_source~^aops", "category in [math, code]", "generator!=R1"]
    )
    s = run_select(open_source(str(path)), tmp_path / "out", config)
    want = {
        r["uuid"]
        for i, r in enumerate(rows)
        if i % 8 == 0 and r["category"] in ("math", "code") and r["generator"] != "R1"
    }
    assert set(kept(tmp_path / "out").column("uuid").to_pylist()) == want
    assert s[FILTERED] == 200 - len(want) and s[UNSAMPLED] == 0
    # a non-string metadata value compares as its JSON text
    run_select(
        open_source(str(path)), tmp_path / "idx", SelectConfig(where=["metadata.index=2"], shuffle=False)
    )
    assert kept(tmp_path / "idx").num_rows == sum(1 for i in range(200) if i % 3 == 2)


def test_reason_filters_and_the_filter_stage():
    rows = make_rows(4)
    batch = pa.RecordBatch.from_pylist(rows, schema=NEMOTRON_SCHEMA).append_column(
        "reasons",
        pa.array(
            [["identity.other_model"], [], ["think.unclosed", "identity.other_model"], []],
            pa.list_(pa.string()),
        ),
    )
    stage = pickle.loads(pickle.dumps(FilterStage(["not reason identity.other_model"])))
    out = stage.process(batch)
    assert out.num_rows == 4
    assert [FILTERED in r for r in out.column("reasons").to_pylist()] == [True, False, True, False]
    has = FilterStage(["has reason think.unclosed"]).process(batch)
    assert [FILTERED in r for r in has.column("reasons").to_pylist()] == [True, True, False, True]


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("category=math", Where(column="category", op="eq", value="math")),
        ("reasoning != off", Where(column="reasoning", op="ne", value="off")),
        ("metadata.problem_source~^aops", Where(column="metadata.problem_source", op="regex", value="^aops")),
        ("license!~BY", Where(column="license", op="not_regex", value="BY")),
        ("num_tokens>=128", Where(column="num_tokens", op="ge", value=128.0)),
        ("num_chars<20000", Where(column="num_chars", op="lt", value=20000.0)),
        ("category not in [chat, 'stem']", Where(column="category", op="not_in", value=["chat", "stem"])),
        ("has reason math.no_boxed", Where(column="reasons", op="has", value="math.no_boxed")),
        (
            {"column": "generator", "op": "in", "value": ["a"]},
            Where(column="generator", op="in", value=["a"]),
        ),
    ],
)
def test_where_forms(text, where):
    assert parse_where(text) == where


@pytest.mark.parametrize("bad", ["category", "num_chars<=many", "source~(", "== x"])
def test_bad_where_is_a_recipe_error(bad):
    with pytest.raises(RecipeError):
        parse_where(bad)


def test_mix_config_errors():
    with pytest.raises(ValueError, match="budget"):
        SelectConfig.model_validate({"mix": {"weights": {"math": 1.0}}})
    with pytest.raises(ValueError, match="more than one"):
        SelectConfig.model_validate({"mix": {"rows": 5, "weights": {"math": 0.5}, "quotas": {"math": 3}}})
    with pytest.raises(ValueError, match="extra"):
        SelectConfig.model_validate({"mix": {"rows": 5, "weigths": {"math": 0.5}}})


def test_token_budget_uses_num_tokens(tmp_path):
    table = pa.Table.from_pylist(
        make_rows(1200, tokens=True), schema=NEMOTRON_SCHEMA.append(pa.field("num_tokens", pa.int64()))
    )
    config = SelectConfig.model_validate({"mix": {"tokens": 20_000, "weights": {"math": 0.6, "code": 0.4}}})
    s = run_select(TableSource(table), tmp_path / "out", config)
    mix = {m["key"]: m for m in s["mixture"]}
    for key, share in (("math", 0.6), ("code", 0.4)):
        assert mix[key]["unit"] == "tokens"
        assert abs(mix[key]["achieved_tokens"] - 20_000 * share) < 100  # within one row's tokens
    assert pq.read_table(tmp_path / "out" / "kept").num_rows == s["rows_out"]
    with pytest.raises(RecipeError, match="num_tokens"):
        run_select(TableSource(table.drop_columns(["num_tokens"])), tmp_path / "x", config)


def test_shuffle_is_a_global_hash_order_split_over_buckets(tmp_path):
    path = write(tmp_path, make_rows(600))
    one = SelectConfig(seed=5)
    many = SelectConfig(seed=5, shuffle_bucket_bytes=1 << 10)  # forces many buckets
    run_select(open_source(str(path)), tmp_path / "one", one)
    run_select(open_source(str(path)), tmp_path / "many", many)
    run_select(open_source(str(path)), tmp_path / "plain", SelectConfig(shuffle=False))
    a = kept(tmp_path / "one").column("uuid").to_pylist()
    assert a == kept(tmp_path / "many").column("uuid").to_pylist()
    plain = kept(tmp_path / "plain").column("uuid").to_pylist()
    assert plain == [r["uuid"] for r in make_rows(600)] and sorted(a) == sorted(plain) and a != plain
    assert not (tmp_path / "many" / "_shuffle").exists()


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 3000), frac=st.floats(0.0, 3.0), seed=st.integers(0, 2**32))
def test_plan_draws_exactly_the_asked_rows(n, frac, seed):
    hashes = row_hashes(pa.array([f"u{i}" for i in range(n)]), seed)
    stats = GroupStats()
    stats.add(hashes, np.ones(n, dtype=np.int64))
    asked = frac * n
    plan, b = plan_key("g", "rows", asked, stats)
    if b is not None:
        in_bin = hashes[(hashes >> np.uint64(52)).astype(np.int64) == b]
        refine_threshold(plan, b, in_bin, np.ones(len(in_bin), np.int64), stats)
    base = int(asked // n)
    assert int(plan.copies(hashes).sum()) == base * n + round(asked - base * n)


def test_cli_recipe_and_where(tmp_path):
    path = write(tmp_path, make_rows(400))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "select:\n  seed: 1\n  mix:\n    by: category\n    rows: 100\n    weights: {math: 0.5, code: 0.5}\n"
    )
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["select", str(path), "--recipe", str(recipe), "--where", "reasoning=on", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "asked" in result.output and "achieved" in result.output
    table = kept(out)
    assert table.num_rows == 100 and set(table.column("reasoning").to_pylist()) == {"on"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows_in"] == 400 and summary["balanced"]


def test_cli_bad_recipe_is_one_line(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("select:\n  mix:\n    rows: 10\n    wieghts: {math: 1}\n")
    result = runner.invoke(app, ["select", "--recipe", str(recipe), "--out", str(tmp_path / "o")])
    assert (
        result.exit_code == 2 and "select.mix.wieghts" in result.output and "Traceback" not in result.output
    )
    result = runner.invoke(app, ["select", "--where", "category", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "cannot parse the filter" in result.output
