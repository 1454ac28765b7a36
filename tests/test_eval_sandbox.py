"""The code sandbox refuses network, big files, endless loops, memory and fork bombs, and writes outside
its folder; HumanEval's canonical solutions pass through it (both as whole functions and as bodies)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from posttrain.eval.graders import Grader
from posttrain.eval.items import humaneval_items
from posttrain.eval.sandbox import SandboxLimits, run_python, sandbox_info

MODES = ["auto", "audit"]  # auto = namespaces where the machine allows them; audit = the fallback, forced


@pytest.fixture
def listener():
    """A TCP server on this machine's loopback: reachable by anything that has network."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    yield srv.getsockname()[1]
    srv.close()


def test_sandbox_says_what_is_in_force():
    info = sandbox_info("auto")
    described = info.describe()
    assert set(described) == {"network", "processes", "files", "limits"}
    assert info.network in ("namespace", "audit")
    assert sandbox_info("audit").network == "audit"
    if info.network == "namespace":
        assert "unshare" in described["network"]


def test_a_passing_and_a_failing_program():
    ok = run_python("import math\nassert math.gcd(4, 6) == 2\nprint('fine')")
    assert (ok.status, ok.returncode, ok.stdout.strip()) == ("passed", 0, "fine")
    bad = run_python("assert 1 == 2, 'nope'")
    assert bad.status == "failed" and "AssertionError: nope" in bad.stderr


@pytest.mark.parametrize("mode", MODES)
def test_no_network(mode, listener):
    prog = f"import socket\ns = socket.create_connection(('127.0.0.1', {listener}), timeout=3)\nprint('connected')"
    assert run_python("print('control')", mode=mode).status == "passed"
    result = run_python(prog, mode=mode)
    assert result.status == "failed"
    assert "connected" not in result.stdout
    expected = "PermissionError: sandbox: socket" if sandbox_info(mode).network == "audit" else "OSError"
    assert expected in result.stderr


@pytest.mark.parametrize("mode", MODES)
def test_infinite_loop_and_sleep_time_out(mode):
    limits = SandboxLimits(timeout_s=1.0)
    for prog in ("while True:\n    pass", "import time\ntime.sleep(60)"):
        start = time.monotonic()
        result = run_python(prog, limits, mode=mode)
        assert result.status == "timeout"
        assert time.monotonic() - start < 5


def test_memory_bomb_is_refused():
    result = run_python("x = bytearray(8 * 1024**3)\nprint(len(x))", SandboxLimits(memory_mb=512))
    assert result.status == "failed" and "MemoryError" in result.stderr


def test_file_size_bomb_is_refused():
    result = run_python("open('big.bin', 'wb').write(b'x' * (64 << 20))", SandboxLimits(file_size_mb=8))
    assert result.status == "failed" and "File too large" in result.stderr


def test_output_bomb_is_cut_by_the_file_size_limit():
    result = run_python("while True:\n    print('x' * 10000)", SandboxLimits(file_size_mb=1, timeout_s=5))
    assert result.status == "failed" and len(result.stdout) <= 4000


@pytest.mark.parametrize("mode", MODES)
def test_process_creation_is_refused(mode):
    for prog in ("import os\nos.fork()", "import subprocess\nsubprocess.run(['true'])", "import os\nos.system('true')",
                 "import ctypes"):  # fmt: skip
        result = run_python(prog, mode=mode)
        assert result.status == "failed" and "PermissionError: sandbox:" in result.stderr, prog


def test_fork_bomb_is_stopped_by_the_kernel_limit_too():
    """With the audit hook's spawn block off, the process-count limit (RLIMIT_NPROC, or a pids cgroup for
    root) still refuses the 16th process; a real bomb ends at the deadline with nothing left behind."""
    info = sandbox_info("auto")
    if info.drop_uid is None and info.cgroup_root is None and os.geteuid() == 0:
        pytest.skip("root without a pids cgroup or a usable unprivileged uid: only the audit hook limits processes")
    prog = (
        "import os, time\nn = 0\ntry:\n    for _ in range(500):\n        if os.fork() == 0:\n"
        "            time.sleep(30)\n            os._exit(0)\n        n += 1\n"
        "except OSError as err:\n    print('refused after', n)\n    raise SystemExit(3)\n"
    )
    result = run_python(prog, SandboxLimits(processes=8, block_spawn=False, timeout_s=10))
    assert result.returncode == 3 and "refused after" in result.stdout
    assert int(result.stdout.split()[-1]) < 8
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    start = time.monotonic()
    assert run_python(bomb, SandboxLimits(processes=8, block_spawn=False, timeout_s=2)).status == "timeout"
    assert time.monotonic() - start < 10


def test_writes_outside_the_work_folder_are_refused(tmp_path):
    target = tmp_path / "victim.txt"
    target.write_text("keep me")
    for prog in (f"open({str(target)!r}, 'w').write('gone')", f"import os\nos.remove({str(target)!r})",
                 f"import shutil\nshutil.rmtree({str(tmp_path)!r})",
                 f"import os\nos.chdir({str(tmp_path)!r})\nopen('victim.txt', 'a').write('x')"):  # fmt: skip
        result = run_python(prog)
        assert result.status == "failed", prog
    assert target.read_text() == "keep me"
    inside = run_python("open('scratch.txt', 'w').write('ok')\nimport tempfile\ntempfile.NamedTemporaryFile().write(b'x')")
    assert inside.status == "passed", inside.stderr


def test_secrets_in_the_environment_do_not_reach_the_program(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    result = run_python("import os\nprint(sorted(os.environ))")
    assert "HF_TOKEN" not in result.stdout


def test_humaneval_canonical_solutions_pass_in_the_sandbox():
    """Every 8th HumanEval task: the canonical solution as a whole function (fenced) and as a bare body."""
    items = humaneval_items()[::8]
    with Grader(workers=2) as grader:
        whole = grader.grade(items, [f"```python\n{it.code_prompt}{it.answer}```" for it in items])
        body = grader.grade(items, [it.answer for it in items])
        broken = grader.grade(items[:3], [f"```python\n{it.code_prompt}    return None\n```" for it in items[:3]])
    assert [g.verdict for g in whole] == ["correct"] * len(items), [g.detail for g in whole if not g.correct]
    assert [g.verdict for g in body] == ["correct"] * len(items)
    assert [g.verdict for g in broken] == ["wrong"] * 3
    assert whole[0].method == "sandbox:block_with_entry_point" and body[0].method == "sandbox:raw"


def test_sandbox_leaves_no_work_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    run_python("open('x', 'w').write('1')")
    assert list(Path(tmp_path).iterdir()) == []
