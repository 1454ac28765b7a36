"""The row commands (validate, decontaminate, export, rehydrate) give the same bytes on every engine.

Real CLI calls on the bundled sample, cut into small work units (`--unit-rows 100`: 20 units), under
`local`, `processes` with 2 workers and `ray` with 2 CPUs (one local Ray instance for the module).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from posttrain.cli import app
from posttrain.errors import PosttrainError, UnitFailed
from posttrain.runner.units import (
    WORK_DIR,
    UnitOutput,
    open_row_source,
    run_units,
    unit_batches,
    unit_row_caps,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

COMMANDS = {
    "validate": ["validate", "--no-progress"],
    "decontaminate": ["decontaminate", "--min-overlap", "0.2"],
    "export": ["export", "--format", "alpaca", "--gzip"],
    "rehydrate": ["rehydrate"],
}
TIMING_FIELDS = {"seconds"}


def _run(args: list[str]) -> None:
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output


def _digest(out: Path) -> dict[str, str]:
    """sha256 of every file under `out`; JSON files compared without their timing fields."""
    digests = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.suffix == ".json":
            doc = json.loads(data)
            if isinstance(doc, dict):
                doc = {k: v for k, v in doc.items() if k not in TIMING_FIELDS}
            data = json.dumps(doc, sort_keys=True).encode()
        digests[str(path.relative_to(out))] = hashlib.sha256(data).hexdigest()
    return digests


def _outputs(tmp: Path, engine: str, workers: int, extra: list[str] = ()) -> dict[str, dict[str, str]]:
    out = {}
    for name, args in COMMANDS.items():
        d = tmp / f"{name}-{engine}-{workers}"
        _run([*args, "--out", str(d), "--engine", engine, "--workers", str(workers), "--unit-rows", "100", *extra])
        assert not (d / WORK_DIR).exists()  # the units are merged and removed
        out[name] = _digest(d)
    return out


@pytest.fixture(scope="module")
def local_outputs(tmp_path_factory) -> dict[str, dict[str, str]]:
    return _outputs(tmp_path_factory.mktemp("local"), "local", 1)


def test_local_outputs_are_complete(local_outputs):
    assert {"summary.json", "accepted/part-00000.parquet", "rejects/part-00000.parquet"} <= set(local_outputs["validate"])
    assert {"report.json", "report.html", "hits.parquet", "kept/part-00000.parquet", "removed/part-00000.parquet"} <= set(
        local_outputs["decontaminate"]
    )
    assert {"export.json", "math.jsonl.gz", "tool_calling.jsonl.gz"} <= set(local_outputs["export"])
    assert {"summary.json", "restored/code-00000-of-00001.parquet", "rejects/chat-00000-of-00001.parquet"} <= set(
        local_outputs["rehydrate"]
    )


def test_export_rejects_merge_in_unit_order(tmp_path):
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from posttrain.sample import sample_root

    table = pq.read_table(sample_root() / "data" / "math-00000-of-00001.parquet")
    broken = pc.is_in(pa.array(range(table.num_rows)), pa.array([10, 150, 151, 420]))
    table = table.set_column(table.schema.get_field_index("metadata"), "metadata",
                             pc.if_else(broken, pa.scalar("{oops"), table.column("metadata")))  # fmt: skip
    (tmp_path / "data").mkdir()
    pq.write_table(table, tmp_path / "data" / "math-00000-of-00001.parquet", row_group_size=100)
    runs = {}
    for engine in ("local", "processes"):
        d = tmp_path / engine
        _run(["export", str(tmp_path / "data"), "--format", "openai", "--out", str(d), "--engine", engine,
              "--workers", "2", "--unit-rows", "100"])  # fmt: skip
        runs[engine] = _digest(d)
        assert len((d / "rejects.jsonl").read_text().splitlines()) == 4
    assert runs["local"] == runs["processes"]


def test_processes_engine_gives_the_local_bytes(local_outputs, tmp_path):
    assert _outputs(tmp_path, "processes", 2) == local_outputs


def test_ray_engine_gives_the_local_bytes(local_outputs, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # one start for the three commands
    try:
        assert _outputs(tmp_path, "ray", 2) == local_outputs
    finally:
        ray.shutdown()


def test_limit_cuts_the_stream_at_the_same_row(tmp_path):
    # 250 rows: two whole 128-row units would be 256, so the cap falls inside the second unit
    runs = {}
    for engine in ("local", "processes"):
        d = tmp_path / engine
        _run(["validate", "--no-progress", "--out", str(d), "--engine", engine, "--workers", "2",
              "--unit-rows", "100", "--limit", "250", "--checks", "structure,reasoning"])  # fmt: skip
        runs[engine] = _digest(d)
        assert json.loads((d / "summary.json").read_text())["rows_in"] == 250
    assert runs["local"] == runs["processes"]


def test_unknown_engine_is_one_line(tmp_path):
    res = CliRunner().invoke(app, ["export", "--out", str(tmp_path / "x"), "--engine", "spark"])
    assert res.exit_code != 0 and "unknown engine 'spark'" in res.output


def test_unit_row_caps_follow_fragment_order_and_refuse_unknown_sizes():
    assert unit_row_caps([128, 128, 116], 300) == [128, 128, 44]
    assert unit_row_caps([128, None], None) == [None, None]
    with pytest.raises(PosttrainError, match="JSONL"):
        unit_row_caps([128, None], 10)


@dataclass
class _Flaky:
    """Copies a unit's rows into its unit dir; fails on `fail_at` while the file `trap` exists."""

    source: object
    work: Path
    trap: Path
    calls: Path
    fail_at: int = 2

    def __call__(self, index: int) -> dict:
        with open(self.calls, "a") as f:
            f.write(f"{index}\n")
        if index == self.fail_at and self.trap.exists():
            raise RuntimeError("injected failure")
        unit = UnitOutput(self.work, index)
        for batch in self.source.batches(index):
            unit.write("rows", batch.select(["uuid"]))
        unit.commit({"unit": index})
        return {"unit": index}


def test_a_rerun_skips_the_units_done_before_a_failure(tmp_path):
    from posttrain.runner.units import fragment_rows

    src, spec = open_row_source(None, "math", unit_rows=100)
    work, trap, calls = tmp_path / WORK_DIR, tmp_path / "trap", tmp_path / "calls"
    trap.touch()
    fn = _Flaky(fragment_rows(src, spec, 64), work, trap, calls)
    with pytest.raises(UnitFailed, match="work unit 2"):
        run_units(fn, len(src.fragments), work, engine="local")
    trap.unlink()
    results = run_units(fn, len(src.fragments), work, engine="local")
    assert [r["unit"] for r in results] == [0, 1, 2, 3]
    # units 0 and 1 ran once; unit 2 failed three times (retries) and then ran; 3 ran once
    assert calls.read_text().split() == ["0", "1", "2", "2", "2", "2", "3"]
    uuids = pa.Table.from_batches(list(unit_batches(work, 4, "rows"))).column("uuid").to_pylist()
    assert uuids == [u for b in src.iter_batches(batch_size=500) for u in b.column("uuid").to_pylist()]
