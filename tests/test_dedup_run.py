"""`run_dedup` and `posttrain dedup` end to end: the bundled sample, real parquet files, the CLI."""

from __future__ import annotations

import json
import os
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from posttrain.config import DedupConfig
from posttrain.jobs.dedup import run_dedup
from posttrain.reduce.dedup.keys import rank_hash, turn_text
from posttrain.reduce.dedup.shingles import normalize_for_shingles
from posttrain.schema import NEMOTRON_SCHEMA

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def row(uuid: str, prompt: str, answer: str = "ok", meta: str = "{}") -> dict:
    messages = [
        {"role": "user", "content": prompt, "tool_calls": []},
        {"role": "assistant", "content": answer, "tool_calls": []},
    ]
    base = {"uuid": uuid, "license": "CC BY 4.0", "generator": "g", "version": "v1", "category": "chat"}
    return base | {"reasoning": "off", "messages": messages, "metadata": meta}


class ParquetSource:
    """The smallest thing `run_dedup` reads: parquet files, read twice in the same order."""

    def __init__(self, path):
        self.path = path

    def iter_batches(self, batch_size: int = 1024):
        yield from pq.ParquetFile(self.path).iter_batches(batch_size=batch_size)


def write_rows(tmp_path, rows, name="in.parquet"):
    path = tmp_path / name
    pq.write_table(pa.Table.from_pylist(rows, schema=NEMOTRON_SCHEMA), path)
    return ParquetSource(path)


def removed(out) -> dict[str, dict]:
    t = pq.read_table(out / "removed").select(["uuid", "reason", "twin_uuid", "cluster_id"])
    return {r["uuid"]: r for r in t.to_pylist()}


def near_rows(seed: int = 0, base: int = 150) -> tuple[list[dict], dict[str, str]]:
    """Random-word prompts plus near copies (1 word of 300 changed: Jaccard ~0.97, found with
    probability > 0.9999 by 9x13 bands) and far ones (half the words changed: Jaccard ~0.05)."""
    rnd = random.Random(seed)
    vocab = [f"w{i}" for i in range(4000)]
    rows, twins = [], {}
    for i in range(base):
        words = [rnd.choice(vocab) for _ in range(300)]
        rows.append(row(f"b{i}", " ".join(words), f"a{i}"))
        if i % 3 == 0:
            near = words[:]
            for k in rnd.sample(range(300), 1):
                near[k] = rnd.choice(vocab)
            rows.append(row(f"n{i}", " ".join(near), f"other {i}"))
            twins[f"n{i}"] = f"b{i}"
        if i % 5 == 0:
            far = [w if k % 2 else rnd.choice(vocab) for k, w in enumerate(words)]
            rows.append(row(f"f{i}", " ".join(far), f"far {i}"))
    rnd.shuffle(rows)
    return rows, twins


# --- the bundled sample -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    from posttrain.io.sources import open_source

    out = tmp_path_factory.mktemp("sample")
    summary = run_dedup(open_source(None), out, DedupConfig(), batch_size=333)
    return out, summary


def test_sample_planted_duplicates_are_removed_and_listed(sample_run):
    from posttrain.sample import load_manifest

    out, summary = sample_run
    manifest = load_manifest()
    gone = removed(out)
    assert summary.rows_in == manifest["total_rows"] == summary.kept + summary.removed
    planted = 0
    for code in ("dedup.exact", "dedup.near"):
        for copy, original in manifest["defects"][code]["twins"].items():
            # One of each planted pair goes, for the other: which one is hash(seed, uuid)'s choice.
            pair = {copy, original}
            assert len(pair & gone.keys()) == 1, (code, pair)
            (loser,) = pair & gone.keys()
            assert gone[loser]["reason"] == code
            assert gone[loser]["twin_uuid"] == (pair - {loser}).pop()
            planted += 1
    assert len(gone) == planted  # no clean row removed
    clusters = pq.read_table(out / "clusters.parquet").to_pylist()
    assert len(clusters) == 2 * len(manifest["defects"]["dedup.near"]["twins"])
    assert all(0.8 <= c["similarity"] <= 1.0 for c in clusters)
    summary_json = json.loads((out / "summary.json").read_text())
    assert summary_json["rows_in"] == summary_json["kept"] + summary_json["removed"]


def test_sample_withheld_prompts_are_not_collapsed(sample_run):
    from posttrain.sample import load_manifest

    out, _ = sample_run
    withheld = {u for split in load_manifest()["withheld"].values() for u in split["uuids"]}
    assert len(withheld) > 100
    assert not withheld & removed(out).keys()


