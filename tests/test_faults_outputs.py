"""Fault suite, data loss: posttrain never writes over, into or around its inputs, never reads its own
outputs back, never lets two runs share a folder, and a failed write never breaks a folder for good.

Every case is a real CLI call on a small generated input (issue 10, items 1, 2, 3 and 6).
"""

from __future__ import annotations

import fcntl
import json
import os
import resource
import subprocess
import threading
import time
from pathlib import Path

import pytest
from faults_data import (
    cli,
    manifest,
    one_line_error,
    posttrain_cmd,
    run_posttrain,
    sample_rows,
    subprocess_env,
    tree_digest,
    write_jsonl,
    write_parquet,
)

from posttrain.io.outdir import RECORD_DIR, read_record
from posttrain.sample import default_chat_source


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    """DATA/math.parquet: 40 rows of the bundled sample."""
    write_parquet(tmp_path / "data" / "math.parquet", sample_rows("math", 40))
    return tmp_path / "data"


# -- item 1: --out over the user's files ------------------------------------------------------------

def test_prepare_refuses_an_out_that_holds_its_source(tmp_path: Path) -> None:
    shards = write_parquet(tmp_path / "P" / "shards" / "math.parquet", sample_rows("math", 20)).parent
    before = tree_digest(tmp_path / "P")
    res = cli("prepare", "--source", shards, "--out", tmp_path / "P", "--no-progress")
    one_line_error(res, str(tmp_path / "P"), str(shards), "holds the input")
    assert tree_digest(tmp_path / "P") == before  # the source shards are untouched, nothing was added


def test_dedup_refuses_to_write_over_its_own_input(data: Path, tmp_path: Path) -> None:
    d = tmp_path / "D"
    assert cli("validate", data, "--out", d, "--no-progress").exit_code == 0
    before = tree_digest(d / "accepted")
    res = cli("dedup", d / "accepted", "--out", d, "--no-progress")
    one_line_error(res, str(d), str(d / "accepted"))
    assert tree_digest(d / "accepted") == before
    assert cli("dedup", d / "accepted", "--out", tmp_path / "dd", "--no-progress").exit_code == 0  # the chain works


def test_export_refuses_to_overwrite_its_source(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "DIR" / "math.jsonl", sample_rows("math", 10))
    before = src.read_bytes()
    res = cli("export", src, "--format", "openai", "--out", tmp_path / "DIR", "--no-progress")
    one_line_error(res, str(tmp_path / "DIR"), str(src))
    assert src.read_bytes() == before


def test_report_refuses_to_overwrite_its_source(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "math.jsonl", sample_rows("math", 10))
    before = src.read_bytes()
    one_line_error(cli("report", src, "--json", src, "--no-tokens"), str(src), "is the input")
    assert src.read_bytes() == before


@pytest.mark.parametrize("command", ["validate", "select", "decontaminate", "dedup", "export", "rehydrate"])
def test_every_writer_refuses_an_out_inside_its_input(command: str, data: Path) -> None:
    extra = {"export": ["--format", "openai"], "rehydrate": ["--chat-source", str(default_chat_source())]}
    res = cli(command, data, "--out", data / "out", "--no-progress", *extra.get(command, []))
    one_line_error(res, str(data / "out"), "is inside the input")
    assert not (data / "out").exists()


def test_a_folder_posttrain_did_not_write_is_refused_and_left_alone(data: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    res = cli("validate", data, "--out", mine, "--no-progress")
    one_line_error(res, str(mine), "not empty")
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]  # not even a lock file left behind


