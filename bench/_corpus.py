"""Realistic rows for benchmarks: real English and real code, at the real data's length.

The real v1 data averages ~20 KB of text a row (510 GB over 25.66M rows), mostly reasoning traces
in English plus code. No such text ships offline, so rows are built from the Python standard
library on this machine: docstrings and comments give English prose, function bodies give code.
That keeps the bytes-per-token ratio and the tokenizer's work close to the real data's, which
repeated filler text would not. Deterministic: the same (n, mean_bytes, seed) gives the same rows.
"""

from __future__ import annotations

import ast
import json
import random
import sysconfig
import textwrap
import uuid as uuidlib
from functools import cache
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from posttrain.schema import NEMOTRON_SCHEMA

SPLITS = {"math": 0.3, "code": 0.3, "stem": 0.2, "chat": 0.15, "tool_calling": 0.05}
PREFIX = {"math": "math", "code": "code", "stem": "stem", "chat": "chat", "tool_calling": "tool"}


@cache
def _pieces() -> tuple[list[str], list[str]]:
    """(English paragraphs, code blocks) from the stdlib sources."""
    prose: list[str] = []
    code: list[str] = []
    lib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(lib.glob("*.py")):
        try:
            src = path.read_text(encoding="utf-8")
            tree = ast.parse(src)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        lines = src.splitlines()
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.ClassDef | ast.Module):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 200:
                    prose.append(" ".join(doc.split()))
            if isinstance(node, ast.FunctionDef):
                # slicing lines by lineno: ast.get_source_segment re-splits the file on every call
                seg = textwrap.dedent("\n".join(lines[node.lineno - 1 : node.end_lineno]))
                if 300 < len(seg) < 4000 and _parses(seg):
                    code.append(seg)
    return prose, code


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except SyntaxError:
        return False
    return True


def _take(rng: random.Random, pool: list[str], want: int, sep: str) -> str:
    out, size = [], 0
    while size < want:
        p = pool[rng.randrange(len(pool))]
        out.append(p)
        size += len(p) + len(sep)
    return sep.join(out)


def make_row(i: int, split: str, mean_bytes: int, seed: int) -> dict:
    rng = random.Random(f"{seed}-{i}")
    prose, code = _pieces()
    # lognormal lengths (sigma 0.9, mean = mean_bytes): short chat-like rows and a long reasoning tail
    total = max(400, int(rng.lognormvariate(0, 0.9) * mean_bytes / 1.5))
    prompt = _take(rng, prose, min(1500, total // 10), "\n\n")
    trace = _take(rng, prose, int(total * 0.6), "\n\n")
    if split == "code":
        answer = "Here is the implementation.\n\n```python\n" + _take(rng, code, int(total * 0.3), "\n\n") + "\n```"
    else:
        answer = _take(rng, prose, int(total * 0.3), "\n\n") + f"\n\nThe answer is \\boxed{{{rng.randint(1, 999)}}}."
    uid = str(uuidlib.UUID(int=rng.getrandbits(128)))
    msgs = [
        {"role": "user", "content": prompt, "tool_calls": []},
        {"role": "assistant", "content": f"<think>\n{trace}\n</think>\n\n{answer}", "tool_calls": []},
    ]
    return {
        "uuid": uid, "license": "CC BY 4.0", "generator": "DeepSeek-R1-0528", "version": "v1",
        "category": split, "reasoning": "on", "messages": msgs, "metadata": json.dumps({"bench": True}),
    }


def write_dataset(root: Path, n: int, mean_bytes: int = 17_000, seed: int = 0, row_group: int = 500,
                  expected_answers: bool = False) -> int:
    """Write n rows in the hub layout under root/data; returns the bytes of text written.
    `expected_answers`: math rows carry an answer to check (`with_expected_answer`)."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    text_bytes = 0
    rng = random.Random(seed)
    names, weights = list(SPLITS), list(SPLITS.values())
    by_split: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for i in range(n):
        split = rng.choices(names, weights)[0]
        row = make_row(i, split, mean_bytes, seed)
        by_split[split].append(with_expected_answer(row, i, seed) if expected_answers else row)
    for split, rows in by_split.items():
        text_bytes += sum(len(m["content"].encode()) for r in rows for m in r["messages"])
        if rows:
            table = pa.Table.from_pylist(rows, schema=NEMOTRON_SCHEMA)
            pq.write_table(table, root / "data" / f"{PREFIX[split]}-00000-of-00001.parquet", row_group_size=row_group)
    return text_bytes


def with_expected_answer(row: dict, i: int, seed: int, mismatch: float = 0.02) -> dict:
    """A math `make_row` row given `metadata.expected_answer`: its boxed number, except in a `mismatch`
    share of rows (chosen by a hash of (seed, i)) where the expected answer is off by one, as a
    validation benchmark needs: the real math split mostly agrees with its expected answers."""
    if row["category"] != "math":
        return row
    boxed = row["messages"][-1]["content"].rsplit("\\boxed{", 1)[1].split("}", 1)[0]
    wrong = random.Random(f"expected-{seed}-{i}").random() < mismatch
    expected = str(int(boxed) + 1) if wrong else boxed
    return {**row, "metadata": json.dumps({"bench": True, "expected_answer": expected})}
