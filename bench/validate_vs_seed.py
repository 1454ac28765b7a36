"""Benchmark: the seed's quality loop vs `posttrain validate` with every check on, as whole processes.

    .venv/bin/python bench/validate_vs_seed.py [--rows 6000] [--rss 10000,100000] [--work /tmp/ptbench]

Rows are the bundled sample's (all five splits, planted defects included) with their reasoning
traces (or, without a trace, their prompts) stretched to realistic lengths: about 20 KB of text per
row on average (510 GB over 25.66M rows), spread by a hash of the uuid so the mix is stable.

(a) seed: `datasets` loads the parquet and a Python loop computes, per row, input length, output
    length, empty and malformed counts, assuming two messages per row (what the seed does);
(b) posttrain: `posttrain validate DIR --out OUT` with every check family on (length included,
    on characters) and the default worker count.
Both run as subprocesses under /usr/bin/time; rows/s, the ratio and peak RSS are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from posttrain.schema import NEMOTRON_SCHEMA, V1_SPLIT_FILE_PREFIX

TARGET_MEAN_BYTES = 20_000
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

SEED_LOOP = textwrap.dedent(
    """
    import glob, sys
    from datasets import load_dataset
    ds = load_dataset("parquet", data_files=sorted(glob.glob(sys.argv[1] + "/data/*.parquet")),
                      split="train", cache_dir=sys.argv[2])
    total = empty = malformed = 0
    in_len = out_len = 0
    for ex in ds:  # the seed's validate_dataset_quality: two messages, prompt then answer
        total += 1
        msgs = ex["messages"]
        if not msgs or len(msgs) < 2:
            malformed += 1
            continue
        inp, out = msgs[0]["content"] or "", msgs[1]["content"] or ""
        if not inp.strip() or not out.strip():
            empty += 1
        in_len += len(inp)
        out_len += len(out)
    print({"total": total, "avg_in": in_len / max(total, 1), "avg_out": out_len / max(total, 1),
           "empty": empty, "malformed": malformed})
    """
)


def _stretch(text: str, want: int, filler: str) -> str:
    """`text` grown to about `want` characters by repeating `filler` paragraphs."""
    if len(text) >= want or not filler:
        return text
    reps = (want - len(text)) // (len(filler) + 2) + 1
    return text + "\n\n" + "\n\n".join([filler] * reps)


def _target(uuid: str) -> int:
    """A per-row size in 2..60 KB with mean ~20 KB, from the uuid's hash (stable across runs)."""
    u = xxhash.xxh64_intdigest(uuid.encode()) / 2**64
    return int(2_000 + (TARGET_MEAN_BYTES - 2_000) * 2 * u * u * 1.5) if u < 0.8 else int(20_000 + 40_000 * u)


