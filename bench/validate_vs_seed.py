"""Benchmark: the seed's quality loop vs `posttrain validate` with every check on, as whole processes.

    .venv/bin/python bench/validate_vs_seed.py [--corpus sample,code] [--rows 6000] [--repeat 1]
        [--before SRC] [--rss 10000,100000] [--work /tmp/ptbench]

Two corpora, each 6,000 rows by default:
- `sample`: the bundled sample's rows (all five splits, planted defects included) with their
  reasoning traces (or, without a trace, their prompts) stretched to realistic lengths: about 20 KB
  of text per row on average (510 GB over 25.66M rows), spread by a hash of the uuid so the mix is
  stable. Stretching repeats the row's own sentences, so the text is highly repetitive.
- `code`: text like the real data's, from `bench/_corpus.py`: real English (stdlib docstrings) and
  real Python (stdlib functions), about 16 KB a row, math rows with `metadata.expected_answer`
  that their `\\boxed{}` answer matches in 98% of rows.

(a) seed: `datasets` loads the parquet and a Python loop computes, per row, input length, output
    length, empty and malformed counts, assuming two messages per row (what the seed does);
(b) posttrain: `posttrain validate DIR --out OUT` with every check family on (length included,
    on characters) and the default worker count.
Both run as subprocesses under /usr/bin/time, back to back per repeat; rows/s, the ratio and peak
RSS are printed, and the run stops unless both sides read every row (the seed's `total` equals
posttrain's `rows_in`, and `accepted + rejected == rows_in`). `--before SRC` also times another
posttrain source tree (e.g. `git archive HEAD | tar -x -C /tmp/before`, SRC=/tmp/before/src) on the
same data and checks that its summary counts and output files are the same bytes.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
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

sys.path.insert(0, str(Path(__file__).parent))
import _corpus  # noqa: E402

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


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """(seconds, peak RSS in MiB of the largest process, stdout) of a whole-process run."""
    t = time.perf_counter()
    res = subprocess.run(
        ["/usr/bin/time", "-f", "MAXRSS_KB=%M", *cmd], capture_output=True, text=True, env=env or ENV
    )
    secs = time.perf_counter() - t
    if res.returncode not in (0, 1):
        raise SystemExit(f"{cmd[0]} failed:\n{res.stderr[-3000:]}")
    rss = int(re.findall(r"MAXRSS_KB=(\d+)", res.stderr)[-1]) // 1024
    return secs, rss, res.stdout


def posttrain_cmd(data: Path, out: Path) -> list[str]:
    # `python -c` rather than the console script, so that `--before`'s PYTHONPATH picks the package
    return [sys.executable, "-c", "import sys; from posttrain.cli import main; sys.exit(main())",
            "validate", str(data), "--out", str(out), "--no-progress",
            "--checks", "all", "--max-chars", "400000"]  # fmt: skip


def outputs(out: Path) -> dict[str, str]:
    """sha256 of every parquet output and of summary.json's decisions (counts of the codes seen, their
    examples, per-split rows), to compare two runs' work. Codes never seen are left out: a newer
    version may declare more codes than an older one without deciding anything differently."""
    digests = {}
    for path in sorted(p for p in out.rglob("*.parquet") if ".posttrain" not in p.parts):
        digests[path.relative_to(out).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    summary = json.loads((out / "summary.json").read_text())
    decided = {k: summary[k] for k in ("rows_in", "accepted", "rejected", "splits", "examples", "rows_with_warnings")}
    decided["counts"] = {code: by for code, by in summary["counts"].items() if by}
    digests["summary.json"] = hashlib.sha256(json.dumps(decided, sort_keys=True).encode()).hexdigest()
    return digests


def run_posttrain(data: Path, out: Path, n_rows: int, label: str, src: Path | None = None) -> tuple[float, dict]:
    env = {**ENV, "PYTHONPATH": str(src)} if src else ENV
    shutil.rmtree(out, ignore_errors=True)
    secs, rss, _ = timed(posttrain_cmd(data, out), env)
    summary = json.loads((out / "summary.json").read_text())
    if summary["rows_in"] != n_rows or summary["accepted"] + summary["rejected"] != n_rows:
        raise SystemExit(f"{label} did not judge every row: {summary['rows_in']} in of {n_rows}")
    print(
        f"{label:<10}: {secs:6.1f} s  {n_rows / secs:8.0f} rows/s  peak RSS {rss} MiB  "
        f"(accepted {summary['accepted']}, rejected {summary['rejected']}, "
        f"warned {summary['rows_with_warnings']}, checks {len(summary['checks'])})"
    )
    return secs, summary


def make_corpus(name: str, data: Path, n_rows: int) -> float:
    """Write corpus `name` under `data`; returns the mean bytes of text per row."""
    from posttrain.sample import sample_root

    if name == "sample":
        return generate(Path(sample_root()), data, n_rows)
    shutil.rmtree(data, ignore_errors=True)
    return _corpus.write_dataset(data, n_rows, mean_bytes=15_000, expected_answers=True) / n_rows


def bench_corpus(name: str, args: argparse.Namespace) -> None:
    data = args.work / f"{name}{args.rows}"
    mean = make_corpus(name, data, args.rows)
    print(f"== corpus {name}: {args.rows} rows, {mean / 1000:.1f} KB of text per row, cores={os.cpu_count()}")
    seed_script = args.work / "seed_loop.py"
    seed_script.write_text(SEED_LOOP)
    ratios, before_ratios = [], []
    for rep in range(args.repeat):
        print(f"-- repeat {rep + 1}/{args.repeat}, {os.getloadavg()[0]:.2f} load")
        shutil.rmtree(args.work / "hf_cache", ignore_errors=True)
        s_secs, s_rss, s_out = timed([sys.executable, str(seed_script), str(data), str(args.work / "hf_cache")])
        seen = ast.literal_eval(s_out.strip().splitlines()[-1])
        if seen["total"] != args.rows:
            raise SystemExit(f"the seed loop read {seen['total']} rows of {args.rows}")
        print(f"{'seed loop':<10}: {s_secs:6.1f} s  {args.rows / s_secs:8.0f} rows/s  peak RSS {s_rss} MiB  {seen}")
        p_secs, _ = run_posttrain(data, args.work / "out", args.rows, "posttrain")
        ratios.append(s_secs / p_secs)
        line = f"ratio posttrain/seed rows/s: {ratios[-1]:.2f}x"
        if args.before:
            b_secs, _ = run_posttrain(data, args.work / "out_before", args.rows, "before", args.before)
            before_ratios.append(s_secs / b_secs)
            same = outputs(args.work / "out") == outputs(args.work / "out_before")
            if not same:
                raise SystemExit("before and now wrote different outputs")
            line += f"  (before: {before_ratios[-1]:.2f}x; same output bytes: {same})"
        print(line)
    print(f"{name}: posttrain/seed {min(ratios):.2f}-{max(ratios):.2f}x over {args.repeat} repeat(s)"
          + (f"; before {min(before_ratios):.2f}-{max(before_ratios):.2f}x" if before_ratios else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default="sample,code", help="sample, code or both (comma-separated)")
    ap.add_argument("--rows", type=int, default=6000)
    ap.add_argument("--repeat", type=int, default=1, help="seed/posttrain pairs per corpus, back to back")
    ap.add_argument("--before", type=Path, default=None, help="another posttrain `src` folder to time beside")
    ap.add_argument("--rss", default="", help="also measure posttrain's peak RSS at these row counts, e.g. 10000,100000")
    ap.add_argument("--work", type=Path, default=Path("/tmp/ptbench"))
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    for name in [c.strip() for c in args.corpus.split(",") if c.strip()]:
        if name not in ("sample", "code"):
            raise SystemExit(f"unknown corpus {name!r}: use sample or code")
        bench_corpus(name, args)
    for n in [int(x) for x in args.rss.split(",") if x.strip()]:
        d = args.work / f"rss{n}"
        make_corpus("sample", d, n)
        shutil.rmtree(args.work / f"out{n}", ignore_errors=True)
        secs, rss, _ = timed(posttrain_cmd(d, args.work / f"out{n}"))
        print(f"posttrain at {n} rows: {secs:6.1f} s  {n / secs:8.0f} rows/s  peak RSS {rss} MiB")
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
