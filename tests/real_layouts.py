"""Small local folders laid out exactly like the hub repos of the same-shape sets (issue 12).

The file names, folders and card configs follow the real repos (from their dataset cards and
file listings, see /work/shared/reference/DATASET.md, copied in spirit into docs/datasets.md):

- `nemotron_v1`: `README.md` (configs: chat, code, math, stem, tool_calling -> data/tool-*) and
  `data/<prefix>-0000k-of-0000n.parquet`.
- `nemotron_v2`: `README.md` (configs: chat, code, math, stem, multilingual_ja, ...), v2 rows (a
  leading empty system message, messages with only role/content, reasoning-off answers that start
  with `<think></think>\\n\\n` (chat) or `<think></think>\\n` (math), stem rows without think tags)
  and the stray `data/multilingual-00000-of-00001.parquet` (100 rows with a `metadata` column,
  repeating multilingual_ja prompts under new uuids) that no config lists.
- `llama_nemotron`: `SFT/{code,math,science,chat,safety}/*.jsonl` (`code_v1.jsonl` in the first,
  Llama-3-text form, `code_v1.1.jsonl` with message lists), `RL/instruction_following/*.jsonl`
  (`input` + `args`, no `output`), `train/when2call_train_sft.jsonl`, and the card's configs
  (SFT, the default, and RL).
- `hash_suffix`: `data/train-00000-of-00002-<16 hex>.parquet`, as older `push_to_hub` wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from posttrain.schema import NEMOTRON_SCHEMA

V1_CARD = """---
license: cc-by-4.0
configs:
- config_name: default
  data_files:
  - split: chat
    path: data/chat-*
  - split: code
    path: data/code-*
  - split: math
    path: data/math-*
  - split: stem
    path: data/stem-*
  - split: tool_calling
    path: data/tool-*