def inflate(row: dict, k: int) -> dict:
    """Row `row` as copy number `k`, with its trace (or prompt) stretched to its target size."""
    row = json.loads(json.dumps(row))
    row["uuid"] = f"{row['uuid']}-{k}"
    want = _target(row["uuid"])
    msgs = row["messages"]
    finals = [m for m in msgs if m["role"] == "assistant"]
    final = finals[-1] if finals else None
    if final and "</think>" in (final["content"] or "") and final["content"].count("</think>") == 1:
        head, tail = final["content"].split("</think>", 1)
        trace = head.split("<think>", 1)[-1].strip()
        if trace:
            sentences = re.split(r"(?<=[.!?])\s+", trace)
            filler = " ".join(sentences[: max(1, len(sentences) // 2)])
            head = _stretch(head.rstrip(), want - len(tail), filler) + "\n"
            final["content"] = head + "</think>" + tail
            return row
    users = [m for m in msgs if m["role"] == "user" and (m["content"] or "").strip() not in ("", "-")]
    if users:
        users[0]["content"] = _stretch(users[0]["content"], want, users[0]["content"])
    return row


def generate(sample_root: Path, out: Path, n_rows: int) -> float:
    """Write `n_rows` stretched rows in hub layout under `out/data`; returns mean bytes per row."""
    if out.exists():
        shutil.rmtree(out)
    (out / "data").mkdir(parents=True)
    base = {}
    for split, prefix in V1_SPLIT_FILE_PREFIX.items():
        files = sorted((sample_root / "data").glob(f"{prefix}-*.parquet"))
        base[split] = pq.read_table(files[0]).to_pylist() if files else []
    total_rows = sum(len(v) for v in base.values())
    total_bytes = 0
    for split, rows in base.items():
        share = round(n_rows * len(rows) / total_rows)
        path = out / "data" / f"{V1_SPLIT_FILE_PREFIX[split]}-00000-of-00001.parquet"
        with pq.ParquetWriter(path, NEMOTRON_SCHEMA, compression="zstd") as writer:
            chunk = []
            for i in range(share):
                r = inflate(rows[i % len(rows)], i // len(rows))
                total_bytes += sum(len((m["content"] or "").encode()) for m in r["messages"])
                chunk.append(r)
                if len(chunk) == 1000:
                    writer.write_table(pa.Table.from_pylist(chunk, schema=NEMOTRON_SCHEMA), row_group_size=1000)
                    chunk = []
            if chunk:
                writer.write_table(pa.Table.from_pylist(chunk, schema=NEMOTRON_SCHEMA), row_group_size=1000)
    return total_bytes / max(n_rows, 1)


def timed(cmd: list[str]) -> tuple[float, int, str]:
    """(seconds, peak RSS in MiB of the largest process, stdout) of a whole-process run."""
    t = time.perf_counter()
    res = subprocess.run(["/usr/bin/time", "-f", "MAXRSS_KB=%M", *cmd], capture_output=True, text=True, env=ENV)
    secs = time.perf_counter() - t
    if res.returncode not in (0, 1):
        raise SystemExit(f"{cmd[0]} failed:\n{res.stderr[-3000:]}")
    rss = int(re.findall(r"MAXRSS_KB=(\d+)", res.stderr)[-1]) // 1024
    return secs, rss, res.stdout


def posttrain_cmd(data: Path, out: Path) -> list[str]:
    bin_dir = Path(sys.executable).parent
    return [str(bin_dir / "posttrain"), "validate", str(data), "--out", str(out), "--no-progress",
            "--checks", "all", "--max-chars", "400000"]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=6000)
    ap.add_argument("--rss", default="", help="also measure posttrain's peak RSS at these row counts, e.g. 10000,100000")
    ap.add_argument("--work", type=Path, default=Path("/tmp/ptbench"))
    args = ap.parse_args()
    from posttrain.sample import sample_root

    data = args.work / f"rows{args.rows}"
    mean = generate(Path(sample_root()), data, args.rows)
    print(f"{args.rows} rows, {mean / 1000:.1f} KB of text per row on average, cores={os.cpu_count()}")
    seed_script = args.work / "seed_loop.py"
    seed_script.write_text(SEED_LOOP)
    shutil.rmtree(args.work / "hf_cache", ignore_errors=True)
    s_secs, s_rss, s_out = timed([sys.executable, str(seed_script), str(data), str(args.work / "hf_cache")])
    print(f"seed loop : {s_secs:6.1f} s  {args.rows / s_secs:8.0f} rows/s  peak RSS {s_rss} MiB  {s_out.strip()}")
    p_secs, p_rss, _ = timed(posttrain_cmd(data, args.work / "out"))
    summary = json.loads((args.work / "out" / "summary.json").read_text())
    print(
        f"posttrain : {p_secs:6.1f} s  {args.rows / p_secs:8.0f} rows/s  peak RSS {p_rss} MiB  "
        f"(accepted {summary['accepted']}, rejected {summary['rejected']}, checks {len(summary['checks'])})"
    )
    print(f"ratio posttrain/seed rows/s: {s_secs / p_secs:.2f}x")
    for n in [int(x) for x in args.rss.split(",") if x.strip()]:
        d = args.work / f"rss{n}"
        generate(Path(sample_root()), d, n)
        secs, rss, _ = timed(posttrain_cmd(d, args.work / f"out{n}"))
        print(f"posttrain at {n} rows: {secs:6.1f} s  {n / secs:8.0f} rows/s  peak RSS {rss} MiB")
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
