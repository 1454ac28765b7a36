"""`posttrain dedup --exact-key prompt` vs what a user writes with datasketch, both writing kept rows.

The job (one whole process each, start-up included): read a hub-layout folder of Nemotron rows,
drop exact duplicate prompts, drop near-duplicate prompts (MinHash, 128 permutations, word
5-gram shingles, LSH threshold 0.8), write the kept rows to parquet.

- posttrain: ``posttrain dedup DIR --exact-key prompt --out OUT`` with its defaults (local engine).
- anchor (datasketch): pyarrow reads the files; the prompt text and its normalisation are
  posttrain's (``turn_text`` / ``normalize_exact`` / ``normalize_for_shingles``, vectorised pyarrow
  compute, so the anchor is not slowed by a naive text loop); exact duplicates dropped by xxh3_128
  of the normalised prompt; the rest visited in posttrain's winner order (smallest
  xxh3_64(uuid, seed 0) first): a row is removed when ``MinHashLSH.query`` returns any kept row,
  else inserted; the kept rows written with ``pq.write_table`` (zstd).

Data: `--rows` rows (default 20,000) from `bench/_corpus.py` (real stdlib prose and code, ~16 KB a
row, prompts of 0.2-1.5 KB); planted among them, each from a distinct base row: 5% exact copies of
another row's prompt (new uuid, own answer), 10% near copies (1-3 words of the prompt replaced;
Jaccard of 5-gram shingles ~0.85-0.99) and 5% half-rewritten prompts (second half of the words
replaced, Jaccard ~0.3: must survive).

Printed: wall / CPU time and peak RSS of each process (wait4 of a small launcher, as
`bench/near_dedup.py`), rows kept by each, the agreement of the kept uuid sets, the planted rows
caught / spared, and the ratio anchor / posttrain.

    .venv/bin/python bench/dedup_vs_datasketch.py --keep /tmp/bench-dvd     # data cached there
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))


def synthesize(root: Path, rows: int, seed: int = 0) -> dict[str, dict[str, str]]:
    """Write `rows` corpus rows under root/data with planted prompts; return {kind: {uuid: origin uuid}}."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from _corpus import PREFIX, SPLITS, make_row

    from posttrain.schema import NEMOTRON_SCHEMA

    rng = random.Random(seed)
    names, weights = list(SPLITS), list(SPLITS.values())
    all_rows = [make_row(i, rng.choices(names, weights)[0], 16_000, seed) for i in range(rows)]
    idx = list(range(rows))
    rng.shuffle(idx)
    n_exact, n_near, n_far = rows // 20, rows // 10, rows // 20
    targets = idx[: n_exact + n_near + n_far]
    bases = idx[n_exact + n_near + n_far :]
    planted: dict[str, dict[str, str]] = {"exact": {}, "near": {}, "far": {}}
    words = [w for r in all_rows[:200] for w in r["messages"][0]["content"].split()]
    for k, t in enumerate(targets):
        src = all_rows[bases[rng.randrange(len(bases))]]
        text = src["messages"][0]["content"]
        if k < n_exact:
            kind = "exact"
        elif k < n_exact + n_near:
            kind = "near"
            w = text.split(" ")
            for p in rng.sample(range(len(w)), min(len(w), rng.randint(1, 3))):
                w[p] = rng.choice(words)
            text = " ".join(w)
        else:
            kind = "far"
            w = text.split(" ")
            half = len(w) // 2
            text = " ".join(w[:half] + [rng.choice(words) for _ in range(len(w) - half)])
        all_rows[t]["messages"][0]["content"] = text
        planted[kind][all_rows[t]["uuid"]] = src["uuid"]
    (root / "data").mkdir(parents=True, exist_ok=True)
    by_split: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for r in all_rows:
        by_split[r["category"]].append(r)
    for split, rs in by_split.items():
        if rs:
            pq.write_table(pa.Table.from_pylist(rs, schema=NEMOTRON_SCHEMA),
                           root / "data" / f"{PREFIX[split]}-00000-of-00001.parquet", row_group_size=500)
    return planted


