"""Dedup building blocks: keys, shingles, exact groups, LSH arithmetic, spill (real Arrow batches)."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from posttrain.config import DedupConfig
from posttrain.reduce.dedup.exact import KEY_RECORD, ExactDedup, group_ranks
from posttrain.reduce.dedup.keys import (
    WS_RUN,
    exact_key_text,
    hash128,
    normalize_exact,
    rank_hash,
    turn_text,
    withheld_mask,
)
from posttrain.reduce.dedup.lsh import candidate_probability, optimal_bands_rows
from posttrain.reduce.dedup.near import component_labels
from posttrain.reduce.dedup.shingles import (
    jaccard_sorted,
    minhash_matrix,
    normalize_for_shingles,
    shingle_hashes,
    shingle_set,
)
from posttrain.reduce.dedup.spill import PartitionedSpill
from posttrain.schema import NEMOTRON_SCHEMA

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def row(uuid: str, prompt: str, answer: str = "ok", meta: str = "{}", **kw) -> dict:
    messages = kw.pop("messages", None) or [
        {"role": "user", "content": prompt, "tool_calls": []},
        {"role": "assistant", "content": answer, "tool_calls": []},
    ]
    base = {"uuid": uuid, "license": "CC BY 4.0", "generator": "g", "version": "v1", "category": "chat"}
    return base | {"reasoning": "off", "messages": messages, "metadata": meta} | kw


def batch(rows: list[dict]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(rows, schema=NEMOTRON_SCHEMA)


# --- keys -------------------------------------------------------------------------------------


def test_prompt_is_every_turn_before_the_final_assistant_turn():
    msgs = [
        {"role": "system", "content": "sys", "tool_calls": []},
        {"role": "user", "content": "q1", "tool_calls": []},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
            ],
        },
        {"role": "tool", "content": "r1", "tool_calls": []},
        {"role": "assistant", "content": "final", "tool_calls": []},
    ]
    b = batch([row("a", "", messages=msgs)])
    prompt = turn_text(b, "prompt").to_pylist()[0]
    conv = turn_text(b, "conversation").to_pylist()[0]
    assert "final" not in prompt and "final" in conv
    assert "r1" in prompt and '{"a": 1}' in prompt and "sys" in prompt
    assert turn_text(b, "prompt", roles=False).to_pylist()[0].startswith("sys\n")


def test_rows_sliced_from_a_batch_keep_their_own_turns():
    b = batch([row("a", "first"), row("b", "second"), row("c", "third")]).slice(1, 2)
    assert [t.split("\x1f")[1] for t in turn_text(b, "prompt").to_pylist()] == ["second", "third"]


def test_exact_key_normalizes_nfkc_and_whitespace_but_keeps_case():
    b = batch([row("a", "Ｈｅｌｌｏ   world\n"), row("b", "Hello world"), row("c", "hello world")])
    hi, lo = hash128(exact_key_text(b, "prompt"))
    assert (hi[0], lo[0]) == (hi[1], lo[1])
    assert (hi[0], lo[0]) != (hi[2], lo[2])


def test_withheld_prompts_are_keyed_by_source_never_by_text():
    code = lambda u, i: row(u, "-", "ans " + u, json.dumps({"dataset": "taco", "split": "train", "index": i}))  # noqa: E731
    chat = lambda u, c: row(u, "", "ans " + u, json.dumps({"conversation_id": c}))  # noqa: E731
    b = batch([code("a", 1), code("b", 2), code("c", 1), chat("d", "x"), chat("e", "y"), row("f", "", "z")])
    assert withheld_mask(b).tolist() == [True] * 6
    hi, lo = hash128(exact_key_text(b, "prompt"))
    keys = list(zip(hi.tolist(), lo.tolist(), strict=True))
    assert keys[0] == keys[2]  # the same source prompt: answers to one prompt
    assert len({keys[i] for i in (0, 1, 3, 4, 5)}) == 5


@settings(max_examples=50, deadline=None)
@given(st.text(max_size=60))
def test_normalize_exact_is_idempotent(s):
    once = normalize_exact(pa.array([s]))
    assert normalize_exact(once).to_pylist() == once.to_pylist()


def test_rank_hash_depends_on_seed_and_uuid_only():
    a = rank_hash(pa.array(["u1", "u2", "u3"]), 7)
    b = rank_hash(pa.array(["u3", "u1"]), 7)
    assert a[0] == b[1] and a[2] == b[0]
    assert rank_hash(pa.array(["u1"]), 8)[0] != a[0]


# --- shingles ---------------------------------------------------------------------------------


def _ref_shingles(text: str, n: int) -> set[tuple[str, ...]]:
    words = text.split()
    if not words:
        return set()
    if len(words) < n:
        return {tuple(words)}
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


words_st = st.lists(st.sampled_from(["a", "b", "c", "dé", "E", "f!"]), max_size=14).map(" ".join)


@settings(max_examples=60, deadline=None)
@given(st.lists(words_st, min_size=1, max_size=5), st.integers(1, 5))
def test_word_shingles_match_a_python_reference(texts, n):
    norm = normalize_for_shingles(pa.array(texts))
    flat, offsets = shingle_hashes(norm, "word", n)
    ref = [_ref_shingles(t, n) for t in norm.to_pylist()]
    sets = [shingle_set(flat[offsets[i] : offsets[i + 1]]) for i in range(len(texts))]
    assert [len(s) for s in sets] == [len(r) for r in ref]
    # in text order with repeats: one hash per word position (one for a row shorter than n words)
    assert np.diff(offsets).tolist() == [max(len(t.split()) - n + 1, 1) if t else 0 for t in norm.to_pylist()]
    for i in range(len(texts)):
        for j in range(len(texts)):
            a, b = sets[i], sets[j]
            if ref[i] or ref[j]:
                exp = len(ref[i] & ref[j]) / len(ref[i] | ref[j])
                assert jaccard_sorted(a, b) == pytest.approx(exp)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(alphabet="abcé x", max_size=20), min_size=1, max_size=4), st.integers(1, 4))
def test_char_shingles_are_byte_ngrams(texts, n):
    norm = normalize_for_shingles(pa.array(texts))
    flat, offsets = shingle_hashes(norm, "char", n)
    for i, t in enumerate(norm.to_pylist()):
        raw = t.encode()
        exp = (
            set()
            if not raw
            else ({raw} if len(raw) < n else {raw[k : k + n] for k in range(len(raw) - n + 1)})
        )
        assert offsets[i + 1] - offsets[i] == (max(len(raw) - n + 1, 1) if raw else 0)
        assert len(shingle_set(flat[offsets[i] : offsets[i + 1]])) == len(exp)


def test_minhash_of_shingles_in_text_order_is_the_minhash_of_their_set():
    """Shingles are kept in text order with repeats; MinHash signs the set (what LSH relies on)."""
    texts = ["the cat sat on the mat the cat sat on the mat again", "a b c d e f a b c d e f", "", "x"]
    flat, offsets = shingle_hashes(normalize_for_shingles(pa.array(texts)), "word", 3)
    sets = [shingle_set(flat[offsets[i] : offsets[i + 1]]) for i in range(len(texts))]
    assert np.diff(offsets).tolist()[:2] != [len(x) for x in sets[:2]]  # these rows do repeat shingles
    set_offsets = np.concatenate([[0], np.cumsum([len(x) for x in sets])]).astype(np.int64)
    assert np.array_equal(minhash_matrix(flat, offsets, 64, 7), minhash_matrix(np.concatenate(sets), set_offsets, 64, 7))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 30), st.lists(st.tuples(st.integers(0, 29), st.integers(0, 29)), max_size=40))
def test_component_labels_match_a_graph_search(n, edges):
    edges = [(a % n, b % n) for a, b in edges]
    got = component_labels(n, np.array([a for a, _ in edges], np.int64), np.array([b for _, b in edges], np.int64))
    adj: dict[int, set[int]] = {i: set() for i in range(n)}
    for a, b in edges:
        adj[a].add(b)
        adj[b].add(a)
    for start in range(n):  # every node's label is the smallest node it reaches
        seen, todo = {start}, [start]
        while todo:
            for nxt in adj[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        assert got[start] == min(seen)


def _two_pass_normalization(text: pa.Array) -> pa.Array:
    """The normalization as first written: punctuation runs to a space, then whitespace runs."""
    text = pc.utf8_lower(pc.utf8_normalize(text.fill_null(""), "NFKC"))
    text = pc.replace_substring_regex(text, r"[^\p{L}\p{N}\s]+", " ")
    return pc.utf8_trim_whitespace(pc.replace_substring_regex(text, WS_RUN, " "))


messy = st.text(alphabet=st.sampled_from(list("aZé9 \t\n\r\f\v.,;-!_()\x1f\x00") +
                                         ["\x85", "\u00a0", "\u1680", "\u2028", "\u3000", "\u0301",
                                          "\ufb01", "\u00b2", "\u6f22", "\U0001f600"]), max_size=40)


@settings(max_examples=300, deadline=None)
@given(st.lists(messy, min_size=1, max_size=6))
def test_shingle_normalization_is_the_two_pass_one(texts):
    arr = pa.array(texts)
    assert normalize_for_shingles(arr).to_pylist() == _two_pass_normalization(arr).to_pylist()


def test_shingle_normalization_lowercases_and_strips_punctuation():
    assert normalize_for_shingles(pa.array(["Hello,   WORLD!! (x)"])).to_pylist() == ["hello world x"]


# --- LSH arithmetic ---------------------------------------------------------------------------


def test_defaults_match_datasketch_optimal_parameters():
    from datasketch.lsh import _optimal_param

    for t, p in ((0.8, 128), (0.5, 64), (0.9, 256)):
        assert optimal_bands_rows(t, p) == _optimal_param(t, p, 0.5, 0.5)


def test_s_curve_is_monotone_and_steep_around_the_threshold():
    s = np.linspace(0, 1, 21)
    p = candidate_probability(s, 9, 13)
    assert (np.diff(p) >= 0).all()
    assert candidate_probability(0.5, 9, 13) < 0.01 < 0.9 < candidate_probability(0.9, 9, 13)


def test_config_rejects_unknown_keys_and_bad_bands():
    with pytest.raises(ValueError):
        DedupConfig(nope=1)
    with pytest.raises(ValueError):
        DedupConfig(bands=20, rows=10)
    with pytest.raises(ValueError):
        DedupConfig(bands=4)


# --- exact ------------------------------------------------------------------------------------


def test_group_ranks_orders_by_error_then_rank():
    r = np.array([(1, 1, 0, 9, 0), (1, 1, 1, 1, 1), (1, 1, 0, 5, 2)], dtype=KEY_RECORD)
    s, pos = group_ranks(r)
    assert s["row"].tolist() == [2, 0, 1] and pos.tolist() == [0, 1, 2]


def _run_exact(rows: list[dict], cfg: DedupConfig, batch_size: int, tmp_path) -> dict[str, str | None]:
    tbl = pa.Table.from_pylist(rows, schema=NEMOTRON_SCHEMA)
    stage = ExactDedup(cfg, str(tmp_path / f"x{batch_size}"))
    for b in tbl.to_batches(max_chunksize=batch_size):
        stage.observe(b)
    stage.finish()
    out = {}
    for b in tbl.to_batches(max_chunksize=batch_size):
        b = stage.process(b)
        for u, rs in zip(b.column("uuid").to_pylist(), b.column("reasons").to_pylist(), strict=True):
            out[u] = rs[0] if rs else None
    return out


@settings(max_examples=25, deadline=None)
@given(
    pairs=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 2)), min_size=1, max_size=40),
    bs=st.integers(1, 7),
    k=st.integers(1, 3),
    rnd=st.randoms(use_true_random=False),
)
def test_exact_keeps_one_per_conversation_and_k_per_prompt_whatever_the_order(
    pairs, bs, k, rnd, tmp_path_factory
):
    rows = [row(f"u{i}", f"prompt {p}", f"answer {a}") for i, (p, a) in enumerate(pairs)]
    cfg = DedupConfig(max_responses_per_prompt=k, near=False, seed=3)
    tmp = tmp_path_factory.mktemp("exact")
    got = _run_exact(rows, cfg, bs, tmp)
    shuffled = rows[:]
    rnd.shuffle(shuffled)
    assert _run_exact(shuffled, cfg, 1 + (bs * 3) % 5, tmp) == got
    kept = [r for r in rows if got[r["uuid"]] is None]
    convs = [(r["messages"][0]["content"], r["messages"][1]["content"]) for r in kept]
    assert len(convs) == len(set(convs))  # no conversation twice
    distinct: dict[str, set] = {}
    for p, a in pairs:
        distinct.setdefault(f"prompt {p}", set()).add(a)
    per_prompt: dict[str, int] = {}
    for p, _ in convs:
        per_prompt[p] = per_prompt.get(p, 0) + 1
    assert per_prompt == {p: min(k, len(a)) for p, a in distinct.items()}
    assert all(v in (None, "dedup.exact", "dedup.prompt_quota") for v in got.values())


def test_exact_prefers_rows_without_error_reasons(tmp_path):
    rows = [row(f"u{i}", "same", "same") for i in range(4)]
    b = batch(rows)
    reasons = pa.array([["x.bad"], ["x.bad"], [], ["x.bad"]], type=pa.list_(pa.string()))
    b = b.append_column("reasons", reasons)
    stage = ExactDedup(DedupConfig(near=False), str(tmp_path))
    stage.observe(b)
    stage.finish()
    out = stage.process(b).column("reasons").to_pylist()
    assert out[2] == [] and all("dedup.exact" in out[i] for i in (0, 1, 3))


def test_exact_spills_over_budget_with_the_same_result(tmp_path):
    rows = [row(f"u{i}", f"p{i % 50}", f"a{i % 70}") for i in range(600)]
    small = DedupConfig(near=False, memory_budget_mb=1, max_responses_per_prompt=2)
    a = _run_exact(rows, small, 64, tmp_path / "a")
    stage = ExactDedup(small, str(tmp_path / "probe"))
    stage._key.budget_bytes = stage._prompt.budget_bytes = 4096  # force several spills
    tbl = pa.Table.from_pylist(rows, schema=NEMOTRON_SCHEMA)
    for b in tbl.to_batches(max_chunksize=64):
        stage.observe(b)
    assert stage._key.spilled
    stage.finish()
    b = [stage.process(x) for x in tbl.to_batches(max_chunksize=64)]
    got = {
        u: (r[0] if r else None)
        for x in b
        for u, r in zip(x["uuid"].to_pylist(), x["reasons"].to_pylist(), strict=True)
    }
    assert got == a


def test_spill_partitions_hold_every_record(tmp_path):
    dt = np.dtype([("h", "<u8"), ("row", "<i8")])
    s = PartitionedSpill(str(tmp_path), dt, "h", budget_bytes=100, parts=8)
    rng = np.random.default_rng(0)
    for i in range(10):
        rec = np.zeros(20, dt)
        rec["h"] = rng.integers(0, 2**63, 20, dtype=np.uint64) * 2
        rec["row"] = np.arange(20) + 20 * i
        s.add(rec)
    parts = list(s.partitions(group_bytes=0))  # one partition at a time
    assert s.spilled and len(parts) > 1
    assert sorted(np.concatenate(parts)["row"].tolist()) == list(range(200))
    top = [set((p["h"] >> np.uint64(61)).tolist()) for p in parts]
    assert all(len(t) == 1 for t in top)
    # grouped: fewer, bigger pieces; a partition is never split between two of them
    groups = list(s.partitions(group_bytes=40 * dt.itemsize))
    assert 1 < len(groups) < len(parts)
    assert sorted(np.concatenate(groups)["row"].tolist()) == list(range(200))
    seen = [set((g["h"] >> np.uint64(61)).tolist()) for g in groups]
    assert all(not (a & b) for i, a in enumerate(seen) for b in seen[i + 1 :])
