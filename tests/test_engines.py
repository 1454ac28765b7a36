"""Engines: the same recipe gives byte-identical shards under local, processes (1, 2, 4 workers) and
Ray; a run killed with SIGKILL mid-way resumes to the same bytes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from posttrain.runner.engines import get_engine

# Small units (one row group each) so there are many of them, and a single split to stay quick.
RECIPE = {"source": {"splits": ["math", "tool_calling"], "unit_rows": 100}, "tokenize": {"max_length": 8192},
          "pack": {"seq_len": 8192, "shard_packs": 10}}


def prepare(tmp_path: Path, out: Path, *extra: str, env: dict | None = None, wait: bool = True):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    cmd = [sys.executable, "-m", "posttrain", "prepare", str(recipe), "--out", str(out), *extra]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    if not wait:
        return subprocess.Popen(cmd, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    res = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads((out / "manifest.json").read_text())


def comparable(m: dict) -> dict:
    m = dict(m)
    m.pop("run")
    m["recipe"] = {k: v for k, v in m["recipe"].items() if k not in ("output", "engine")}
    return m


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("base")
    return prepare(tmp, tmp / "local")


def shas(m: dict) -> list[str]:
    return [s["sha256"] for s in m["shards"]]


def test_baseline_has_several_units_and_shards(baseline: dict):
    assert baseline["source"]["fragments"] >= 8
    assert len(baseline["shards"]) >= 2


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_processes_engine_gives_the_same_bytes(baseline: dict, tmp_path: Path, workers: int):
    m = prepare(tmp_path, tmp_path / "p", "--engine", "processes", "--workers", str(workers))
    assert shas(m) == shas(baseline)
    assert comparable(m) == comparable(baseline)


def test_ray_engine_gives_the_same_bytes(baseline: dict, tmp_path: Path):
    pytest.importorskip("ray")
    m = prepare(tmp_path, tmp_path / "r", "--engine", "ray", "--workers", "2")
    assert shas(m) == shas(baseline)
    assert comparable(m) == comparable(baseline)


def test_kill_9_mid_run_then_resume_gives_the_same_bytes(baseline: dict, tmp_path: Path):
    out = tmp_path / "k"
    proc = prepare(tmp_path, out, env={"POSTTRAIN_FAULT_UNIT_DELAY_S": "0.4"}, wait=False)
    deadline = time.time() + 300
    work = out / ".work"
    while time.time() < deadline:
        done = list(work.glob("unit-*/result.json")) if work.exists() else []
        if len(done) >= 3:
            break
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_at_kill = len(list(work.glob("unit-*/result.json")))
    assert 3 <= done_at_kill < baseline["source"]["fragments"]
    assert not (out / "manifest.json").exists()
    m = prepare(tmp_path, out)
    assert shas(m) == shas(baseline)
    assert comparable(m) == comparable(baseline)


def _square(x: int) -> int:
    return x * x


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("boom")
    return x


def test_engines_keep_unit_order():
    for name, workers in (("local", 1), ("processes", 2)):
        eng = get_engine(name, workers)
        try:
            assert list(eng.map_units(_square, range(9))) == [i * i for i in range(9)]
        finally:
            eng.close()


def test_a_failing_unit_is_retried_then_named():
    from posttrain.errors import UnitFailed

    eng = get_engine("local", retries=1)
    with pytest.raises(UnitFailed, match="work unit 3 failed 2 times: ValueError: boom"):
        list(eng.map_units(_fail_on_three, range(5)))
