"""The syntax pool: the code check's parse in a worker process gives what parsing here gives; a dead
worker is replaced; the workers stop with validate and with their driver."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from posttrain.jobs.validate import run_validate
from posttrain.schema import NEMOTRON_SCHEMA
from posttrain.stages.checks import syntax_pool
from posttrain.stages.checks.code import CodeBlockCheck
from posttrain.stages.checks.syntax import code_findings
from posttrain.stages.checks.syntax_pool import SyntaxPool

ANSWERS = [
    "Here:\n```python\nimport sys\nprint(sum(map(int, sys.stdin.read().split())))\n```\n",
    "Fixed:\n```python\ndef f(:\n    pass\n```\n",
    "Two:\n```py\nx = 1\n```\nand\n```python3\ny = (\n```\n",
    "```c++\nint main() { return 0 }\n```\n",  # not Python: not parsed
    "no fence at all",
    "```python\nx = 'a\x00b'\n```\n",  # null byte: ValueError from the parser
    "```python\n" + "x = " + "(" * 300 + "1" + ")" * 300 + "\n```\n",  # too deeply nested
    "",
    "<think>open",
]


def row(i: int, answer: str) -> dict:
    return {
        "uuid": f"u{i}", "category": "code", "reasoning": "on", "metadata": json.dumps({}),
        "messages": [{"role": "user", "content": "q", "tool_calls": []},
                     {"role": "assistant", "content": "<think>t</think>" + answer, "tool_calls": []}],
    }  # fmt: skip


def batch(answers: list[str]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([row(i, a) for i, a in enumerate(answers)], schema=NEMOTRON_SCHEMA)


class Recorded(syntax_pool._Worker):
    started: list[Recorded] = []

    def __init__(self) -> None:
        super().__init__()
        Recorded.started.append(self)


@pytest.fixture
def workers(monkeypatch: pytest.MonkeyPatch) -> list[Recorded]:
    Recorded.started = []
    monkeypatch.setattr(syntax_pool, "_Worker", Recorded)
    return Recorded.started


def test_findings_through_a_worker_are_those_parsed_here(workers: list[Recorded]) -> None:
    texts = [a if "```" in a else None for a in ANSWERS * 3]
    pool = SyntaxPool(min_chars=0)
    try:
        assert pool.findings(texts) == code_findings(texts)
        assert len(workers) == 1 and workers[0].proc.poll() is None  # it ran in the worker, which waits for more
    finally:
        pool.close()
    assert workers[0].proc.poll() is not None


def test_the_check_reports_the_same_codes_and_snippets_through_the_pool(workers: list[Recorded]) -> None:
    b = batch(ANSWERS)
    here = CodeBlockCheck()
    here.syntax.min_chars = 10**12  # never worth a worker: parsed in this process, as before the pool
    pooled = CodeBlockCheck()
    pooled.syntax.min_chars = 0
    try:
        want = here.process(b).column("reasons").to_pylist()
        got = pooled.process(b).column("reasons").to_pylist()
    finally:
        pooled.close()
    assert len(workers) == 1
    assert got == want
    assert want[:5] == [[], ["code.syntax_error"], ["code.syntax_error"], [], ["code.no_block"]]
    rows = b.to_pylist()
    assert pooled.describe(rows[1], "code.syntax_error") == here.describe(rows[1], "code.syntax_error")
    assert pooled.describe(rows[1], "code.syntax_error").startswith("line 1: invalid syntax: def f(:")


def test_a_killed_worker_is_replaced(workers: list[Recorded]) -> None:
    texts = [a for a in ANSWERS if "```" in a]
    pool = SyntaxPool(min_chars=0)
    try:
        assert pool.findings(texts) == code_findings(texts)
        first = workers[0]
        first.proc.kill()
        first.proc.wait(5)
        assert pool.findings(texts) == code_findings(texts)  # the dead one failed the request; a fresh one answered
        assert len(workers) == 2 and workers[1].proc.poll() is None
    finally:
        pool.close()


def test_a_request_is_parsed_here_when_fresh_workers_die_too(workers: list[Recorded], monkeypatch) -> None:
    def dies(self: Recorded, texts: list[str | None]) -> list[str | None]:
        raise EOFError("killed")

    monkeypatch.setattr(Recorded, "ask", dies)
    texts = [a for a in ANSWERS if "```" in a]
    pool = SyntaxPool(min_chars=0)
    assert pool.findings(texts) == code_findings(texts)
    assert len(workers) == 2 and all(w.proc.poll() is not None for w in workers)


def test_small_batches_and_engine_workers_parse_here(workers: list[Recorded], monkeypatch) -> None:
    assert SyntaxPool().findings(["```python\nx = 1\n```\n"]) == [None]  # below min_chars
    monkeypatch.setattr(syntax_pool.multiprocessing, "parent_process", lambda: object())
    assert SyntaxPool(min_chars=0).findings(["```python\nx = (\n```\n"]) == ["code.syntax_error"]
    assert workers == []


def test_the_pool_pickles_without_its_processes(workers: list[Recorded]) -> None:
    pool = SyntaxPool(workers=2, min_chars=5)
    pool.findings(["```python\nx = 1\n```\n"])
    copy = pickle.loads(pickle.dumps(pool))
    assert (copy.workers, copy.min_chars, copy._idle) == (2, 5, [])
    pool.close()


def test_validate_stops_the_workers_it_started(tmp_path: Path, workers: list[Recorded]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    pq.write_table(pa.Table.from_batches([batch(ANSWERS * 4)]), data / "code-00000-of-00001.parquet")
    check = CodeBlockCheck()
    check.syntax.min_chars = 0
    from posttrain.io.sources import open_source

    summary = run_validate(open_source(str(data)), tmp_path / "out", checks=[check], workers=2, batch_size=8)
    assert summary.counts["code.syntax_error"] == {"code": 4 * 4}
    assert workers and all(w.proc.poll() is not None for w in workers)
    assert check.syntax._idle == []


def test_a_worker_ends_with_its_driver(tmp_path: Path) -> None:
    """The driver killed with SIGKILL (no cleanup runs): its worker ends on its own."""
    script = textwrap.dedent(
        """
        import os, sys, time
        from posttrain.stages.checks.syntax_pool import SyntaxPool
        from posttrain.stages.checks import syntax_pool
        started = []
        class W(syntax_pool._Worker):
            def __init__(self):
                super().__init__()
                started.append(self)
        syntax_pool._Worker = W
        pool = SyntaxPool(min_chars=0)
        pool.findings(["```python\\nx = 1\\n```\\n"])
        print(started[0].proc.pid, flush=True)
        time.sleep(60)
        """
    )
    driver = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert driver.stdout is not None
        worker_pid = int(driver.stdout.readline())
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(worker_pid):
            time.sleep(0.05)
        assert not _alive(worker_pid)
    finally:
        driver.kill()


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped by init, counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_begin_then_finish_at_the_checks_turn_is_process(workers: list[Recorded]) -> None:
    """validate's judge starts the parse before the earlier checks run and finishes it at the check's turn."""
    from posttrain.stage import add_reasons

    b = batch(ANSWERS)
    check = CodeBlockCheck()
    check.syntax.min_chars = 0
    try:
        finish = check.begin(b)
        assert finish is not None
        at_turn = add_reasons(b, [["think.missing"], None, ["think.missing"]] + [None] * (len(ANSWERS) - 3))
        got = finish(at_turn).column("reasons").to_pylist()
        assert got == check.process(at_turn).column("reasons").to_pylist()
        assert got[:3] == [["think.missing"], ["code.syntax_error"], ["think.missing", "code.syntax_error"]]
    finally:
        check.close()
    assert CodeBlockCheck().begin(batch([])) is None  # no code rows: nothing to start


def test_prepare_stops_the_workers_its_code_check_started(tmp_path: Path, workers: list[Recorded],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """prepare's map units run the code check as a row stage: its workers stop when the map phase
    ends, not when the pool is collected or the process exits."""
    import yaml

    from posttrain.config import load_recipe
    from posttrain.jobs.prepare import run as prepare_run

    monkeypatch.setattr(SyntaxPool.__init__, "__defaults__", (None, 0))  # every batch worth a worker
    kept: list = []  # the stages outlive the run here, so their pools are not stopped by being collected

    def build_row_stages(*args, **kwargs):
        stages, severity = real_build(*args, **kwargs)
        kept.extend(stages)
        return stages, severity

    real_build = prepare_run.build_row_stages
    monkeypatch.setattr(prepare_run, "build_row_stages", build_row_stages)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"source": {"splits": ["code"], "limit": 60},
                                      "output": {"dir": str(tmp_path / "out")}}))
    manifest = prepare_run.run_prepare(load_recipe(str(recipe)))
    assert manifest["rows"]["in"] == 60
    assert workers, "the code check parsed in this process: the test proves nothing"
    assert all(w.proc.poll() is not None for w in workers)
    assert any(isinstance(s, CodeBlockCheck) for s in kept)


def test_a_process_pinned_to_one_core_parses_here(workers: list[Recorded], monkeypatch: pytest.MonkeyPatch) -> None:
    """On one usable core (taskset, a scheduler's pinning: the machine may have more) a worker only adds
    its start and the round trips."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert SyntaxPool(min_chars=0).findings(["```python\nx = (\n```\n"]) == ["code.syntax_error"]
    assert workers == []
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert SyntaxPool(min_chars=0).findings(["```python\nx = (\n```\n"]) == ["code.syntax_error"]
    assert len(workers) == 1
