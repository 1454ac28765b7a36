"""Benchmark: `posttrain prepare` scaling across engines and workers, same rows, one run.

    .venv/bin/python bench/scaling.py [--rows 50000] [--mean-bytes 17000] [--work /tmp/pt-scaling]

Runs the default recipe (every stage on) on the same realistic rows (bench/_corpus.py) with
`--engine processes --workers 1`, `--engine processes --workers 2` and `--engine ray --workers 2`,
each a whole process under /usr/bin/time. Prints rows/s and tokens/s of the whole run and of the
map phase, the speed-up over one worker, the peak RSS of the largest process (a worker or the
driver), and checks that all three produced the same shard bytes. The per-core rates feed
docs/scale.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
import _corpus  # noqa: E402

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def run(data: Path, out: Path, engine: str, workers: int, unit_rows: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    recipe = out.parent / f"{out.name}.yaml"
    recipe.write_text(yaml.safe_dump({"source": {"path": str(data), "unit_rows": unit_rows}}))
    cmd = ["/usr/bin/time", "-f", "MAXRSS_KB=%M", sys.executable, "-m", "posttrain.cli.app", "prepare", str(recipe),
           "--out", str(out), "--engine", engine, "--workers", str(workers)]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{res.stderr[-3000:]}")
    rss = [int(x.split("=")[1]) for x in res.stderr.splitlines() if x.startswith("MAXRSS_KB=")]
    m = json.loads((out / "manifest.json").read_text())
    return {
        "engine": f"{engine}×{workers}",
        "wall": wall,
        "map": m["run"]["seconds"]["map"],
        "rows": m["rows"]["in"],
        "tokens": m["tokens"]["tokens"],
        "rss_mb": rss[-1] // 1024 if rss else -1,
        "shas": [s["sha256"] for s in m["shards"]],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--mean-bytes", type=int, default=17_000)
    ap.add_argument("--unit-rows", type=int, default=2_000)
    ap.add_argument("--work", default="/tmp/pt-scaling")
    args = ap.parse_args()
    work = Path(args.work)
    data = work / f"data-{args.rows}"
    if not (data / "data").exists():
        nbytes = _corpus.write_dataset(data, args.rows, args.mean_bytes)
        print(f"wrote {args.rows:,} rows, {nbytes / args.rows / 1000:.1f} KB of text a row")
    results = [run(data, work / f"out-{e}-{w}", e, w, args.unit_rows) for e, w in
               (("processes", 1), ("processes", 2), ("ray", 2))]
    base = results[0]
    print(f"{'engine':<14}{'wall s':>8}{'map s':>8}{'rows/s':>10}{'Mtok/s':>8}{'map Mtok/s':>11}{'speed-up':>10}{'peak RSS':>10}")
    for r in results:
        print(f"{r['engine']:<14}{r['wall']:>8.1f}{r['map']:>8.1f}{r['rows'] / r['wall']:>10,.0f}"
              f"{r['tokens'] / r['wall'] / 1e6:>8.2f}{r['tokens'] / r['map'] / 1e6:>11.2f}"
              f"{base['wall'] / r['wall']:>9.2f}x{r['rss_mb']:>8} MB")
    same = all(r["shas"] == base["shas"] for r in results)
    print(f"identical shards across engines: {same}")
    per_core = base["tokens"] / base["wall"]
    print(f"PER-CORE end-to-end rate (processes×1): {per_core / 1e6:.2f}M tokens/s; "
          f"speed-up at 2 workers: {base['wall'] / results[1]['wall']:.2f}x (map phase {base['map'] / results[1]['map']:.2f}x)")


if __name__ == "__main__":
    main()
