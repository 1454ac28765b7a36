"""Benchmark: peak RSS of each streaming stage at two input sizes (goal: flat within 20%).

    .venv/bin/python bench/stage_memory.py [--sizes 200000,2000000] [--work /tmp/pt-stage-memory]

Rows are the bundled sample's, repeated with fresh uuids, in the hub layout: the content repeats,
so dedup removes nearly every copy (its records are per row all the same, which is what this
measures). Each stage runs as a whole process under /usr/bin/time:
`posttrain validate`, `dedup`, `decontaminate`, `select` (a weighted mix with a shuffle),
`export --format openai`. Prints seconds, rows/s and peak RSS per stage and size, and the ratio of
the peaks.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from posttrain.sample import sample_root
from posttrain.schema import V1_SPLIT_FILE_PREFIX

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
# upsampling factors scale with the input (weights would need a fixed row budget)
MIX = {"select": {"seed": 1, "mix": {"by": "category", "epochs": {"math": 1.5, "code": 1.0, "stem": 0.5, "chat": 0.25},
                                     "rest": 0.0}, "shuffle": True}}


def make(root: Path, n_rows: int) -> None:
    """n_rows rows in the hub layout: the sample's rows of each split, repeated with new uuids."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    per_split = n_rows // len(V1_SPLIT_FILE_PREFIX)
    for prefix in V1_SPLIT_FILE_PREFIX.values():
        base = pq.read_table(next((sample_root() / "data").glob(f"{prefix}-*.parquet")))
        path = root / "data" / f"{prefix}-00000-of-00001.parquet"
        with pq.ParquetWriter(path, base.schema, compression="zstd") as w:
            done, k = 0, 0
            while done < per_split:
                t = base.slice(0, min(base.num_rows, per_split - done))
                uuids = pc.binary_join_element_wise(t.column("uuid"), pa.scalar(f"-{k}"), "")
                w.write_table(t.set_column(0, "uuid", uuids), row_group_size=10_000)
                done += t.num_rows
                k += 1


def run(cmd: list[str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    res = subprocess.run(["/usr/bin/time", "-f", "MAXRSS_KB=%M", *cmd], capture_output=True, text=True, env=ENV)
    if res.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{res.stderr[-2000:]}")
    rss = [int(x.split("=")[1]) for x in res.stderr.splitlines() if x.startswith("MAXRSS_KB=")]
    return time.perf_counter() - t0, rss[-1] // 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="200000,2000000")
    ap.add_argument("--work", default="/tmp/pt-stage-memory")
    args = ap.parse_args()
    work = Path(args.work)
    sizes = [int(s) for s in args.sizes.split(",")]
    mix = work / "mix.yaml"
    work.mkdir(parents=True, exist_ok=True)
    mix.write_text(yaml.safe_dump(MIX))
    pt = [sys.executable, "-m", "posttrain"]
    stages = {
        "validate": lambda d, o: [*pt, "validate", str(d), "--out", str(o), "--no-progress"],
        "dedup": lambda d, o: [*pt, "dedup", str(d), "--out", str(o)],
        "decontaminate": lambda d, o: [*pt, "decontaminate", str(d), "--out", str(o)],
        "select": lambda d, o: [*pt, "select", str(d), "--recipe", str(mix), "--out", str(o)],
        "export": lambda d, o: [*pt, "export", str(d), "--format", "openai", "--out", str(o), "--gzip"],
    }
    peaks: dict[str, list[int]] = {s: [] for s in stages}
    for n in sizes:
        data = work / f"data-{n}"
        if not (data / "data").exists():
            make(data, n)
        for name, cmd in stages.items():
            out = work / f"out-{name}-{n}"
            shutil.rmtree(out, ignore_errors=True)
            secs, rss = run(cmd(data, out))
            peaks[name].append(rss)
            print(f"{name:<14}{n:>10,} rows {secs:8.1f} s {n / secs:10,.0f} rows/s  peak RSS {rss:6} MB", flush=True)
            shutil.rmtree(out, ignore_errors=True)
    for name, p in peaks.items():
        print(f"{name:<14} peak RSS {' -> '.join(f'{x} MB' for x in p)}  ({(p[-1] / p[0] - 1) * 100:+.0f}%)")


if __name__ == "__main__":
    main()