def test_sample_kept_files_have_the_schema_and_no_removed_row(sample_run):
    out, _ = sample_run
    kept = pq.read_table(out / "kept")
    assert kept.schema.equals(NEMOTRON_SCHEMA, check_metadata=False)
    assert not set(kept["uuid"].to_pylist()) & removed(out).keys()


# --- behaviour on built rows ------------------------------------------------------------------


def test_outputs_are_byte_identical_across_batch_sizes(tmp_path):
    rows, _ = near_rows(1, 60)
    rows += [row("dup", rows[0]["messages"][0]["content"], rows[0]["messages"][1]["content"])]
    src = write_rows(tmp_path, rows)
    outs = []
    for bs in (1, 7, 4096):
        out = tmp_path / f"out{bs}"
        run_dedup(src, out, DedupConfig(max_responses_per_prompt=1), batch_size=bs)
        outs.append(out)
    for name in ("kept/part-00000.parquet", "removed/part-00000.parquet", "clusters.parquet"):
        blobs = {(o / name).read_bytes() for o in outs}
        assert len(blobs) == 1, name


def test_near_keeps_the_same_rows_whatever_the_row_order(tmp_path):
    rows, twins = near_rows(2, 90)
    a = tmp_path / "a"
    run_dedup(write_rows(tmp_path, rows, "a.parquet"), a, DedupConfig(exact=False))
    rows.reverse()
    b = tmp_path / "b"
    run_dedup(write_rows(tmp_path, rows, "b.parquet"), b, DedupConfig(exact=False))
    assert removed(a) == removed(b)
    gone = removed(a)
    # every planted pair lost exactly one member; far rows (J ~ 0.2) never merge
    assert all(len({n, o} & gone.keys()) == 1 for n, o in twins.items())
    assert not any(u.startswith("f") for u in gone)


def test_near_on_prompt_leaves_answers_to_the_same_prompt_to_the_quota(tmp_path):
    rows, twins = near_rows(3, 30)
    n, o = next(iter(twins.items()))
    by = {r["uuid"]: r for r in rows}
    same = [row(f"s{i}", by[o]["messages"][0]["content"], f"answer {i}") for i in range(3)]
    src = write_rows(tmp_path, rows + same)
    out = tmp_path / "o"
    run_dedup(src, out, DedupConfig())
    gone = removed(out)
    group = {o, "s0", "s1", "s2"}
    # exactly one prompt of the near pair survives, with all its answers
    assert (n in gone and not group & gone.keys()) or (n not in gone and group <= gone.keys())
    clusters = pq.read_table(out / "clusters.parquet").to_pylist()
    cid = {c["cluster_id"] for c in clusters if c["uuid"] == n}.pop()
    assert {c["uuid"] for c in clusters if c["cluster_id"] == cid} == group | {n}
    out2 = tmp_path / "q"
    s = run_dedup(src, out2, DedupConfig(max_responses_per_prompt=1))
    assert s.removed_by_reason.get("dedup.prompt_quota", 0) + s.removed_by_reason["dedup.near"] >= 3


def test_withheld_rows_never_near_duplicates(tmp_path):
    rows = [
        row(f"c{i}", "-", "same answer", json.dumps({"dataset": "taco", "split": "train", "index": i}))
        for i in range(5)
    ]
    rows += [row(f"h{i}", "", "same answer", json.dumps({"conversation_id": f"x{i}"})) for i in range(5)]
    out = tmp_path / "o"
    s = run_dedup(write_rows(tmp_path, rows), out, DedupConfig())
    assert s.removed == 0 and s.kept == 10


def test_verification_blocks_merges_below_the_threshold(tmp_path):
    rows, twins = near_rows(4, 60)
    # Half-similar rows (a block of 90 of 300 words replaced: Jaccard ~0.5) become candidates.
    for r in rows[:10]:
        w = r["messages"][0]["content"].split()
        rows.append(row("m" + r["uuid"], " ".join(w[:100] + [f"z{k}" for k in range(90)] + w[190:])))
    out = tmp_path / "o"
    # Loose LSH (many candidates) but a strict threshold: only verified pairs may merge.
    s = run_dedup(write_rows(tmp_path, rows), out, DedupConfig(exact=False, bands=32, rows=2, threshold=0.95))
    assert s.near["candidate_pairs"] > s.near["verified_pairs"]
    sims = pq.read_table(out / "clusters.parquet")["similarity"].to_pylist()
    assert all(x >= 0.95 for x in sims)