---
# Nemotron-Post-Training-Dataset-v1 (layout fixture)
"""

V2_SPLITS = ("chat", "code", "math", "stem", "multilingual_ja", "multilingual_de")
V2_CARD = (
    "---\nlicense: cc-by-4.0\nconfigs:\n- config_name: default\n  data_files:\n"
    + "".join(f"  - split: {s}\n    path: data/{s}-*\n" for s in V2_SPLITS)
    + "dataset_info:\n  splits:\n"
    + "".join(f"  - name: {s}\n    num_examples: 6\n" for s in V2_SPLITS)
    + "---\n# Nemotron-Post-Training-Dataset-v2 (layout fixture)\n"
)

LLAMA_CARD = """---
license: cc-by-4.0
configs:
- config_name: SFT
  data_files:
  - split: code
    path: SFT/code/*.jsonl
  - split: math
    path: SFT/math/*.jsonl
  - split: science
    path: SFT/science/*.jsonl
  - split: chat
    path: SFT/chat/*.jsonl
  - split: safety
    path: SFT/safety/*.jsonl
  default: true
- config_name: RL
  data_files:
  - split: instruction_following
    path: RL/instruction_following/*.jsonl
---
# Llama-Nemotron-Post-Training-Dataset (layout fixture)
"""

V2_MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
V2_SCHEMA = pa.schema([
    ("uuid", pa.string()), ("license", pa.string()), ("generator", pa.string()), ("version", pa.string()),
    ("category", pa.string()), ("reasoning", pa.string()), ("messages", pa.list_(V2_MESSAGE)),
])  # fmt: skip


def _v1_row(split: str, i: int) -> dict:
    return {
        "uuid": f"v1-{split}-{i}", "license": "CC BY 4.0", "generator": "DeepSeek-R1-0528", "version": "v1",
        "category": split, "reasoning": "on",
        "messages": [{"role": "user", "content": f"{split} question {i}", "tool_calls": None},
                     {"role": "assistant", "content": f"<think>\nwork {i}\n</think>\n\nanswer {i}", "tool_calls": None}],
        "metadata": "{}",
    }  # fmt: skip


def nemotron_v1(root: Path, rows: dict[str, int] | None = None) -> Path:
    """A v1 mirror: README + data/<prefix>-*.parquet (two shards for math)."""
    rows = rows or {"chat": 3, "code": 4, "math": 7, "stem": 5, "tool_calling": 2}
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "README.md").write_text(V1_CARD)
    for split, n in rows.items():
        prefix = "tool" if split == "tool_calling" else split
        table = pa.Table.from_pylist([_v1_row(split, i) for i in range(n)], schema=NEMOTRON_SCHEMA)
        shards = 2 if split == "math" else 1
        cut = (n + 1) // 2 if shards == 2 else n
        for k, (a, b) in enumerate(((0, cut), (cut, n))[:shards]):
            pq.write_table(table.slice(a, b - a), root / "data" / f"{prefix}-{k:05d}-of-{shards:05d}.parquet")
    return root


def v2_answer(split: str, i: int, reasoning: str) -> str:
    """A v2 assistant answer as the real rows write it."""
    if reasoning == "on":
        return f"<think>\nthinking about {split} {i}\n</think>\n\nanswer {i}"
    if split == "stem":
        return f"The answer is ({'ABCD'[i % 4]})."  # some stem rows carry no think tags at all
    if split == "math":
        return f"<think></think>\nThe result is \\boxed{{{i}}}."
    return f"<think></think>\n\nplain answer {i}"


def v2_row(split: str, i: int) -> dict:
    reasoning = "on" if i % 2 == 0 else "off"
    prompt = f"{split} prompt {i}"
    if split == "math":
        prompt = ("Solve the following math problem. Make sure to put the answer (and only answer) inside \\boxed{}.\n\n"
                  f"What is {i} + 0?")  # fmt: skip
    return {
        "uuid": f"v2-{split}-{i}", "license": "CC BY 4.0", "generator": "Qwen3-235B-A22B, Qwen3-30B-A3B",
        "version": "v2", "category": split, "reasoning": reasoning,
        "messages": [{"role": "system", "content": ""}, {"role": "user", "content": prompt},
                     {"role": "assistant", "content": v2_answer(split, i, reasoning)}],
    }  # fmt: skip


def nemotron_v2(root: Path, per_split: int = 6) -> Path:
    """A v2 mirror: README configs + data/<split>-*.parquet + the stray data/multilingual-*.parquet."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "README.md").write_text(V2_CARD.replace("num_examples: 6", f"num_examples: {per_split}"))
    for split in V2_SPLITS:
        table = pa.Table.from_pylist([v2_row(split, i) for i in range(per_split)], schema=V2_SCHEMA)
        pq.write_table(table, root / "data" / f"{split}-00000-of-00001.parquet")
    stray = [{**v2_row("multilingual_ja", i % per_split), "uuid": f"stray-{i}", "metadata": "{}"} for i in range(100)]
    pq.write_table(pa.Table.from_pylist(stray, schema=V2_SCHEMA.append(pa.field("metadata", pa.string()))),
                   root / "data" / "multilingual-00000-of-00001.parquet")  # fmt: skip
    return root


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def llama_v11_row(category: str, i: int, reasoning: str = "on", used: object = "Ultra, Nano") -> dict:
    out = (f"<think>\nthinking {i}\n</think>\n\nanswer {i}" if reasoning == "on" else f"answer {i}")
    return {
        "input": [{"role": "user", "content": f"{category} prompt {i}"}], "output": out, "category": category,
        "license": "cc-by-4.0", "reasoning": reasoning, "generator": "DeepSeek-R1", "used_in_training": used,
        "version": "v1.1", "system_prompt": f"detailed thinking {reasoning}",
    }  # fmt: skip


def llama_v1_text_row(i: int) -> dict:
    prompt = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\ndetailed thinking on<|eot_id|>"
              f"<|start_header_id|>user<|end_header_id|>\n\ncode prompt {i}<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n")  # fmt: skip
    return {"input": prompt, "output": f"<think>\nplan {i}\n</think>\n\n```python\nprint({i})\n```<|eot_id|>",
            "category": "code", "license": "cc-by-4.0", "reasoning": "on", "generator": "DeepSeek-R1",
            "used_in_training": "Ulta, Super", "version": "v1", "system_prompt": "detailed thinking on"}  # fmt: skip


def rl_row(i: int) -> dict:
    return {"input": [{"role": "user", "content": f"Write {i} words. Use no commas."}],
            "args": {"instruction_id_list": ["length_constraints:number_words"], "kwargs": [{"num_words": i}]},
            "category": "instruction following", "license": "cc-by-4.0", "reasoning": "off",
            "used_in_training": ["Ultra"], "version": "v1", "system_prompt": "detailed thinking off"}  # fmt: skip


#: rows per split of the Llama-Nemotron fixture (SFT code is two files: 3 text-form + 4 list-form rows)
LLAMA_ROWS = {"code": 7, "math": 3, "stem": 2, "chat": 4, "safety": 2, "instruction_following": 3}


def llama_nemotron(root: Path, card: bool = True) -> Path:
    """A Llama-Nemotron mirror: SFT/<folder>/*.jsonl, RL/instruction_following/*.jsonl, train/when2call_*."""
    _jsonl(root / "SFT/code/code_v1.jsonl", [llama_v1_text_row(i) for i in range(3)])
    _jsonl(root / "SFT/code/code_v1.1.jsonl", [llama_v11_row("code", i, used=["Ultra", "Nano"]) for i in range(4)])
    _jsonl(root / "SFT/math/math_v1.1.jsonl", [llama_v11_row("math", i) for i in range(3)])
    _jsonl(root / "SFT/science/science.jsonl", [llama_v11_row("science", i) for i in range(2)])
    _jsonl(root / "SFT/chat/chat.jsonl", [llama_v11_row("chat", i, "off" if i % 2 else "on") for i in range(4)])
    _jsonl(root / "SFT/safety/safety.jsonl", [llama_v11_row("safety", i, "off") for i in range(2)])
    _jsonl(root / "RL/instruction_following/if_v1.jsonl", [rl_row(i) for i in range(3)])
    _jsonl(root / "train/when2call_train_sft.jsonl",
           [{"messages": [{"role": "user", "content": "call?"}, {"role": "assistant", "content": "no"}]}])
    if card:
        (root / "README.md").write_text(LLAMA_CARD)
    return root


def hash_suffix(root: Path) -> Path:
    """Shards named `train-00000-of-00002-<hash>.parquet` (older push_to_hub), no card."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    for k, h in enumerate(("5b0f2a8c3e1d4f6b", "a1b2c3d4e5f60718")):
        table = pa.Table.from_pylist([_v1_row("train", 10 * k + i) for i in range(3)], schema=NEMOTRON_SCHEMA)
        pq.write_table(table, root / "data" / f"train-{k:05d}-of-00002-{h}.parquet")
    table = pa.Table.from_pylist([_v1_row("test", i) for i in range(2)], schema=NEMOTRON_SCHEMA)
    pq.write_table(table, root / "data" / "test-00000-of-00001-0f0e0d0c0b0a0908.parquet")
    return root


# -- prompt-restoration sources (issue 12 items 4-6), in their hub layouts --------------------------
TACO_CARD = """---
configs:
- config_name: ALL
  data_files:
  - split: train
    path: ALL/train-*
  - split: test
    path: ALL/test-*
  default: true
- config_name: EASY
  data_files:
  - split: train
    path: EASY/train-*
---
"""
CODEFORCES_CARD = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
  - split: test
    path: data/test-*
- config_name: verifiable
  data_files:
  - split: train
    path: verifiable/train-*
---
"""


def taco(root: Path, train: int = 25_443, test: int = 1_000, card: bool = True) -> Path:
    """BAAI/TACO: `ALL/train-0000k-of-00002.parquet` (no index column) + `ALL/test-*`, and a second config."""
    (root / "ALL").mkdir(parents=True, exist_ok=True)
    half = train // 2
    for k, (a, b) in enumerate(((0, half), (half, train))):
        pq.write_table(pa.table({"question": [f"TACO train problem {i}" for i in range(a, b)],
                                 "source": ["codeforces"] * (b - a)}),
                       root / "ALL" / f"train-{k:05d}-of-00002.parquet", row_group_size=4096)  # fmt: skip
    pq.write_table(pa.table({"question": [f"TACO test problem {i}" for i in range(test)]}),
                   root / "ALL" / "test-00000-of-00001.parquet")  # fmt: skip
    (root / "EASY").mkdir(exist_ok=True)
    pq.write_table(pa.table({"question": [f"EASY problem {i}" for i in range(10)]}),
                   root / "EASY" / "train-00000-of-00001.parquet")  # fmt: skip
    if card:
        (root / "README.md").write_text(TACO_CARD)
    return root


CF_EXAMPLE = [{"input": "3\n1 2 3\n", "output": "6\n"}]


def codeforces(root: Path, train: int = 9_556, test: int = 468) -> Path:
    """open-r1/codeforces: `data/train-*`, `data/test-*` (index = the problem letter) + config `verifiable`."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    ex_type = pa.list_(pa.struct([("input", pa.string()), ("output", pa.string())]))

    def table(split: str, n: int, tag: str = "") -> pa.Table:
        return pa.table({
            "id": [f"{1000 + i}/A" for i in range(n)], "index": ["ABCDEF"[i % 6] for i in range(n)],
            "description": [f"{tag}{split} statement {i}" for i in range(n)],
            "input_format": ["The first line holds n." for _ in range(n)],
            "output_format": ["Print the sum." for _ in range(n)],
            "examples": pa.array([CF_EXAMPLE for _ in range(n)], ex_type),
            "note": [("Sum them." if i % 2 else None) for i in range(n)],
        })  # fmt: skip

    pq.write_table(table("train", train), root / "data" / "train-00000-of-00001.parquet", row_group_size=2048)
    pq.write_table(table("test", test), root / "data" / "test-00000-of-00001.parquet")
    (root / "verifiable").mkdir(exist_ok=True)
    pq.write_table(table("train", 50, "verifiable "), root / "verifiable" / "train-00000-of-00001.parquet")
    (root / "README.md").write_text(CODEFORCES_CARD)
    return root


def apps(root: Path, key: str = "problem_id", rows: int = 5_000) -> Path:
    """codeparrot/apps: `train.jsonl` and `test.jsonl`, `problem_id` 0..4999 in file order (or no key column)."""
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        lines = []
        for i in range(rows):
            rec = {"question": f"APPS {split} problem {i}", "difficulty": "interview"}
            if key == "problem_id":
                rec = {"problem_id": i, **rec}
            lines.append(json.dumps(rec))
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return root


def code_contests(root: Path, counts: dict[str, int] | None = None) -> Path:
    """deepmind/code_contests: `data/{train,valid,test}-*.parquet` with `description` and no index column."""
    counts = counts or {"train": 13_328, "valid": 117, "test": 165}
    (root / "data").mkdir(parents=True, exist_ok=True)
    for split, n in counts.items():
        pq.write_table(pa.table({"name": [f"{split}-{i}" for i in range(n)],
                                 "description": [f"CodeContests {split} {i}" for i in range(n)]}),
                       root / "data" / f"{split}-00000-of-00001.parquet")  # fmt: skip
    return root


def code_row(uuid: str, dataset: str, split: str, index: int) -> dict:
    """A v1 code row whose prompt is withheld (`"-"`), keyed by dataset/split/index as the real rows are."""
    meta = {"source": "codeforces", "dataset": dataset, "index": index, "split": split}
    return {"uuid": uuid, "license": "CC BY 4.0", "generator": "DeepSeek-R1-0528", "version": "v1", "category": "code",
            "reasoning": "on", "metadata": json.dumps(meta),
            "messages": [{"role": "user", "content": "-", "tool_calls": None},
                         {"role": "assistant", "content": "<think>\nok\n</think>\n\n```python\nprint(1)\n```",
                          "tool_calls": None}]}  # fmt: skip
