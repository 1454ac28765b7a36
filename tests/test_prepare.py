"""`posttrain prepare` end to end on the bundled sample: counts add up, masks verified, deterministic,
resumable, and every planted defect ends in rejects with its code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from posttrain.cli import app
from posttrain.config import default_recipe, load_recipe
from posttrain.sample import load_manifest

runner = CliRunner()

# Small packs so the sample makes several shards; everything else is the default recipe.
SMALL = {"tokenize": {"max_length": 8192}, "pack": {"seq_len": 8192, "shard_packs": 40}}


def write_recipe(tmp_path: Path, data: dict, name: str = "recipe.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def run_prepare_cli(*args: str):
    result = runner.invoke(app, ["prepare", *args])
    assert "Traceback" not in result.output, result.output
    return result


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("prep")
    out = tmp / "out"
    r = run_prepare_cli(str(write_recipe(tmp, SMALL)), "--out", str(out))
    assert r.exit_code == 0, r.output
    return out


def rejects(out: Path) -> dict[str, list[str]]:
    """uuid -> reasons, over every rejects file."""
    found: dict[str, list[str]] = {}
    for f in sorted((out / "rejects").glob("*.parquet")):
        t = pq.read_table(f, columns=["uuid", "reasons"])
        for u, rs in zip(t.column("uuid").to_pylist(), t.column("reasons").to_pylist(), strict=True):
            found.setdefault(u, []).extend(rs)
    return found


def test_counts_add_up_and_masks_are_verified(prepared: Path):
    m = json.loads((prepared / "manifest.json").read_text())
    rows = m["rows"]
    assert rows["in"] == 2500
    assert rows["in"] == rows["out"] + rows["rejected"]
    assert sum(rows["rejected_by_reason"].values()) == rows["rejected"]
    assert not any(code.startswith("mask.") for code in m["reasons_seen"]), m["reasons_seen"]
    assert m["tokens"]["trained_tokens"] > 0
    assert m["pack"]["efficiency"] > 0.97
    assert len(m["shards"]) >= 2
    # the rejects files hold exactly the rejected rows
    assert len(rejects(prepared)) == rows["rejected"]
    # packed documents are exactly the rows out, each once
    uuids = [u for f in sorted((prepared / "shards").glob("*.parquet"))
             for us in pq.read_table(f, columns=["uuids"]).column("uuids").to_pylist() for u in us]
    assert len(uuids) == len(set(uuids)) == rows["out"]
    assert set(uuids).isdisjoint(rejects(prepared))


def test_planted_defects_are_rejected_with_their_code(prepared: Path):
    manifest = load_manifest()
    found = rejects(prepared)
    error_codes = [
        "think.unclosed", "think.in_off_mode", "math.no_boxed", "math.mismatch", "code.syntax_error",
        "tools.unknown_tool", "tools.arguments_not_json", "tools.arguments_schema", "structure.role_order",
        "structure.empty_turn", "stem.mismatch", "decontam.ngram",
    ]
    for code in error_codes:
        planted = manifest["defects"][code]["uuids"]
        assert planted, code
        for u in planted:
            assert code in found.get(u, []), (code, u, found.get(u))


def test_duplicates_lose_exactly_one_of_each_pair(prepared: Path):
    manifest = load_manifest()
    found = rejects(prepared)
    for code in ("dedup.exact", "dedup.near"):
        d = manifest["defects"][code]
        twins = d.get("twins") or d.get("pairs") or {}
        removed = [u for u, rs in found.items() if code in rs]
        assert len(removed) == d["count"], (code, removed)
        for copy, twin in (twins.items() if isinstance(twins, dict) else twins):
            assert (copy in removed) != (twin in removed), (code, copy, twin)


def test_withheld_prompts_are_restored_or_rejected(prepared: Path):
    manifest = load_manifest()
    found = rejects(prepared)
    for split in ("code", "chat"):
        w = manifest["withheld"][split]
        unrecoverable = set(w["unrestorable"])
        assert unrecoverable
        for u in unrecoverable:
            assert "prompt.unrecoverable" in found.get(u, []), u


def test_shards_carry_boundaries_and_traceable_labels(prepared: Path):
    t = pq.read_table(sorted((prepared / "shards").glob("*.parquet"))[0])
    for row in t.slice(0, 5).to_pylist():
        ids, labels, pos, lens = row["input_ids"], row["labels"], row["position_ids"], row["seq_lens"]
        assert sum(lens) == len(ids) == len(labels) == len(pos) <= 8192
        starts = np.cumsum([0, *lens[:-1]])
        for s, n in zip(starts, lens, strict=True):
            assert pos[s : s + n] == list(range(n))  # positions restart per document
            assert labels[s] == -100  # nothing predicts across a boundary
            assert ids[s] == 128000  # each document starts with <|begin_of_text|>
        assert len(row["uuids"]) == len(lens) == len(row["categories"])


def test_same_recipe_twice_gives_identical_shards(prepared: Path, tmp_path: Path):
    out = tmp_path / "again"
    r = run_prepare_cli(str(write_recipe(tmp_path, SMALL)), "--out", str(out))
    assert r.exit_code == 0, r.output
    a = json.loads((prepared / "manifest.json").read_text())
    b = json.loads((out / "manifest.json").read_text())
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
    a.pop("run"), b.pop("run")
    a["recipe"]["output"] = b["recipe"]["output"] = None
    assert a == b


def test_rerun_resumes_and_other_recipe_is_refused(prepared: Path, tmp_path: Path):
    before = json.loads((prepared / "manifest.json").read_text())["shards"]
    r = run_prepare_cli(str(write_recipe(tmp_path, SMALL)), "--out", str(prepared))
    assert r.exit_code == 0, r.output
    assert json.loads((prepared / "manifest.json").read_text())["shards"] == before
    r = run_prepare_cli(str(write_recipe(tmp_path, {"tokenize": {"max_length": 4096}, "pack": {"seq_len": 4096}})), "--out", str(prepared))
    assert r.exit_code == 2
    assert "different recipe" in r.output


def test_loader_reads_the_output(prepared: Path):
    torch = pytest.importorskip("torch")
    from posttrain.io.packed import PackedDataset

    ds = PackedDataset(prepared / "shards", rank=0, world_size=2, seed=0)
    item = ds[0]
    assert item["input_ids"].dtype == torch.int32 or item["input_ids"].dtype == torch.int64
    assert int(item["cu_seqlens"][-1]) == item["input_ids"].numel()


def test_limit_and_split_flags(tmp_path: Path):
    out = tmp_path / "math"
    r = run_prepare_cli("--split", "math", "--limit", "60", "--out", str(out), "--seq-len", "4096")
    assert r.exit_code == 0, r.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["rows"]["in"] == 60 and m["source"]["splits"] == ["math"]
    assert set(m["tokens"]["tokens_by_category"]) == {"math"}


# ---- the recipe ------------------------------------------------------------------------------------


def test_default_recipe_round_trips(tmp_path: Path):
    r = runner.invoke(app, ["recipe", "--default"])
    assert r.exit_code == 0
    p = tmp_path / "default.yaml"
    p.write_text(r.output)
    assert load_recipe(p) == default_recipe()


def test_unknown_recipe_key_names_its_path(tmp_path: Path):
    p = write_recipe(tmp_path, {"pack": {"seq_length": 4096}})
    r = run_prepare_cli(str(p), "--out", str(tmp_path / "x"))
    assert r.exit_code == 2
    assert "unknown key 'pack.seq_length'" in r.output


def test_bad_recipe_value_and_yaml(tmp_path: Path):
    p = write_recipe(tmp_path, {"tokenize": {"overflow": "explode"}})
    r = run_prepare_cli(str(p), "--out", str(tmp_path / "x"))
    assert r.exit_code == 2 and "tokenize.overflow" in r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("pack: [1, 2\n")
    r = run_prepare_cli(str(bad), "--out", str(tmp_path / "y"))
    assert r.exit_code == 2 and "not valid YAML" in r.output


def test_recipe_hash_ignores_output_and_engine():
    a, b = default_recipe(), default_recipe()
    b.output.dir, b.engine.workers = "elsewhere", 4
    assert a.hash() == b.hash()
    b.pack.seq_len = 4096
    assert a.hash() != b.hash()


def test_pack_counts_match_tokens_by_category(prepared: Path):
    m = json.loads((prepared / "manifest.json").read_text())
    total = 0
    for s in m["shards"]:
        t = pq.read_table(prepared / "shards" / s["file"], columns=["input_ids"])
        total += int(pc.sum(pc.list_value_length(t.column("input_ids"))).as_py())
    assert total == m["tokens"]["tokens"] == sum(m["tokens"]["tokens_by_category"].values())


# ---- mixing inside prepare -------------------------------------------------------------------------

MIX = {
    "select": {"seed": 3, "mix": {"by": "category", "rows": 1200,
                                  "weights": {"math": 0.4, "code": 0.2, "chat": 0.2, "stem": 0.1, "tool_calling": 0.1}}},
    "tokenize": {"max_length": 8192},
    "pack": {"seq_len": 8192},
}


def packed_uuids(out: Path) -> list[str]:
    return sorted(u for f in sorted((out / "shards").glob("*.parquet"))
                  for us in pq.read_table(f, columns=["uuids"]).column("uuids").to_pylist() for u in us)


def test_mix_gives_the_same_rows_twice_and_under_another_batch_size(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    r = run_prepare_cli(str(write_recipe(tmp_path, MIX)), "--out", str(a))
    assert r.exit_code == 0, r.output
    assert "mixture: asked vs achieved" in r.output
    other = {**MIX, "engine": {"batch_size": 37}}
    r = run_prepare_cli(str(write_recipe(tmp_path, other, "other.yaml")), "--out", str(b))
    assert r.exit_code == 0, r.output
    assert packed_uuids(a) == packed_uuids(b)
    m = json.loads((a / "manifest.json").read_text())
    assert m["rows"]["in"] == m["rows"]["out"] + m["rows"]["rejected"]
    achieved = {row["key"]: row["achieved_rows"] for row in m["mixture"]}
    assert achieved == {"math": 480, "code": 240, "chat": 240, "stem": 120, "tool_calling": 120}
    # math asks for more rows than survive the checks: rows repeat under uuid#r1, never silently short
    repeats = [u for u in packed_uuids(a) if "#r" in u]
    assert repeats and all(u.split("#r")[0] in packed_uuids(a) for u in repeats)
    assert len(packed_uuids(a)) == 1200
    assert m["rows"]["rejected_by_reason"]["select.unsampled"] > 0
