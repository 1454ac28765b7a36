"""The whole run on the engine: dedup partitioned by hash decides exactly as the serial stages do;
`dedup`, `select` and `prepare`'s reduce and pack passes give the local run's bytes on the processes
engine; the spool stores ids at the vocabulary's width and masks as spans; progress covers every
phase and the manifest times them. (Multi-node Ray: tests/test_scale_ray.py.)"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
import yaml
from digests_helper import output_digests
from typer.testing import CliRunner

from posttrain.cli import app
from posttrain.config import DedupConfig, load_recipe
from posttrain.io.sources import open_source
from posttrain.io.spool import UnitWriter, unit_dir
from posttrain.io.spool_codec import ID_BYTES_KEY, decode_docs, encode_docs, id_width
from posttrain.jobs.dedup_passes import decide
from posttrain.jobs.passes import Passes
from posttrain.reduce.dedup.exact import ExactDedup
from posttrain.reduce.dedup.near import NearDedup
from posttrain.reduce.dedup.partition import SignatureLayout, UnitSignatures, signature_pass_meta
from posttrain.runner.session import open_engine

os.environ.setdefault("HF_HUB_OFFLINE", "1")
runner = CliRunner()


def cli(*args: str) -> None:
    res = runner.invoke(app, [*args, "--no-progress"])
    assert res.exit_code == 0, res.output


# ---- dedup by partition == the serial stages ----------------------------------------------------------


@dataclass
class _SigUnit:
    """A signature unit over pre-cut pieces of the stream (the test's own, arbitrary, unit cuts)."""

    pieces: list[list[pa.RecordBatch]]
    work: Path
    config: DedupConfig

    def __call__(self, u: int) -> dict:
        sig = UnitSignatures(self.config)
        for batch in self.pieces[u]:
            sig.add(batch)
        writer = UnitWriter(self.work, u)
        result = {"unit": u, **sig.write(writer.tmp)}
        writer.commit(result)
        return result


def _cut(batches: list[pa.RecordBatch], n_units: int, seed: int) -> list[list[pa.RecordBatch]]:
    """The stream cut into `n_units` pieces at random rows (inside batches too)."""
    table = pa.Table.from_batches(batches)
    cuts = np.sort(np.random.default_rng(seed).choice(np.arange(1, table.num_rows), n_units - 1, replace=False))
    bounds = [0, *cuts.tolist(), table.num_rows]
    return [table.slice(a, b - a).to_batches(max_chunksize=97) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


@pytest.mark.parametrize(
    "config",
    [
        DedupConfig(),
        DedupConfig(exact_key="prompt", max_responses_per_prompt=1, threshold=0.6),
        DedupConfig(near_field="conversation", shingle="char", ngram=8, threshold=0.5),
    ],
    ids=["default", "quota", "conversation"],
)
def test_partitioned_dedup_decides_exactly_like_the_serial_stages(config: DedupConfig, tmp_path: Path):
    batches = [b.drop_columns(["reasons"]) if "reasons" in b.schema.names else b
               for b in open_source().iter_batches(batch_size=256)]
    use_exact = config.exact or bool(config.max_responses_per_prompt)
    exact = ExactDedup(config, str(tmp_path / "serial-exact")) if use_exact else None
    near = NearDedup(config, str(tmp_path / "serial-near"))
    for b in batches:
        if exact:
            exact.observe(b)
        near.observe(b)
    if exact:
        exact.finish()
    serial = near.finish(excluded=exact.decisions.rows if exact else None)
    assert len(near.decisions.rows) > 0  # the sample plants near duplicates: the test compares something

    pieces = _cut(batches, 7, seed=len(str(config)))
    sig_work = tmp_path / "sig"
    with open_engine("local") as eng:
        passes = Passes(eng)
        results = passes.run("find", _SigUnit(pieces, sig_work, config), len(pieces), sig_work, phase="t")
        layout = SignatureLayout(sig_work, tmp_path / "meta")
        signature_pass_meta(layout.meta_dir, list(range(len(pieces))), results)
        got = decide(passes, tmp_path / "decide", layout, config, phase="t", similarity=True)
    if exact:
        for f in ("rows", "codes", "twins"):
            assert np.array_equal(getattr(got.exact, f), getattr(exact.decisions, f)), f
    for f in ("rows", "codes", "twins"):
        assert np.array_equal(getattr(got.near, f), getattr(near.decisions, f)), f
    c = got.clusters
    for f in ("rows", "rep_rows", "rep_ranks", "similarity", "removed"):
        assert np.array_equal(getattr(c, f), getattr(serial, f)), f
    assert (c.candidate_pairs, c.verified_pairs) == (serial.candidate_pairs, serial.verified_pairs)


# ---- dedup and select: processes == local, byte for byte ----------------------------------------------


def test_dedup_on_processes_gives_the_local_bytes(tmp_path: Path):
    args = ["dedup", "--exact-key", "prompt", "--max-responses-per-prompt", "1"]
    cli(*args, "--out", str(tmp_path / "local"))
    cli(*args, "--out", str(tmp_path / "proc"), "--engine", "processes", "--workers", "2", "--unit-rows", "100")
    local = output_digests(tmp_path / "local", across_engines=True)
    assert {"kept/part-00000.parquet", "removed/part-00000.parquet", "clusters.parquet", "summary.json"} <= set(local)
    assert output_digests(tmp_path / "proc", across_engines=True) == local
    assert not (tmp_path / "proc" / ".work").exists()


# seed 1 with these factors puts math's boundary inside a hash bin: the refine pass runs too
SELECT_MIX = {"select": {"seed": 1, "mix": {"by": "category", "epochs": {"math": 0.61, "code": 0.61, "chat": 1.5},
                                            "rest": 1.0}}}


def test_select_on_processes_gives_the_local_bytes(tmp_path: Path):
    recipe = tmp_path / "mix.yaml"
    recipe.write_text(yaml.safe_dump(SELECT_MIX))
    args = ["select", "--recipe", str(recipe), "--limit", "2200"]
    cli(*args, "--out", str(tmp_path / "local"))
    cli(*args, "--out", str(tmp_path / "proc"), "--engine", "processes", "--workers", "2", "--unit-rows", "100")
    local = output_digests(tmp_path / "local", across_engines=True)
    assert any(k.startswith("kept/") for k in local) and any(k.startswith("rejects/") for k in local)
    assert output_digests(tmp_path / "proc", across_engines=True) == local


# ---- prepare: every reduce and pack pass on the engine, the local bytes ---------------------------------

PREPARE = {
    "source": {"unit_rows": 100, "splits": ["math", "chat"]},
    "dedup": {"max_responses_per_prompt": 1, "exact_key": "prompt"},
    "select": {"seed": 1, "mix": {"by": "category", "epochs": {"chat": 2.5, "math": 0.5}, "rest": 1.0}},
    "tokenize": {"max_length": 8192},
    "pack": {"seq_len": 8192, "shard_packs": 12},
}


def test_prepare_reduce_and_pack_passes_on_processes_give_the_local_bytes(tmp_path: Path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(PREPARE))
    cli("prepare", str(recipe), "--out", str(tmp_path / "local"))
    cli("prepare", str(recipe), "--out", str(tmp_path / "proc"), "--engine", "processes", "--workers", "2")
    local = output_digests(tmp_path / "local", across_engines=True)
    assert sum(k.startswith("shards/") for k in local) >= 2 and "rejects/reduce.parquet" in local
    assert output_digests(tmp_path / "proc", across_engines=True) == local
    m = json.loads((tmp_path / "proc" / "manifest.json").read_text())
    assert {"dedup.exact", "dedup.near", "dedup.quota", "mix.count", "mix.draw", "pack.shards"} <= set(m["run"]["phase_seconds"])
    assert m["rows"]["rejected_by_reason"].get("select.unsampled", 0) > 0
    assert not (tmp_path / "proc" / ".work" / "reduce").exists()  # the passes' files go with the spool


# ---- the spool, progress, phase seconds -----------------------------------------------------------------


def test_spool_codec_round_trips_every_width():
    rng = np.random.default_rng(0)
    for vocab in (200, 32_000, 128_256, 2**31 - 1):
        width = id_width(vocab)
        lens = rng.integers(0, 40, 30)
        ids = [rng.integers(0, vocab, n).tolist() for n in lens]
        masks = [(rng.random(n) < rng.random()).astype(int).tolist() for n in lens]
        batch = pa.record_batch({"uuid": [str(i) for i in range(30)], "input_ids": pa.array(ids, pa.list_(pa.int32())),
                                 "loss_mask": pa.array(masks, pa.list_(pa.int8()))})
        table = pa.Table.from_batches([encode_docs(batch, width)])
        pick = rng.permutation(30)[:17]
        back = decode_docs(table.take(pa.array(pick)))
        assert back.column("input_ids").to_pylist() == [ids[i] for i in pick]
        assert back.column("loss_mask").to_pylist() == [masks[i] for i in pick]
    assert [id_width(v) for v in (256, 65_536, 65_537, 128_256)] == [1, 2, 3, 3]


def test_spool_is_narrow_progress_covers_every_phase_and_the_manifest_times_them(tmp_path: Path):
    from posttrain.jobs.prepare.run import run_prepare

    recipe_path = tmp_path / "r.yaml"
    recipe_path.write_text(yaml.safe_dump({"source": {"unit_rows": 100, "splits": ["code", "stem"], "limit": 600},
                                           "output": {"dir": str(tmp_path / "out"), "keep_work": True}}))
    events = []
    m = run_prepare(load_recipe(str(recipe_path)), on_progress=events.append)
    work = tmp_path / "out" / ".work"
    spools = sorted(work.glob("unit-*/docs.arrow"))
    assert spools
    tokens = 0
    for path in spools:
        with pa.memory_map(str(path)) as src:
            table = ipc.open_file(src).read_all()
        assert table.schema.metadata[ID_BYTES_KEY] == b"3"  # Llama-3: 128,256 ids fit 3 bytes
        assert {"ids", "spans"} <= set(table.column_names) and "input_ids" not in table.column_names
        tokens += sum(len(x) for x in decode_docs(table).column("input_ids").to_pylist())
    size = sum(p.stat().st_size for p in spools)
    assert tokens == sum(json.loads((unit_dir(work, int(p.parent.name[5:])) / "result.json").read_text())["tokens"]
                         for p in spools)
    assert size / tokens < 3.3, f"{size / tokens:.2f} bytes a token"

    by_phase: dict[str, dict] = {}
    for e in events:
        st = by_phase.setdefault(e.phase, {"units": 0, "units_total": None, "advance": 0, "tokens": 0})
        st["units"] += e.units
        st["units_total"] = e.units_total if e.units_total is not None else st["units_total"]
        st["advance"] += e.advance
        st["tokens"] += e.tokens
    for phase in ("map", "reduce", "pack"):
        st = by_phase[phase]
        assert st["units"] == st["units_total"] > 0, (phase, st)
        assert st["tokens"] > 0 or phase == "reduce"
    assert by_phase["map"]["advance"] == 600 and by_phase["pack"]["advance"] == m["pack"]["packs"]
    assert by_phase["pack"]["tokens"] == m["tokens"]["tokens"]
    seconds = m["run"]["seconds"]
    assert {"map", "reduce", "pack", "total", "driver"} <= set(seconds)
    assert 0 <= seconds["driver"] <= seconds["total"]


def test_a_shard_is_the_same_bytes_with_or_without_reading_ahead(tmp_path: Path):
    """The pack phase reads row groups ahead only when it has fewer shards than slots (memory):
    either way a shard unit writes the bytes the run wrote."""
    from posttrain.jobs.prepare.reduce_units import ShardUnit
    from posttrain.jobs.prepare.run import run_prepare

    out = tmp_path / "out"
    recipe_path = tmp_path / "r.yaml"
    recipe_path.write_text(yaml.safe_dump({"source": {"splits": ["code", "math"], "limit": 200},
                                           "pack": {"seq_len": 4096, "shard_packs": 10, "row_group_packs": 3},
                                           "tokenize": {"max_length": 4096},
                                           "output": {"dir": str(out), "keep_work": True}}))
    recipe = load_recipe(str(recipe_path))
    m = run_prepare(recipe)
    assert len(m["shards"]) >= 3  # more shards than the local pass's threads: written without reading ahead
    work = out / ".work"
    for read_ahead in (True, False):
        dest = tmp_path / f"ahead-{read_ahead}"
        dest.mkdir()
        unit = ShardUnit(work, work / "pack" / "plan", dest, tmp_path / f"units-{read_ahead}", recipe.pack,
                         read_ahead=read_ahead)
        for s, shard in enumerate(m["shards"]):
            result = unit(s)
            assert (dest / shard["file"]).read_bytes() == (out / "shards" / shard["file"]).read_bytes()
            assert result["packs"] == shard["packs"]
    assert max(shard["packs"] for shard in m["shards"]) > 3  # a shard of several row groups
