"""Regenerate the bundled sample: `python -m posttrain.sample.generate [--out DIR] [--seed N]`.

Deterministic: every random choice comes from `random.Random` streams seeded by (seed, name),
uuids are uuid5 names, nothing reads the clock, so the same seed writes byte-identical files.
Writes `DIR/data/<split>-00000-of-00001.parquet` (hub layout), `DIR/manifest.json` (the planted
defects, the oracle for tests) and the restoration fixtures under `DIR/../fixtures` unless
`--fixtures` says otherwise.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from posttrain.sample import _chat, _code, _math, _stem, _tools
from posttrain.sample._fixtures import write_fixtures
from posttrain.sample._rows import Context, Planted, with_new_uuid
from posttrain.schema import NEMOTRON_SCHEMA, V1_SPLIT_FILE_PREFIX

SEED = 20250731
ROWS_PER_SPLIT = 500
ROW_GROUP_SIZE = 128

#: Planted defects per split: each listed row carries exactly this one defect and nothing else.
DEFECTS: dict[str, dict[str, int]] = {
    "chat": {"think.unclosed": 5, "think.in_off_mode": 5, "structure.role_order": 5, "structure.empty_turn": 5,
             "identity.other_model": 6, "privacy.email": 4, "privacy.phone": 4},
    "code": {"code.syntax_error": 6},
    "math": {"math.no_boxed": 6, "math.mismatch": 6, "dedup.exact": 6},
    "stem": {"stem.mismatch": 6, "dedup.near": 6},
    "tool_calling": {"tools.unknown_tool": 5, "tools.arguments_not_json": 5, "tools.arguments_schema": 5},
}  # fmt: skip
CHAT_WITHHELD, CHAT_UNRESTORABLE, CODE_UNRESTORABLE = 150, 15, 40

NOTES = (
    "Every row listed under 'defects' carries exactly that one defect; every other row is clean. "
    "Withheld-prompt rows (code user content '-', chat user content '') are clean apart from the "
    "prompt.withheld warning. dedup.exact lists the copies (same row, new uuid; 'twins' maps copy -> "
    "original); dedup.near lists the edited copies (one passage word changed, different answer). "
    "A dedup run must remove exactly one row of each copy/twin pair; which one is its own "
    "deterministic choice. "
    "decontam.ngram rows embed a benchmark problem verbatim ('items' maps uuid -> benchmark id); "
    "'decontam_paraphrases' are rewordings that must not be caught. Reasoning-on responses are "
    "'<think>\\n...\\n</think>\\n\\n' + answer with the trace in the final assistant turn only; reasoning-off "
    "responses have no trace or the empty '<think>\\n\\n</think>\\n\\n'. Math answers end with a boxed "
    "answer equal to metadata expected_answer. Stem answers end with the line 'The answer is \\boxed{X}.' "
    "where X is the letter of metadata expected_answer '\\text{X}'. Messages without tool calls carry "
    "tool_calls = []. Clean chat rows with a complete prompt have metadata '{}'."
)


def build_rows(seed: int = SEED) -> dict[str, list[Planted]]:
    """All planted rows per split, in their final (shuffled) order."""
    ctx = Context(seed)
    splits = {
        "chat": _chat.build(ctx, ROWS_PER_SPLIT, DEFECTS["chat"], CHAT_WITHHELD, CHAT_UNRESTORABLE),
        "code": _code.build(ctx, ROWS_PER_SPLIT, DEFECTS["code"], CODE_UNRESTORABLE),
        "math": _math.build(ctx, ROWS_PER_SPLIT, DEFECTS["math"]),
        "stem": _stem.build(ctx, ROWS_PER_SPLIT, DEFECTS["stem"]),
        "tool_calling": _tools.build(ctx, ROWS_PER_SPLIT, DEFECTS["tool_calling"]),
    }
    for split, rows in splits.items():
        rng = ctx.rng(f"order:{split}")
        n_copies = DEFECTS[split].get("dedup.exact", 0)
        eligible = [p for p in rows if p.defect is None and p.withheld is None and p.paraphrase_of is None
                    and "twin" not in p.facts]  # fmt: skip
        for original in rng.sample(eligible, n_copies):
            rows.append(Planted(with_new_uuid(ctx, original.row), "dedup.exact", {"twin": original.row["uuid"]}))
        rng.shuffle(rows)
        assert len(rows) == ROWS_PER_SPLIT, (split, len(rows))
    return splits


def manifest(splits: dict[str, list[Planted]], seed: int) -> dict[str, Any]:
    """The oracle: rows per split, planted defects, withheld rows and which of them are restorable."""
    defects: dict[str, dict[str, Any]] = {}
    withheld: dict[str, dict[str, Any]] = {}
    paraphrases: dict[str, Any] = {"count": 0, "uuids": [], "items": {}}
    for split, rows in splits.items():
        for p in rows:
            uid = p.row["uuid"]
            if p.defect:
                entry = defects.setdefault(p.defect, {"count": 0, "split": split, "uuids": []})
                if entry["split"] != split:
                    entry["split"] = sorted({*([entry["split"]] if isinstance(entry["split"], str) else entry["split"]), split})
                entry["count"] += 1
                entry["uuids"].append(uid)
                for fact in ("twin", "item"):
                    if fact in p.facts:
                        entry.setdefault(f"{fact}s", {})[uid] = p.facts[fact]
            if p.paraphrase_of:
                paraphrases["count"] += 1
                paraphrases["uuids"].append(uid)
                paraphrases["items"][uid] = p.paraphrase_of
            if p.withheld:
                w = withheld.setdefault(p.withheld, {"count": 0, "uuids": [], "restorable": [], "unrestorable": [], "by_source": {}})
                w["count"] += 1
                w["uuids"].append(uid)
                w["restorable" if p.restorable else "unrestorable"].append(uid)
                source = p.facts["key"][0].rsplit("/", 1)[-1] if p.withheld == "code" else "lmsys-chat-1m"
                per = w["by_source"].setdefault(source, {"restorable": 0, "unrestorable": 0})
                per["restorable" if p.restorable else "unrestorable"] += 1
    for w in withheld.values():
        w["by_source"] = dict(sorted(w["by_source"].items()))
    return {
        "dataset": "nvidia/Nemotron-Post-Training-Dataset-v1 (synthetic sample)",
        "seed": seed,
        "rows": {split: len(rows) for split, rows in splits.items()},
        "total_rows": sum(len(rows) for rows in splits.values()),
        "files": {split: f"data/{V1_SPLIT_FILE_PREFIX[split]}-00000-of-00001.parquet" for split in splits},
        "defects": dict(sorted(defects.items())),
        "withheld": withheld,
        "decontam_paraphrases": paraphrases,
        "notes": NOTES,
    }


def write_split(rows: list[Planted], path: Path) -> None:
    """One hub-layout parquet file with several row groups (so fragments are exercised)."""
    table = pa.Table.from_pylist([p.row for p in rows], schema=NEMOTRON_SCHEMA)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=ROW_GROUP_SIZE, compression="zstd", compression_level=9)


def generate(out: Path, fixtures: Path | None = None, seed: int = SEED) -> dict[str, Any]:
    """Write the sample to `out` (and fixtures to `fixtures`, default `out/../fixtures`); return the manifest."""
    splits = build_rows(seed)
    man = manifest(splits, seed)
    for split, rows in splits.items():
        write_split(rows, out / man["files"][split])
    (out / "manifest.json").write_text(json.dumps(man, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    write_fixtures(splits, fixtures if fixtures is not None else out.parent / "fixtures", seed)
    return man


def main(argv: list[str] | None = None) -> None:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=here / "data", help="sample directory (hub layout)")
    parser.add_argument("--fixtures", type=Path, default=None, help="fixtures directory (default OUT/../fixtures)")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    man = generate(args.out, args.fixtures, args.seed)
    print(f"wrote {man['total_rows']} rows to {args.out}")


if __name__ == "__main__":
    main()
