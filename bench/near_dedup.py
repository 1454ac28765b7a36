"""Near dedup benchmark: `posttrain dedup --no-exact` vs a datasketch MinHashLSH reference.

Both run as whole processes (start-up, reading parquet, shingling, hashing, LSH, writing the
result) on the same synthetic rows; wall time and peak RSS (wait4's ru_maxrss) are measured per
process. The reference uses the same normalization (posttrain.reduce.dedup.shingles.normalize_for_shingles),
word 5-gram shingles, 128 permutations and threshold 0.8, and visits rows in hash(seed, uuid)
order so it keeps the same representative as posttrain; a row is removed when the LSH returns any
earlier kept row (datasketch does not verify candidates).

Data: `--rows` rows (default 20,000) in the Nemotron schema whose prompts are Zipf-distributed
words (~`--words` words, ~3-4 KB each); `--near-share` of them (default 10%) are near copies of
another row with 1..5 of ~500 words substituted (Jaccard of 5-gram shingles ~0.90-0.98), and 5%
are half-rewritten (Jaccard ~0.3, must not be removed).

    .venv/bin/python bench/near_dedup.py                 # 20k rows, both tools
    .venv/bin/python bench/near_dedup.py --rows 200000 --only-posttrain   # the memory figure
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from posttrain.schema import NEMOTRON_SCHEMA

HERE = Path(__file__).resolve()


def synthesize(path: Path, rows: int, words: int, near_share: float, seed: int = 0) -> dict:
    """Write `rows` rows to `path`; return the planted near copies {copy uuid: original uuid}."""
    rng = np.random.default_rng(seed)
    syll = ["ka", "to", "ri", "mu", "sen", "la", "pro", "ve", "di", "on", "ex", "tra", "bi", "qu", "ne", "st"]
    vocab = np.array(["".join(rng.choice(syll, size=rng.integers(1, 5))) + str(i % 7) for i in range(30000)])
    zipf = 1.0 / np.arange(1, len(vocab) + 1) ** 1.05
    zipf /= zipf.sum()
    n_near = int(rows * near_share)
    n_far = int(rows * 0.05)
    n_base = rows - n_near - n_far
    docs: list[np.ndarray] = [rng.choice(len(vocab), size=int(rng.integers(words * 3 // 4, words * 5 // 4)), p=zipf)
                              for _ in range(n_base)]
    kind = ["base"] * n_base
    origin = list(range(n_base))
    for _ in range(n_near):
        src = int(rng.integers(n_base))
        d = docs[src].copy()
        k = int(rng.integers(1, 6))
        d[rng.choice(len(d), size=k, replace=False)] = rng.choice(len(vocab), size=k, p=zipf)
        docs.append(d)
        kind.append("near")
        origin.append(src)
    for _ in range(n_far):
        src = int(rng.integers(n_base))
        d = docs[src].copy()
        half = len(d) // 2
        d[half:] = rng.choice(len(vocab), size=len(d) - half, p=zipf)
        docs.append(d)
        kind.append("far")
        origin.append(src)
    order = rng.permutation(len(docs))
    uuids = [f"row-{i:08d}" for i in range(len(docs))]
    table_rows = []
    for i in order.tolist():
        text = " ".join(vocab[docs[i]].tolist())
        table_rows.append(
            {
                "uuid": uuids[i], "license": "CC BY 4.0", "generator": "bench", "version": "v1",
                "category": "stem", "reasoning": "off", "metadata": "{}",
                "messages": [
                    {"role": "user", "content": text.capitalize() + "?", "tool_calls": []},
                    {"role": "assistant", "content": f"Answer {i}.", "tool_calls": []},
                ],
            }
        )
        if len(table_rows) >= 5000:
            _append(path, table_rows)
            table_rows = []
    _append(path, table_rows)
    _append(path, None)
    return {uuids[i]: uuids[origin[i]] for i in range(len(docs)) if kind[i] == "near"}


_writers: dict[Path, pq.ParquetWriter] = {}


def _append(path: Path, rows: list[dict] | None) -> None:
    if rows is None:
        _writers.pop(path).close()
        return
    if path not in _writers:
        _writers[path] = pq.ParquetWriter(path, NEMOTRON_SCHEMA, compression="zstd")
    if rows:
        _writers[path].write_table(pa.Table.from_pylist(rows, schema=NEMOTRON_SCHEMA), row_group_size=5000)


def reference(parquet: str, out_json: str, threshold: float = 0.8, num_perm: int = 128, ngram: int = 5) -> None:
    """The datasketch reference, run in its own process (`--reference IN OUT`)."""
    from datasketch import MinHash, MinHashLSH

    from posttrain.reduce.dedup.keys import rank_hash, turn_text
    from posttrain.reduce.dedup.shingles import normalize_for_shingles

    uuids: list[str] = []
    texts: list[str] = []
    for batch in pq.ParquetFile(parquet).iter_batches(batch_size=4096):
        texts += normalize_for_shingles(turn_text(batch, "prompt", roles=False)).to_pylist()
        uuids += batch.column("uuid").to_pylist()
    ranks = rank_hash(pa.array(uuids), 0)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    removed = []
    for i in np.lexsort((np.arange(len(uuids)), ranks)).tolist():
        w = texts[i].split()
        grams = {" ".join(w[k : k + ngram]) for k in range(max(1, len(w) - ngram + 1))}
        m = MinHash(num_perm=num_perm)
        m.update_batch([g.encode() for g in grams])
        if lsh.query(m):
            removed.append(uuids[i])
        else:
            lsh.insert(uuids[i], m)
    Path(out_json).write_text(json.dumps(sorted(removed)))


def timed(cmd: list[str]) -> tuple[float, float, float, int]:
    """(wall seconds, CPU seconds, peak RSS MiB, exit code) of one child process.

    The child is started by a fresh, small launcher process (`--measure`): Linux keeps a process's
    peak RSS across fork + exec, so a child forked straight from this process (which holds the
    synthesized rows) would report this process's size. CPU time (user + system) is printed too
    because wall time on a shared machine is noisy.
    """
    res = subprocess.run([sys.executable, str(HERE), "--measure", *cmd], capture_output=True, text=True, check=True)
    m = json.loads(res.stdout.strip().splitlines()[-1])
    return m["wall"], m["cpu"], m["rss_mib"], m["rc"]


def measure(cmd: list[str]) -> None:
    """`--measure CMD...`: run CMD, print its wall/CPU time and peak RSS as one JSON line."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, env=os.environ | {"HF_HUB_OFFLINE": "1"})
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    print(json.dumps({"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mib": usage.ru_maxrss / 1024,
                      "rc": os.waitstatus_to_exitcode(status)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--words", type=int, default=500)
    ap.add_argument("--near-share", type=float, default=0.10)
    ap.add_argument("--only-posttrain", action="store_true")
    ap.add_argument("--reference", nargs=2, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--measure", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    ap.add_argument("--keep", type=Path, help="work directory to keep (default: a temporary one)")
    args = ap.parse_args()
    if args.measure:
        measure(args.measure)
        return
    if args.reference:
        reference(*args.reference)
        return
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-near-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / f"rows-{args.rows}.parquet"
    planted_path = work / f"planted-{args.rows}.json"
    if not data.exists() or not planted_path.exists():
        planted = synthesize(data, args.rows, args.words, args.near_share)
        planted_path.write_text(json.dumps(planted))
    planted = json.loads(planted_path.read_text())
    mb = data.stat().st_size / 2**20
    print(f"data: {args.rows} rows, {mb:.1f} MiB parquet, {len(planted)} planted near copies")

    out = work / "posttrain-out"
    posttrain = [sys.executable, "-m", "posttrain", "dedup", str(data), "--out", str(out), "--no-exact"]
    pt_s, pt_cpu, pt_rss, rc = timed(posttrain)
    assert rc == 0, "posttrain dedup failed"
    ours = set(pq.read_table(out / "removed", columns=["uuid"])["uuid"].to_pylist())
    print(f"posttrain dedup --no-exact: {pt_s:.2f} s wall ({pt_cpu:.2f} s CPU), {args.rows / pt_s:,.0f} rows/s, "
          f"peak RSS {pt_rss:,.0f} MiB, removed {len(ours)}")
    found = sum(1 for c, o in planted.items() if c in ours or o in ours)
    print(f"  planted near copies caught: {found}/{len(planted)}")
    if args.only_posttrain:
        return
    ref_json = work / "datasketch-removed.json"
    ds_s, ds_cpu, ds_rss, rc = timed([sys.executable, str(HERE), "--reference", str(data), str(ref_json)])
    assert rc == 0, "reference failed"
    ref = set(json.loads(ref_json.read_text()))
    print(f"datasketch MinHashLSH:      {ds_s:.2f} s wall ({ds_cpu:.2f} s CPU), {args.rows / ds_s:,.0f} rows/s, "
          f"peak RSS {ds_rss:,.0f} MiB, removed {len(ref)}")
    agree = 1 - len(ours ^ ref) / args.rows
    overlap = len(ours & ref) / max(1, len(ours | ref))
    print(f"speed ratio {ds_s / pt_s:.2f}x wall, {ds_cpu / pt_cpu:.2f}x CPU (goal >= 3x); rows classified alike {agree:.4%} (goal >= 99%); "
          f"removed-set Jaccard {overlap:.4f}; only posttrain {len(ours - ref)}, only datasketch {len(ref - ours)}")


if __name__ == "__main__":
    main()