def test_agrees_with_datasketch_reference(tmp_path):
    from datasketch import MinHash, MinHashLSH

    rows, _ = near_rows(5, 150)
    out = tmp_path / "o"
    run_dedup(write_rows(tmp_path, rows), out, DedupConfig(exact=False))
    ours = set(removed(out))
    # Reference: same normalization and word 5-grams, rows visited by our rank so it keeps the same one.
    tbl = pa.Table.from_pylist(rows, schema=NEMOTRON_SCHEMA)
    texts = normalize_for_shingles(turn_text(tbl.to_batches()[0], "prompt", roles=False)).to_pylist()
    ranks = rank_hash(tbl["uuid"].combine_chunks(), 0)
    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    ref = set()
    for i in sorted(range(len(rows)), key=lambda i: int(ranks[i])):
        w = texts[i].split()
        m = MinHash(num_perm=128)
        m.update_batch([" ".join(w[k : k + 5]).encode() for k in range(len(w) - 4)])
        if lsh.query(m):
            ref.add(rows[i]["uuid"])
        else:
            lsh.insert(rows[i]["uuid"], m)
    agree = 1 - len(ours ^ ref) / len(rows)
    assert agree >= 0.98, (sorted(ours - ref), sorted(ref - ours))


# --- CLI --------------------------------------------------------------------------------------


def test_cli_dedup_on_a_parquet_file(tmp_path):
    from posttrain.cli import app

    rows, _ = near_rows(6, 30)
    rows.append(row("dup", rows[0]["messages"][0]["content"], rows[0]["messages"][1]["content"]))
    write_rows(tmp_path, rows)
    out = tmp_path / "o"
    res = CliRunner().invoke(app, ["dedup", str(tmp_path / "in.parquet"), "--out", str(out), "--no-near"])
    assert res.exit_code == 0, res.output
    assert f"rows_in {len(rows)} == kept {len(rows) - 1} + removed 1" in res.output
    assert len(removed(out)) == 1


def test_cli_flags_reach_the_config_and_bad_ones_are_one_line(tmp_path):
    from posttrain.cli import app

    rows, _ = near_rows(7, 20)
    write_rows(tmp_path, rows)
    out = tmp_path / "o"
    res = CliRunner().invoke(
        app,
        [
            "dedup",
            str(tmp_path / "in.parquet"),
            "--out",
            str(out),
            "--no-exact",
            "--threshold",
            "0.9",
            "--num-perm",
            "64",
            "--ngram",
            "3",
            "--field",
            "conversation",
            "--seed",
            "5",
            "--limit",
            "25",
        ],
    )
    assert res.exit_code == 0, res.output
    cfg = json.loads((out / "summary.json").read_text())
    assert cfg["rows_in"] == 25
    assert (
        cfg["config"] | {} == cfg["config"] and cfg["config"]["num_perm"] == 64 and cfg["config"]["seed"] == 5
    )
    assert cfg["config"]["near_field"] == "conversation" and cfg["config"]["exact"] is False
    bad = CliRunner().invoke(
        app, ["dedup", str(tmp_path / "in.parquet"), "--out", str(out), "--threshold", "1.5"]
    )
    assert bad.exit_code != 0 and "Traceback" not in bad.output
    missing = CliRunner().invoke(app, ["dedup", str(tmp_path / "nope.parquet"), "--out", str(out)])
    assert missing.exit_code != 0 and "Traceback" not in missing.output


def _near_decisions(rows, cfg, tmp_path, name, budget=None, repickle=False):
    import pickle

    from posttrain.reduce.dedup.near import NearDedup

    tbl = pa.Table.from_pylist(rows, schema=NEMOTRON_SCHEMA)
    stage = NearDedup(cfg, str(tmp_path / name))
    if budget is not None:
        stage._bands.budget_bytes = budget
    for b in tbl.to_batches(max_chunksize=16):
        stage.observe(b)
    if repickle:  # an engine may ship the stage to another process between the passes
        stage = pickle.loads(pickle.dumps(stage))
    stage.finish()
    marked = [stage.process(b) for b in tbl.to_batches(max_chunksize=16)]
    return stage, [r for b in marked for r in b.column("reasons").to_pylist()]


def test_near_spilled_to_disk_and_pickled_gives_the_same_marks(tmp_path):
    rows, twins = near_rows(8, 60)
    cfg = DedupConfig(exact=False)
    plain, marks = _near_decisions(rows, cfg, tmp_path, "plain")
    spilled, marks2 = _near_decisions(rows, cfg, tmp_path, "spill", budget=4096, repickle=True)
    assert spilled._bands.spilled and not plain._bands.spilled
    assert marks == marks2
    assert sum(1 for m in marks if m == ["dedup.near"]) == len(twins)
