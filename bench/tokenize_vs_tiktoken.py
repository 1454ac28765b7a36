"""posttrain render + tokenize (+ verified masks) vs tiktoken `encode_batch` alone, same rows, one run.

Rows: 1,500 conversations of ~17 KB (the real data's average), built from the bundled sample's
English and code answers (the answer of row i is the answers of rows i, i+1, ... joined until it is
17 KB long, with a `<think>` trace), so every row differs. The limit is tiktoken `encode_batch`
on the very texts posttrain renders (template specials allowed), which is tokenization only: no
rendering, no mask, no verification. Also printed: `tokenizers.encode_batch` on the same texts.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/tokenize_vs_tiktoken.py [--rows 1500] [--kb 17]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pyarrow as pa  # noqa: E402
import pyarrow.dataset as ds  # noqa: E402

from posttrain.sample import sample_root  # noqa: E402
from posttrain.schema import NEMOTRON_SCHEMA  # noqa: E402
from posttrain.stages.render import get_renderer, render_batch  # noqa: E402
from posttrain.stages.tokenize import Tokenizer, tokenize_batch  # noqa: E402


def build_rows(n: int, kb: int) -> pa.Table:
    """`n` two-turn rows whose answer is ~`kb` KB of real sample English and code."""
    table = ds.dataset(str(sample_root() / "data"), format="parquet").to_table(columns=["messages", "category"])
    pool = [
        (m[0]["content"] or "", m[-1]["content"] or "")
        for m, c in zip(table.column("messages").to_pylist(), table.column("category").to_pylist(), strict=True)
        if c in ("math", "code", "stem", "chat") and len(m) >= 2 and m[-1]["role"] == "assistant"
    ]
    rows = []
    for i in range(n):
        parts, size, k = [], 0, i
        while size < kb * 1000:
            answer = pool[k % len(pool)][1].replace("<think>", "").replace("</think>", "")
            parts.append(answer)
            size += len(answer)
            k += 1
        body = "\n\n".join(parts)
        cut = len(body) * 2 // 3
        content = "<think>\n" + body[:cut] + "\n</think>\n\n" + body[cut:]
        rows.append(
            {
                "uuid": f"bench-{i}",
                "license": "CC BY 4.0",
                "generator": "bench",
                "version": "v1",
                "category": "math",
                "reasoning": "on",
                "messages": [
                    {"role": "user", "content": pool[i % len(pool)][0], "tool_calls": None},
                    {"role": "assistant", "content": content, "tool_calls": None},
                ],
                "metadata": "{}",
            }
        )
    return pa.Table.from_pylist(rows, schema=NEMOTRON_SCHEMA)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1500)
    ap.add_argument("--kb", type=int, default=17)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    table = build_rows(args.rows, args.kb)
    tok = Tokenizer()
    renderer = get_renderer()
    batches = table.to_batches(max_chunksize=args.batch)
    tokenize_batch(render_batch(batches[0].slice(0, 4), renderer), tok)  # warm-up + fast-path verification

    def run_posttrain():
        outs, texts = [], []
        for b in batches:
            rendered = render_batch(b, renderer)
            texts.extend(rendered.column("text").to_pylist())
            outs.append(tokenize_batch(rendered, tok, max_length=1 << 30))
        return outs, texts

    # Best of --repeat, interleaved, so load from other processes hits both sides alike.
    ours, limit = float("inf"), float("inf")
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        outs, texts = run_posttrain()
        ours = min(ours, time.perf_counter() - t0)
        t0 = time.perf_counter()
        tt = tok.tiktoken.encode_batch(texts, allowed_special="all")
        limit = min(limit, time.perf_counter() - t0)
    tokens = sum(int(o.column("num_tokens").to_numpy().sum()) for o in outs)
    rejected = sum(sum(1 for r in o.column("reasons").to_pylist() if r) for o in outs)
    tt_tokens = sum(len(x) for x in tt)

    hf = tok.hf
    hf.encode_special_tokens = False
    t0 = time.perf_counter()
    hf_ids = [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]
    hf_time = time.perf_counter() - t0
    same = sum(a == b for a, b in zip(hf_ids, tt, strict=True))

    mb = sum(len(t.encode()) for t in texts) / 1e6
    print(f"rows {args.rows}, {mb:.1f} MB rendered text, {tokens:,} tokens (tiktoken on whole text: {tt_tokens:,})")
    print(f"posttrain render+tokenize+mask+verify: {ours:.2f} s  {tokens / ours / 1e6:.2f}M tokens/s "
          f"(rows with reasons: {rejected})")
    print(f"tiktoken encode_batch alone:           {limit:.2f} s  {tt_tokens / limit / 1e6:.2f}M tokens/s")
    print(f"tokenizers encode_batch alone:         {hf_time:.2f} s  {tt_tokens / hf_time / 1e6:.2f}M tokens/s "
          f"(ids identical to tiktoken on {same}/{len(texts)} rows)")
    print(f"ratio posttrain / tiktoken-only: {(tokens / ours) / (tt_tokens / limit):.0%} (goal >= 50%)")


if __name__ == "__main__":
    main()