def test_an_owned_folder_lists_what_it_wrote_and_a_rerun_replaces_only_that(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "v"
    assert cli("validate", data, "--out", out, "--no-progress").exit_code == 0
    record = read_record(out)
    assert record["state"] == "complete" and record["command"] == "validate"
    assert set(record["files"]) == {"accepted/part-00000.parquet", "rejects/part-00000.parquet", "summary.json"}
    # a stale file of an earlier run (a part the new run does not write) never lingers beside new ones
    stale = out / "accepted" / "part-00001.parquet"
    stale.write_bytes((out / "accepted" / "part-00000.parquet").read_bytes())
    json_record = json.loads((out / RECORD_DIR / "owner.json").read_text())
    json_record["files"].append("accepted/part-00001.parquet")
    (out / RECORD_DIR / "owner.json").write_text(json.dumps(json_record))
    assert cli("validate", data, "--out", out, "--no-progress").exit_code == 0
    assert not stale.exists()
    # a file posttrain did not write, dropped into the folder: refused, kept
    (out / "my-notes.md").write_text("keep me")
    res = cli("validate", data, "--out", out, "--no-progress")
    one_line_error(res, "my-notes.md", "did not write")
    assert (out / "my-notes.md").read_text() == "keep me"


# -- item 2: output read back as input ----------------------------------------------------------------

def test_an_owned_output_under_a_source_folder_is_never_read_back(data: Path, tmp_path: Path) -> None:
    write_parquet(tmp_path / "D" / "sub" / "math.parquet", sample_rows("math", 40))
    d = tmp_path / "D"
    for _ in range(2):  # written twice into D/val: nothing of it is listed as input of D later
        assert cli("validate", d / "sub", "--out", d / "val", "--no-progress").exit_code == 0
    for source in (d, f"{d}/**/*.parquet"):
        out = tmp_path / f"e{len(str(source))}"
        res = cli("validate", source, "--out", out, "--no-progress")
        assert res.exit_code == 0, res.output
        assert json.loads((out / "summary.json").read_text())["rows_in"] == 40
    res = cli("validate", d, "--out", d / "val", "--no-progress")  # and D/val itself is an output inside D
    one_line_error(res, "is inside the input")


# -- item 3: one run at a time per --out --------------------------------------------------------------

def _hold_lock(out: Path, pid: int = 4242) -> int:
    (out / RECORD_DIR).mkdir(parents=True, exist_ok=True)
    fd = os.open(out / RECORD_DIR / "lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.ftruncate(fd, 0)
    os.write(fd, f"{pid}\n".encode())
    return fd


def test_a_second_run_is_refused_with_the_holders_pid_or_waits(data: Path, tmp_path: Path, caplog) -> None:
    out = tmp_path / "v"
    assert cli("validate", data, "--out", out, "--no-progress").exit_code == 0
    fd = _hold_lock(out)
    try:
        one_line_error(cli("validate", data, "--out", out, "--no-progress"), "pid 4242", "--wait")
    finally:
        os.close(fd)
    fd = _hold_lock(out)
    threading.Timer(1.0, os.close, args=(fd,)).start()
    t0 = time.monotonic()
    res = cli("validate", data, "--out", out, "--no-progress", "--wait")
    assert res.exit_code == 0 and time.monotonic() - t0 >= 0.9, res.output
    # said on stderr (a logging warning: pytest captures it here)
    assert "waiting for the posttrain run (pid 4242)" in res.output + caplog.text


def test_two_prepare_runs_at_once_one_refused_the_other_complete(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "p"
    first = subprocess.Popen(posttrain_cmd("prepare", "--source", data, "--out", out, "--no-progress"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=subprocess_env(POSTTRAIN_FAULT_UNIT_DELAY_S="4"))
    try:
        deadline = time.monotonic() + 60
        while read_record(out) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        res = cli("prepare", "--source", data, "--out", out, "--no-progress")
        one_line_error(res, f"pid {first.pid}")
        _, err = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == 0, err
    m = manifest(out)
    assert m["rows"]["in"] == 40 == m["rows"]["out"] + m["rows"]["rejected"]
    assert len(list((out / "shards").glob("*.parquet"))) == len(m["shards"]) >= 1


# -- item 6: a write that fails part-way ------------------------------------------------------------

def _file_limit(kib: int):
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (kib * 1024, kib * 1024))
    return limit


@pytest.mark.parametrize(("command", "kib"), [("prepare", 8), ("validate", 8), ("dedup", 8)])
def test_a_failed_write_leaves_a_folder_that_a_rerun_completes(command: str, kib: int, data: Path,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "o"
    args = [command, "--source", data] if command == "prepare" else [command, data]
    broken = run_posttrain(*args, "--out", out, "--no-progress", preexec_fn=_file_limit(kib))
    assert broken.returncode != 0
    errors = [ln for ln in broken.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in broken.stderr and "internal error" not in broken.stderr, \
        broken.stderr
    assert "limit" in errors[0] or "space" in errors[0], errors[0]
    res = cli(*args, "--out", out, "--no-progress")
    assert res.exit_code == 0, res.output
    if command == "prepare":
        m = manifest(out)
        assert m["rows"]["in"] == 40 == m["rows"]["out"] + m["rows"]["rejected"]
    assert read_record(out)["state"] == "complete"


def test_out_that_is_a_file_or_read_only_is_one_line(data: Path, tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    one_line_error(cli("validate", data, "--out", f, "--no-progress"), str(f), "not a folder")
    assert f.read_text() == "x"
    if Path("/sys/kernel").is_dir():  # a read-only file system (sysfs), whoever runs the tests
        one_line_error(cli("validate", data, "--out", "/sys/posttrain-out", "--no-progress"), "/sys/posttrain-out",
                       "cannot write")