def anchor(data_dir: str, out_file: str, threshold: float = 0.8, num_perm: int = 128, ngram: int = 5) -> None:
    """The datasketch job, in its own process (`--anchor DIR OUT`)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import xxhash
    from datasketch import MinHash, MinHashLSH

    from posttrain.reduce.dedup.keys import normalize_exact, rank_hash, turn_text
    from posttrain.reduce.dedup.shingles import normalize_for_shingles

    table = pa.concat_tables(pq.read_table(p) for p in sorted(Path(data_dir, "data").glob("*.parquet")))
    batch = table.combine_chunks().to_batches()[0] if table.num_rows else None
    assert batch is not None
    keys = normalize_exact(turn_text(batch, "prompt")).cast(pa.large_binary()).to_pylist()
    texts = normalize_for_shingles(turn_text(batch, "prompt", roles=False)).to_pylist()
    ranks = rank_hash(batch.column("uuid"), 0)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    seen: set[int] = set()
    kept = []
    for i in np.lexsort((np.arange(len(ranks)), ranks)).tolist():
        h = xxhash.xxh3_128_intdigest(keys[i])
        if h in seen:
            continue
        seen.add(h)
        w = texts[i].split()
        grams = {" ".join(w[k : k + ngram]) for k in range(max(1, len(w) - ngram + 1))}
        m = MinHash(num_perm=num_perm)
        m.update_batch([g.encode() for g in grams])
        if lsh.query(m):
            continue
        lsh.insert(str(i), m)
        kept.append(i)
    pq.write_table(table.take(pa.array(sorted(kept))), out_file, compression="zstd")


def timed(cmd: list[str]) -> dict:
    """wall / CPU seconds and peak RSS of CMD, measured by near_dedup.py's small launcher."""
    launcher = [sys.executable, str(HERE.with_name("near_dedup.py")), "--measure", *cmd]
    m = json.loads(subprocess.run(launcher, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
    assert m["rc"] == 0, f"failed: {' '.join(cmd)}"
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--keep", type=Path, help="work directory to keep (the data is reused from it)")
    ap.add_argument("--anchor", nargs=2, metavar=("DIR", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.anchor:
        anchor(*args.anchor)
        return
    import pyarrow.parquet as pq

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-dvd-"))
    data = work / f"rows-{args.rows}"
    planted_path = work / f"planted-{args.rows}.json"
    if not planted_path.exists():
        planted_path.write_text(json.dumps(synthesize(data, args.rows)))
    planted = json.loads(planted_path.read_text())
    mb = sum(f.stat().st_size for f in (data / "data").glob("*.parquet")) / 2**20
    print(f"data: {args.rows} rows, {mb:.0f} MiB parquet; planted {len(planted['exact'])} exact, "
          f"{len(planted['near'])} near, {len(planted['far'])} half-rewritten prompts")

    out = work / "posttrain-out"
    pt = timed([sys.executable, "-m", "posttrain", "dedup", str(data), "--exact-key", "prompt",
                "--out", str(out), "--no-progress"])
    ours = set(pq.read_table(out / "kept", columns=["uuid"])["uuid"].to_pylist())
    ref_file = work / "datasketch-kept.parquet"
    ds = timed([sys.executable, str(HERE), "--anchor", str(data), str(ref_file)])
    ref = set(pq.read_table(ref_file, columns=["uuid"])["uuid"].to_pylist())
    for name, m, kept in (("posttrain dedup --exact-key prompt", pt, ours), ("datasketch MinHashLSH (anchor)", ds, ref)):
        caught = {k: sum(1 for c, o in planted[k].items() if not (c in kept and o in kept)) for k in ("exact", "near")}
        spared = sum(1 for c in planted["far"] if c in kept)
        print(f"{name:36s} {m['wall']:6.2f} s wall ({m['cpu']:6.2f} s CPU), peak RSS {m['rss_mib']:5.0f} MiB, "
              f"kept {len(kept)}; planted pairs resolved: exact {caught['exact']}/{len(planted['exact'])}, "
              f"near {caught['near']}/{len(planted['near'])}; half-rewritten kept {spared}/{len(planted['far'])}")
    agree = 1 - len(ours ^ ref) / args.rows
    print(f"kept sets: {len(ours & ref)} in both, only posttrain {len(ours - ref)}, only datasketch {len(ref - ours)}; "
          f"rows classified alike {agree:.4%}")
    print(f"ratio (datasketch / posttrain): {ds['wall'] / pt['wall']:.2f}x wall, {ds['cpu'] / pt['cpu']:.2f}x CPU "
          f"(goal >= 3x wall)")


if __name__ == "__main__":
    main()
