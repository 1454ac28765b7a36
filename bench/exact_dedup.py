"""Exact dedup benchmark: rows/s of `posttrain dedup --no-near` and memory per key.

Synthesizes `--rows` Nemotron rows (prompt ~`--chars` characters, ~`--dup-share` of them exact
copies of another row under a new uuid, plus several answers per prompt) and runs, each as its own
process, `posttrain dedup --no-near` with and without `--max-responses-per-prompt 2`; prints wall /
CPU time, rows/s, peak RSS, and the key-record memory: the records are 33 bytes per row and per
policy (16 key + 8 rank + 8 row + 1 error flag), held in numpy arrays until `--memory-budget-mb`
and spilled to 64 disk partitions beyond it, so resident key memory is min(33 B x rows, budget).
The figure printed as "bytes per distinct key" is peak key-buffer bytes / distinct keys.

    .venv/bin/python bench/exact_dedup.py --rows 200000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from posttrain.schema import NEMOTRON_SCHEMA


def synthesize(path: Path, rows: int, chars: int, dup_share: float, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    alphabet = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz     ", dtype=np.uint8)
    writer = pq.ParquetWriter(path, NEMOTRON_SCHEMA, compression="zstd")
    n_prompts = max(1, rows // 3)
    prompt_seed = rng.integers(0, 2**32, n_prompts)
    origin = np.zeros(rows, np.int64)  # the original row each row is a copy of (itself if none)
    done = 0
    while done < rows:
        chunk = []
        for i in range(done, min(rows, done + 5000)):
            copy = i > 0 and rng.random() < dup_share
            o = origin[i] = origin[int(rng.integers(0, i))] if copy else i
            p = int(np.random.default_rng(o).integers(0, n_prompts))  # several answers per prompt
            text = _text(int(prompt_seed[p]), chars, alphabet)
            chunk.append(
                {
                    "uuid": f"row-{i:09d}", "license": "CC BY 4.0", "generator": "bench", "version": "v1",
                    "category": "math", "reasoning": "on", "metadata": "{}",
                    "messages": [
                        {"role": "user", "content": text, "tool_calls": []},
                        {"role": "assistant", "content": f"answer {o}", "tool_calls": []},
                    ],
                }
            )
        writer.write_table(pa.Table.from_pylist(chunk, schema=NEMOTRON_SCHEMA), row_group_size=5000)
        done += len(chunk)
    writer.close()


def _text(seed: int, chars: int, alphabet: np.ndarray) -> str:
    return np.random.default_rng(seed).choice(alphabet, chars).tobytes().decode()


def run(cmd: list[str]) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MiB) of CMD, measured by near_dedup.py's small launcher process
    (a child forked from this process would inherit its peak RSS)."""
    launcher = [sys.executable, str(Path(__file__).with_name("near_dedup.py")), "--measure", *cmd]
    m = json.loads(subprocess.run(launcher, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
    assert m["rc"] == 0, cmd
    return m["wall"], m["cpu"], m["rss_mib"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100000)
    ap.add_argument("--chars", type=int, default=1500)
    ap.add_argument("--dup-share", type=float, default=0.1)
    ap.add_argument("--keep", type=Path)
    ap.add_argument("--data", type=Path, help="an existing Nemotron parquet file instead of synthesized rows")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-exact-"))
    work.mkdir(parents=True, exist_ok=True)
    data = args.data or work / f"rows-{args.rows}.parquet"
    if args.data:
        args.rows = pq.ParquetFile(data).metadata.num_rows
    elif not data.exists():
        synthesize(data, args.rows, args.chars, args.dup_share)
    print(f"data: {args.rows} rows, {data.stat().st_size / 2**20:.1f} MiB parquet")
    for extra in ([], ["--max-responses-per-prompt", "2"]):
        out = work / "out"
        cmd = [sys.executable, "-m", "posttrain", "dedup", str(data), "--out", str(out), "--no-near", *extra]
        wall, cpu, rss = run(cmd)
        s = json.loads((out / "summary.json").read_text())
        policies = 1 + bool(extra)
        distinct = s["rows_in"] - s["removed_by_reason"].get("dedup.exact", 0)
        key_bytes = s["exact"]["peak_buffer_bytes"]
        print(
            f"posttrain dedup --no-near {' '.join(extra)}: {wall:.2f} s wall ({cpu:.2f} s CPU), "
            f"{args.rows / wall:,.0f} rows/s, peak RSS {rss:,.0f} MiB; removed {s['removed_by_reason']}; "
            f"key records {key_bytes / 2**20:.1f} MiB = {key_bytes / s['rows_in']:.0f} B/row "
            f"({policies} polic{'ies' if policies > 1 else 'y'}), {key_bytes / max(1, distinct):.0f} B per distinct "
            f"conversation"
        )


if __name__ == "__main__":
    main()
