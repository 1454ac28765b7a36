"""What `posttrain validate` does before its first batch: it reads ahead while it imports the checks,
and imports only its own command's module."""

from __future__ import annotations

import ast
import subprocess
import sys
import threading
import time

import pytest

from posttrain.io.sources.reader import ReadAhead


def test_read_ahead_reads_before_the_first_next_and_stops_when_closed() -> None:
    pulled: list[int] = []

    def source():
        for i in range(100):
            pulled.append(i)
            yield i

    ahead = ReadAhead(source(), depth=2)
    deadline = time.monotonic() + 5
    while len(pulled) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    assert len(pulled) == 3  # two queued and one waiting for room: bounded, and started without a next()
    ahead.close()
    ahead._thread.join(2)
    assert not ahead._thread.is_alive()
    assert len(pulled) <= 4


def test_read_ahead_gives_every_batch_in_order_and_raises_the_readers_error() -> None:
    assert list(ReadAhead(iter(range(50)), depth=2)) == list(range(50))

    def broken():
        yield 1
        raise ValueError("corrupt page")

    ahead = ReadAhead(broken())
    it = iter(ahead)
    assert next(it) == 1
    with pytest.raises(ValueError, match="corrupt page"):
        next(it)
    ahead._thread.join(2)
    assert not ahead._thread.is_alive()


def test_an_abandoned_iteration_stops_the_thread() -> None:
    before = threading.active_count()
    ahead = ReadAhead(iter(range(1000)), depth=2)
    for i in ahead:
        if i == 3:
            break
    ahead._thread.join(2)
    assert not ahead._thread.is_alive() and threading.active_count() <= before


def test_a_command_imports_only_its_own_module() -> None:
    code = (
        "import sys; sys.argv = ['posttrain', 'validate', '--help']\n"
        "from posttrain.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('posttrain.cli.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = ast.literal_eval(out.strip().splitlines()[-1])
    assert "posttrain.cli.validate" in loaded
    assert not {"posttrain.cli.decontaminate", "posttrain.cli.inspect", "posttrain.cli.eval"} & set(loaded)
    assert "Usage: posttrain validate" in out
