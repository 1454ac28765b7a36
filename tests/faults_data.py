"""Small generated inputs and CLI runners for the fault suite (tests/test_faults_*.py)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from typer.testing import CliRunner

from posttrain.cli import app
from posttrain.sample import sample_root

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SRC = Path(__file__).resolve().parents[1] / "src"
SAMPLE = Path(sample_root()) / "data"


def sample_rows(split: str = "math", n: int = 20, start: int = 0) -> list[dict[str, Any]]:
    prefix = "tool" if split == "tool_calling" else split
    t = pq.read_table(SAMPLE / f"{prefix}-00000-of-00001.parquet")
    return t.slice(start, n).to_pylist()


def schema() -> pa.Schema:
    return pq.read_schema(SAMPLE / "math-00000-of-00001.parquet")


def write_parquet(path: Path, rows: list[dict[str, Any]], row_group_size: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema()), path, row_group_size=row_group_size)
    return path


def jsonl_line(row: dict[str, Any]) -> bytes:
    return (json.dumps(row, ensure_ascii=False) + "\n").encode()


def write_jsonl(path: Path, lines: list[bytes | dict[str, Any]], gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"".join(x if isinstance(x, bytes) else jsonl_line(x) for x in lines)
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under `root` (to prove nothing was touched)."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def cli(*args: str, env: dict[str, str] | None = None):
    """One real CLI call in this process; never a traceback, whatever happens."""
    res = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "250", **(env or {})})
    assert "Traceback" not in res.output, res.output
    assert "internal error" not in res.output, res.output
    return res


def one_line_error(res, *needles: str, code: int = 2) -> str:
    """The CLI failed with `code` and exactly one `error:` line that names every needle."""
    assert res.exit_code == code, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.output
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def posttrain_cmd(*args: str) -> list[str]:
    return [sys.executable, "-W", "ignore", "-c", "from posttrain.cli.app import main; main()", *map(str, args)]


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(extra)
    return env


def run_posttrain(*args: str, timeout: float = 120, preexec_fn=None, **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run(posttrain_cmd(*args), capture_output=True, text=True, timeout=timeout,
                          env=subprocess_env(**extra_env), preexec_fn=preexec_fn)


def manifest(out: Path) -> dict[str, Any]:
    return json.loads((out / "manifest.json").read_text())


def reject_reasons(out: Path, folder: str = "rejects") -> dict[str, list[str]]:
    """uuid -> reasons over every parquet file of OUT/<folder>."""
    found: dict[str, list[str]] = {}
    for f in sorted((out / folder).glob("*.parquet")):
        t = pq.read_table(f)
        col = "reasons" if "reasons" in t.column_names else "reason"
        for u, rs in zip(t.column("uuid").to_pylist(), t.column(col).to_pylist(), strict=True):
            found.setdefault(str(u), []).extend(rs if isinstance(rs, list) else [rs])
    return found
