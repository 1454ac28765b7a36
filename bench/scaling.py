"""Benchmark: `posttrain prepare` scaling across engines and workers, same rows, one run.

    .venv/bin/python bench/scaling.py [--rows 50000] [--mean-bytes 17000] [--work /tmp/pt-scaling]

Runs the default recipe (every stage on) on the same realistic rows (bench/_corpus.py) with
`--engine processes` and `--engine ray`, 1 and 2 workers each (`--engines` picks), each a whole
process under /usr/bin/time. Prints, per run and per phase (map, reduce, pack: the manifest's
`run.seconds`), the wall seconds and the speed-up over the same engine with one worker; the
driver-only seconds (`run.seconds.driver`: the run's time outside work units) and the serial
fraction (driver / total); rows/s and tokens/s; the peak RSS of the largest process; the spool's
bytes per token (the map units' docs.arrow); and checks that every run wrote the same shard bytes.
The per-phase per-core rates feed docs/scale.md.

`--pin` (default `both`): a prepare worker is not one core. The map unit tokenizes on a second
thread beside its row stages, so one unpinned worker already uses ~1.3 of this machine's 2 cores
and "2 workers over 1" cannot exceed ~1.5x here whatever the serial fraction. Pinned runs
(`taskset`: one core per worker, inherited by every child, Ray's raylet and workers included)
measure what the projection needs: the speed-up from 1 core to 2. `both` prints both tables.
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


def run(data: Path, out: Path, engine: str, workers: int, unit_rows: int, pinned: bool) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    recipe = out.parent / f"{out.name}.yaml"
    recipe.write_text(yaml.safe_dump({"source": {"path": str(data), "unit_rows": unit_rows},
                                      "output": {"keep_work": True}}))  # keep the spool to measure it
    pin = ["taskset", "-c", ",".join(str(c) for c in sorted(os.sched_getaffinity(0))[:workers])] if pinned else []
    cmd = [*pin, "/usr/bin/time", "-f", "MAXRSS_KB=%M\nCPU_S=%U %S", sys.executable, "-m", "posttrain", "prepare", str(recipe),
           "--out", str(out), "--engine", engine, "--workers", str(workers)]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{res.stderr[-3000:]}")
    rss = [int(x.split("=")[1]) for x in res.stderr.splitlines() if x.startswith("MAXRSS_KB=")]
    cpu = [sum(map(float, x.split("=")[1].split())) for x in res.stderr.splitlines() if x.startswith("CPU_S=")]
    m = json.loads((out / "manifest.json").read_text())
    sec = m["run"]["seconds"]
    spool = sum(f.stat().st_size for f in (out / ".work").glob("unit-*/docs.arrow"))
    return {
        "engine": f"{engine}×{workers}" + (" pinned" if pinned else ""),
        "kind": engine,
        "workers": workers,
        "wall": wall,
        **{k: sec[k] for k in ("map", "reduce", "pack", "total", "driver")},
        "passes": m["run"].get("phase_seconds", {}),
        "rows": m["rows"]["in"],
        "tokens": m["tokens"]["tokens"],
        "spooled_tokens": sum(r["tokens"] for r in _unit_results(out)),
        "spool_bytes": spool,
        "rss_mb": rss[-1] // 1024 if rss else -1,
        "cpu_s": cpu[-1] if cpu else -1.0,  # of this process tree (Ray's workers are not its children)
        "shas": [s["sha256"] for s in m["shards"]],
    }


def _unit_results(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / ".work").glob("unit-*/result.json"))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--mean-bytes", type=int, default=17_000)
    ap.add_argument("--unit-rows", type=int, default=2_000)
    ap.add_argument("--work", default="/tmp/pt-scaling")
    ap.add_argument("--engines", default="processes,ray", help="engines to run, each with 1 and 2 workers")
    ap.add_argument("--pin", choices=["off", "on", "both"], default="both",
                    help="run each worker count on as many cores (taskset), unpinned, or both")
    args = ap.parse_args()
    if args.pin != "off" and len(os.sched_getaffinity(0)) < 2:
        sys.exit("--pin needs 2 cores")
    for pinned in {"off": [False], "on": [True], "both": [False, True]}[args.pin]:
        print(f"\n== {'pinned: one core per worker' if pinned else 'unpinned: every run may use every core'}")
        report(args, pinned)


def report(args: argparse.Namespace, pinned: bool) -> None:
    work = Path(args.work)
    data = work / f"data-{args.rows}"
    if not (data / "data").exists():
        nbytes = _corpus.write_dataset(data, args.rows, args.mean_bytes)
        print(f"wrote {args.rows:,} rows, {nbytes / args.rows / 1000:.1f} KB of text a row")
    runs = [(e, w) for e in args.engines.split(",") for w in (1, 2)]
    results = [run(data, work / f"out-{e}-{w}", e, w, args.unit_rows, pinned) for e, w in runs]
    one = {r["kind"]: r for r in results if r["workers"] == 1}
    print(f"{'engine':<22}{'wall s':>8}{'map s':>8}{'reduce s':>9}{'pack s':>8}{'driver s':>9}{'serial':>8}"
          f"{'rows/s':>8}{'Mtok/s':>8}{'speed-up (map/reduce/pack)':>30}{'peak RSS':>10}")
    for r in results:
        b = one.get(r["kind"], r)
        ups = "/".join(f"{b[k] / r[k]:.2f}" if r[k] else "-" for k in ("map", "reduce", "pack"))
        print(f"{r['engine']:<22}{r['total']:>8.1f}{r['map']:>8.1f}{r['reduce']:>9.1f}{r['pack']:>8.1f}"
              f"{r['driver']:>9.2f}{r['driver'] / r['total']:>8.1%}{r['rows'] / r['total']:>8,.0f}"
              f"{r['tokens'] / r['total'] / 1e6:>8.2f}{b['total'] / r['total']:>9.2f}x ({ups}){r['rss_mb']:>8} MB")
    for r in results:
        print(f"  {r['engine']} passes (s on the engine): " + ", ".join(f"{k} {v:.1f}" for k, v in r["passes"].items())
              + f"; process wall {r['wall']:.1f} s, CPU {r['cpu_s']:.1f} s")
    print(f"load average after the runs: {os.getloadavg()[0]:.2f} (on {os.cpu_count()} cores; others' work skews walls)")
    base = results[0]
    same = all(r["shas"] == base["shas"] for r in results)
    print(f"identical shards across engines and workers: {same}")
    print(f"spool: {base['spool_bytes'] / max(base['spooled_tokens'], 1):.2f} bytes per token "
          f"({base['spool_bytes'] / 1e6:.0f} MB for {base['spooled_tokens'] / 1e6:.1f}M spooled tokens)")
    for kind, b in one.items():
        per_core = {k: base["tokens"] / b[k] for k in ("map", "reduce", "pack") if b[k]}
        print(f"PER-CORE rates ({kind}×1, tokens/s): " + ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in per_core.items())
              + f"; end to end {b['tokens'] / b['total'] / 1e6:.2f}M")


if __name__ == "__main__":
    main()
