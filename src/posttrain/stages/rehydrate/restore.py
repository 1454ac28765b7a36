"""`RestorePrompts`: the row stage that fills withheld user turns back in and flags what it cannot.

Rows whose prompt came from an outside dataset ship with a placeholder user turn (`"-"` in code,
`""` in chat). Code rows are joined by metadata `{"dataset", "split", "index"}`, chat rows by
metadata `conversation_id` (every empty user turn gets the lmsys user turn of the same rank; a row
with more user turns than the conversation cannot be restored, and non-empty user turns that
differ from lmsys are counted as mismatches). Rows that cannot be restored get
`prompt.unrecoverable` and the failing key in the `rehydrate_key` column (set for every withheld
row, null otherwise); with `keep_unrecoverable=True` they keep their placeholder and no reason.
Given a hash list, a restored text that differs from its listed hash is `prompt.hash_mismatch`.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from posttrain.stage import Stage, add_reasons, register_reason
from posttrain.stages.rehydrate.hash_list import load_hash_list, prompt_digest
from posttrain.stages.rehydrate.keyed_source import KeyedSource
from posttrain.stages.rehydrate.prompt_text import code_prompt, dataset_name
from posttrain.stages.rehydrate.source_files import EXPECTED_SPLIT_ROWS

register_reason("prompt.hash_mismatch", "error", "the restored prompt differs from the published hash of it")

KEY_COLUMN = "rehydrate_key"
MAX_KEYS_LISTED = 1000
CODE_PLACEHOLDER, CHAT_PLACEHOLDER = "-", ""


def _meta(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except (ValueError, TypeError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


class RestorePrompts(Stage):
    """Fill withheld user turns from the external sources; flag what cannot be restored.

    `code_sources` maps a dataset name (`taco`, `apps`, `code_contests`, `codeforces`; an owner
    prefix such as `open-r1/` is ignored) to a path or hub id; `chat_source` is lmsys-chat-1m.
    Construction indexes the code sources and refuses one keyed by row position whose rows per
    split differ from `EXPECTED_SPLIT_ROWS` (updated by `expected_rows`; `check_rows=False` skips
    the check). `codeforces_examples` is `code_prompt`'s `examples`. `verify_hashes` is a hash
    list (JSON object or JSONL of {"key", "sha256"}). `summary()` gives the counts restored,
    unrecoverable and verified per source, and each source's revision, rows and key.
    """

    name = "rehydrate"

    def __init__(self, code_sources: dict[str, str | Path] | None = None, chat_source: str | Path | None = None,
                 *, keep_unrecoverable: bool = False, hub_mirror: str | Path | None = None,
                 codeforces_examples: str = "reference", expected_rows: dict[str, dict[str, int]] | None = None,
                 check_rows: bool = True, verify_hashes: str | Path | None = None) -> None:  # fmt: skip
        self.code = {dataset_name(k): KeyedSource(v, "code", dataset_name(k), hub_mirror, examples=codeforces_examples)
                     for k, v in (code_sources or {}).items()}  # fmt: skip
        self.chat = KeyedSource(chat_source, "chat", "lmsys-chat-1m", hub_mirror) if chat_source else None
        self.keep_unrecoverable = keep_unrecoverable
        expected = {**EXPECTED_SPLIT_ROWS, **{dataset_name(k): dict(v) for k, v in (expected_rows or {}).items()}}
        self.sources = {name: src.describe() for name, src in sorted(self.code.items())}
        if self.chat is not None:
            self.sources["lmsys-chat-1m"] = self.chat.describe()
        if check_rows:
            for src in self.code.values():
                src.check_rows(expected.get(src.name))
        self.hashes = load_hash_list(verify_hashes) if verify_hashes else None
        self.counts: dict[str, Counter] = {}
        self.mismatched_turns = 0
        self.unrecoverable_keys: list[str] = []
        self.verified = self.hash_mismatch = 0
        self.reset_counts()

    def reset_counts(self) -> None:
        """Start counting afresh (a work unit reports only its own rows)."""
        self.counts = {"restored": Counter(), "unrecoverable": Counter()}
        self.mismatched_turns = 0
        self.unrecoverable_keys = []
        self.verified = self.hash_mismatch = 0

    def merge_summary(self, unit: dict[str, Any]) -> None:
        """Add a work unit's `summary()`; units merged in order list the same first keys as one stream."""
        self.counts["restored"].update(unit["restored"])
        self.counts["unrecoverable"].update(unit["unrecoverable"])
        self.mismatched_turns += unit["mismatched_user_turns"]
        self.verified += unit.get("verified", 0)
        self.hash_mismatch += unit.get("hash_mismatch", 0)
        room = max(0, MAX_KEYS_LISTED - len(self.unrecoverable_keys))
        self.unrecoverable_keys.extend(unit["unrecoverable_keys"][:room])

    def summary(self) -> dict[str, Any]:
        """Counts per source: restored, unrecoverable (first 1,000 failing keys listed), mismatches."""
        return {
            "restored": dict(sorted(self.counts["restored"].items())),
            "unrecoverable": dict(sorted(self.counts["unrecoverable"].items())),
            "restored_total": sum(self.counts["restored"].values()),
            "unrecoverable_total": sum(self.counts["unrecoverable"].values()),
            "mismatched_user_turns": self.mismatched_turns,
            "unrecoverable_keys": list(self.unrecoverable_keys),
            **({"verified": self.verified, "hash_mismatch": self.hash_mismatch} if self.hashes is not None else {}),
            "sources": self.sources,
        }

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        messages = batch.column("messages")
        flat = pc.list_flatten(messages)
        parents = pc.list_parent_indices(messages).to_numpy()
        roles, contents = pc.struct_field(flat, "role"), pc.struct_field(flat, "content")
        is_user = pc.fill_null(pc.equal(roles, "user"), False)
        withheld = pc.and_(is_user, pc.fill_null(pc.is_in(contents, pa.array([CODE_PLACEHOLDER, CHAT_PLACEHOLDER])), False))
        candidates = np.unique(parents[withheld.to_numpy(zero_copy_only=False)])
        keys: list[str | None] = [None] * batch.num_rows
        reasons: list[str | None] = [None] * batch.num_rows
        new_text: dict[int, str] = {}
        if len(candidates):
            metas = batch.column("metadata").take(pa.array(candidates)).to_pylist()
            user_pos = np.flatnonzero(is_user.to_numpy(zero_copy_only=False))
            jobs = self._plan(candidates, metas, parents, user_pos, contents, keys)
            for source, items in jobs.items():
                records = source.lookup([k for k, *_ in items]) if source else {}
                for key, row, positions, texts in items:
                    label = source.name if source else key.split("/", 1)[0]
                    filled = self._fill(source, records.get(key), positions, texts) if source else None
                    if filled is None:
                        self.counts["unrecoverable"][label] += 1
                        if len(self.unrecoverable_keys) < MAX_KEYS_LISTED:  # bounded; counts stay exact
                            self.unrecoverable_keys.append(keys[row] or key)
                        reasons[row] = None if self.keep_unrecoverable else "prompt.unrecoverable"
                        continue
                    self.counts["restored"][label] += 1
                    new_text.update(filled)
                    if self.hashes is not None and keys[row] in self.hashes:
                        if prompt_digest([filled[p] for p in sorted(filled)]) == self.hashes[keys[row]]:
                            self.verified += 1
                        else:
                            self.hash_mismatch += 1
                            reasons[row] = "prompt.hash_mismatch"
        batch = self._with_contents(batch, messages, flat, contents, new_text)
        batch = add_reasons(batch, reasons)
        key_col = pa.array(keys, type=pa.string())
        if KEY_COLUMN in batch.schema.names:
            return batch.set_column(batch.schema.get_field_index(KEY_COLUMN), KEY_COLUMN, key_col)
        return batch.append_column(KEY_COLUMN, key_col)

    def _plan(self, candidates, metas, parents, user_pos, contents, keys) -> dict[Any, list]:
        """Group the withheld rows by source: (key, row, flat positions of user turns, their texts)."""
        jobs: dict[Any, list] = {}
        for row, meta_text in zip(candidates.tolist(), metas, strict=True):
            meta = _meta(meta_text)
            pos = user_pos[parents[user_pos] == row]
            texts = [contents[int(p)].as_py() for p in pos]
            if "conversation_id" in meta and CHAT_PLACEHOLDER in texts:
                key, source = f"lmsys-chat-1m/{meta['conversation_id']}", self.chat
                lookup_key = str(meta["conversation_id"])
            elif texts and texts[0] == CODE_PLACEHOLDER and "dataset" in meta:
                name = dataset_name(str(meta["dataset"]))
                lookup_key = f"{meta.get('split') or 'train'}/{meta.get('index')}"
                key, source = f"{name}/{lookup_key}", self.code.get(name)
            else:
                continue  # an empty user turn without restoration keys is not a withheld prompt
            keys[row] = key
            jobs.setdefault(source, []).append((lookup_key if source else key, row, pos.tolist(), texts))
        return jobs

    def _fill(self, source: KeyedSource, record: dict[str, Any] | None, positions: list[int],
              texts: list[str]) -> dict[int, str] | None:  # fmt: skip
        """Flat position -> restored text, or None when the record is missing or does not fit."""
        if record is None:
            return None
        if source.kind == "code":
            prompt = code_prompt(record, source.name, source.examples)
            return {positions[0]: prompt} if prompt else None
        turns = [t.get("content") or "" for t in record.get("conversation") or [] if t.get("role") == "user"]
        if len(texts) > len(turns):
            return None
        out = {}
        for pos, have, want in zip(positions, texts, turns, strict=False):
            if have == CHAT_PLACEHOLDER:
                out[pos] = want
            elif have != want:
                self.mismatched_turns += 1
        return out if out and all(out.values()) else None

    @staticmethod
    def _with_contents(batch, messages, flat, contents, new_text: dict[int, str]) -> pa.RecordBatch:
        """The batch with `content` replaced at the given flat positions (other columns untouched)."""
        if not new_text:
            return batch
        pos = sorted(new_text)
        mask = np.zeros(len(contents), dtype=bool)
        mask[pos] = True
        replaced = pc.replace_with_mask(contents, pa.array(mask), pa.array([new_text[p] for p in pos], pa.string()))
        fields = list(flat.type)
        children = [replaced if f.name == "content" else pc.struct_field(flat, f.name) for f in fields]
        structs = pa.StructArray.from_arrays(children, fields=fields, mask=flat.is_null())
        offsets = pa.array(np.concatenate([[0], pc.list_value_length(messages).fill_null(0).to_numpy().cumsum()]),
                           pa.int32())  # fmt: skip
        rebuilt = pa.ListArray.from_arrays(offsets, structs, type=messages.type, mask=messages.is_null())
        idx = batch.schema.get_field_index("messages")
        return batch.set_column(idx, batch.schema.field(idx), rebuilt)


def bundled_sources() -> tuple[dict[str, Path], Path]:
    """The fixtures that restore the bundled sample's withheld prompts."""
    from posttrain.sample import default_chat_source, default_code_sources

    return default_code_sources(), default_chat_source()
