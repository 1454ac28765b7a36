"""Which files of a dataset repo make which split: the same rules for the hub and its local mirrors.

In order, the first that applies:

1. **Llama-Nemotron** (`nvidia/Llama-Nemotron-Post-Training-Dataset`): `SFT/<folder>/*.jsonl` are
   the splits of subset `sft` and `RL/<folder>/*.jsonl` those of subset `rl`, the split being the
   folder (`SFT/code/code_v1.1.jsonl` -> `code`), with `science` renamed `stem` (the Nemotron name
   of that category; `--split science` still works). This is the card's own `configs` (`SFT`,
   the default, and `RL`), applied even when a mirror lacks the README. Anything else in the repo
   (`train/when2call_*.jsonl`) is in no config and is skipped, with a note.
2. **The card's `configs`** (README.md YAML header; see `card.py`): each config's `data_files`
   patterns give its splits; the subset is the config name. Files no config lists are skipped with
   a note (Nemotron v2's `data/multilingual-*.parquet`: 100 rows outside the card that repeat
   `multilingual_ja` prompts under new uuids). A non-default config whose split names repeat
   the default's (open-r1/codeforces' `verifiable`) is skipped rather than mixed in.
3. **`data/`**: files under `data/`, split from the hub's shard naming (below); the rest is ignored.
4. **Flat**: every data file, split from its name.

Shard naming (`split_from_hub_name`): `<split>-00000-of-00006.parquet`, with or without the hash
suffix older `push_to_hub` wrote (`train-00000-of-00006-5b0f2a8c3e1d4f6b.parquet`),
`<split>_00003.parquet`, `<split>.jsonl`, and the parquet export's `<config>/<split>/0000.parquet`
(`partial-<split>` too). The v1 card's one rename (`data/tool-*` is split `tool_calling`) applies.

>>> split_from_hub_name("data/train-00000-of-00006-5b0f2a8c3e1d4f6b.parquet")
'train'
>>> split_from_hub_name("SFT/partial-math/0003.parquet"), split_from_hub_name("data/tool-00000-of-00001.parquet")
('math', 'tool_calling')
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from posttrain.io.sources.card import Card, CardConfig, parse_card
from posttrain.io.sources.naming import DATA_SUFFIXES, file_kind, split_from_filename

CARD_FILE = "README.md"
#: Llama-Nemotron's SFT folders whose split name is not the folder name.
LLAMA_NEMOTRON_RENAMES = {"science": "stem"}
_LLAMA_FILE = re.compile(r"^(?P<subset>SFT|RL)/(?P<folder>[^/]+)/[^/]+$")
_NUMBERED = re.compile(r"^\d+$")


@dataclass(frozen=True)
class LayoutFile:
    """One data file of a repo: its path relative to the repo root ('/'-separated), split and subset."""

    path: str
    split: str
    subset: str | None = None


@dataclass
class Layout:
    """The files a repo serves, the data files it holds but does not serve (with why), and aliases."""

    kind: str  # "llama-nemotron" | "card" | "data-dir" | "flat"
    files: list[LayoutFile]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    split_rows: dict[str, int] = field(default_factory=dict)  # from the card's dataset_info, when it says


class DiscoveredFiles(list):
    """A list of `DataFile`s that also says what the layout skipped (a plain list to every caller)."""

    def __init__(self, files: Any = (), *, skipped: list[tuple[str, str]] | None = None,
                 aliases: dict[str, str] | None = None, kind: str = "flat",
                 split_rows: dict[str, int] | None = None) -> None:  # fmt: skip
        super().__init__(files)
        self.skipped = list(skipped or [])
        self.aliases = dict(aliases or {})
        self.kind = kind
        self.split_rows = dict(split_rows or {})

    def with_files(self, files: Any) -> DiscoveredFiles:
        return DiscoveredFiles(files, skipped=self.skipped, aliases=self.aliases, kind=self.kind,
                               split_rows=self.split_rows)  # fmt: skip


def glob_regex(pattern: str) -> re.Pattern:
    """A hub `data_files` pattern as a regex over repo-relative paths (`*` stays inside a folder).

    >>> bool(glob_regex("data/chat-*").match("data/chat-00000-of-00001.parquet"))
    True
    >>> bool(glob_regex("data/chat-*").match("data/chat/x.parquet")), bool(glob_regex("SFT/**").match("SFT/a/b.jsonl"))
    (False, True)
    """
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("^" + "".join(out).lstrip("/") + "$")


def split_from_hub_name(path: str) -> str:
    """The split of a data file from the hub's naming rules (see the module docstring).

    >>> [split_from_hub_name(p) for p in ("train-00000-of-00001.parquet", "data/stem_00003.parquet",
    ...                                    "default/train/0000.parquet", "test.jsonl")]
    ['train', 'stem', 'train', 'test']
    """
    parts = path.replace("\\", "/").split("/")
    name = parts[-1]
    for suffix in DATA_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    if _NUMBERED.match(name) and len(parts) >= 2:  # the parquet export: <config>/<split>/0000.parquet
        return parts[-2].removeprefix("partial-")
    return split_from_filename(path)


def _data_paths(paths: list[str]) -> list[str]:
    return sorted(p for p in paths if file_kind(p))


def _llama_layout(paths: list[str], default_only: bool) -> Layout:
    files, skipped = [], []
    for p in paths:
        m = _LLAMA_FILE.match(p)
        if m is None:
            skipped.append((p, "in none of the card's configs (SFT/<split>/, RL/<split>/)"))
            continue
        subset = m["subset"].lower()
        if default_only and subset != "sft":
            skipped.append((p, "in config RL, not the default config SFT"))
            continue
        folder = m["folder"]
        files.append(LayoutFile(p, LLAMA_NEMOTRON_RENAMES.get(folder, folder) if subset == "sft" else folder, subset))
    files.sort(key=lambda f: (f.subset != "sft", f.path))  # the default config (SFT) first
    return Layout("llama-nemotron", files, skipped, dict(LLAMA_NEMOTRON_RENAMES))


def _is_llama_nemotron(paths: list[str], card: Card) -> bool:
    if card.configs and {c.name for c in card.configs} - {"SFT", "RL"}:
        return False
    return any(_LLAMA_FILE.match(p) and p.startswith("SFT/") for p in paths)


def _card_layout(paths: list[str], card: Card, default_only: bool) -> Layout:
    default = card.default_config
    assert default is not None
    chosen: list[CardConfig] = [default]
    skipped_configs: dict[str, str] = {}
    for c in card.configs:
        if c is default:
            continue
        if default_only:
            skipped_configs[c.name] = f"in config {c.name!r}, not the default config {default.name!r}"
        elif set(c.data_files) & {s for k in chosen for s in k.data_files}:
            skipped_configs[c.name] = f"config {c.name!r} repeats split names of config {default.name!r}"
        else:
            chosen.append(c)
    rules = [(c, split, glob_regex(p)) for c in chosen for split, pats in c.data_files.items() for p in pats]
    other = [(c, glob_regex(p)) for c in card.configs if c.name in skipped_configs
             for pats in c.data_files.values() for p in pats]  # fmt: skip
    files, skipped = [], []
    for p in paths:
        hit = next(((c, split) for c, split, rx in rules if rx.match(p)), None)
        if hit is not None:
            files.append(LayoutFile(p, hit[1], hit[0].name))
            continue
        why = next((skipped_configs[c.name] for c, rx in other if rx.match(p)), "not in the card's configs")
        skipped.append((p, why))
    order = {c.name: k for k, c in enumerate(chosen)}
    files.sort(key=lambda f: (order[f.subset], f.path))  # config by config, as the card lists them
    rows: dict[str, int] = {}
    for c in chosen:
        rows.update(card.split_rows.get(c.name, {}))
    return Layout("card", files, skipped, {}, rows)


def resolve_layout(paths: list[str], card_text: str | None = None, *, default_only: bool = False) -> Layout:
    """Files -> splits for a repo whose files (relative paths) and README text are given.

    `default_only` keeps the default config only (prompt restoration indexes exactly what
    `load_dataset(repo)[split]` serves).

    >>> lay = resolve_layout(["SFT/code/code_v1.1.jsonl", "SFT/science/science.jsonl", "RL/instruction_following/if.jsonl",
    ...                       "train/when2call_train_sft.jsonl"])
    >>> [(f.split, f.subset) for f in lay.files], lay.skipped[0][0]
    ([('code', 'sft'), ('stem', 'sft'), ('instruction_following', 'rl')], 'train/when2call_train_sft.jsonl')
    """
    data = _data_paths(paths)
    card = parse_card(card_text)
    if _is_llama_nemotron(data, card):
        return _llama_layout(data, default_only)
    if card.configs:
        return _card_layout(data, card, default_only)
    under = [p for p in data if p.startswith("data/")]
    if under:
        return Layout("data-dir", [LayoutFile(p, split_from_hub_name(p)) for p in under])
    return Layout("flat", [LayoutFile(p, split_from_hub_name(p)) for p in data])


def config_files(paths: list[str], card_text: str | None, config: str | None = None) -> list[LayoutFile]:
    """The files of one config (None: the default) of a repo, each with its split.

    A repo without card configs has one config: its files by the hub's naming rules.
    """
    card = parse_card(card_text)
    data = _data_paths(paths)
    if not card.configs:
        if config not in (None, "default"):
            raise FileNotFoundError(f"no config {config!r}: the card declares no configs")
        return resolve_layout(paths).files
    chosen = card.default_config if config is None else next((c for c in card.configs if c.name == config), None)
    if chosen is None:
        raise FileNotFoundError(f"no config {config!r} (configs: {', '.join(c.name for c in card.configs)})")
    rules = [(split, glob_regex(p)) for split, pats in chosen.data_files.items() for p in pats]
    return [LayoutFile(p, split, chosen.name) for p in data for split, rx in rules if rx.match(p)]


def list_local(root: Path) -> list[str]:
    """Every file under `root` as a '/'-separated relative path, hidden folders (.git, .cache) left out."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(root)
        for name in filenames:
            if not name.startswith("."):
                out.append((rel / name).as_posix() if rel.parts else name)
    return sorted(out)


def local_layout(root: Path, *, default_only: bool = False) -> Layout:
    """The layout of a local directory (a mirror of a hub repo, or any folder of data files)."""
    card = root / CARD_FILE
    text = card.read_text(encoding="utf-8", errors="replace") if card.is_file() else None
    return resolve_layout(list_local(root), text, default_only=default_only)


def fs_layout(fs: Any, root: str, *, default_only: bool = False) -> Layout:
    """The layout of a repo on an fsspec filesystem (the hub's `HfFileSystem`, or a local one)."""
    root = root.rstrip("/")
    found = fs.find(root)
    # the hub may answer with or without the `@revision` the root was given with
    prefixes = (root + "/", re.sub(r"@[^/]*$", "", root) + "/")
    rel = sorted({p[len(pre):] for p in found for pre in prefixes[:1 + (not p.startswith(prefixes[0]))]
                  if p.startswith(pre)})  # fmt: skip
    rel = [p for p in rel if not any(part.startswith(".") for part in p.split("/"))]
    text = None
    if CARD_FILE in rel:
        with fs.open(f"{root}/{CARD_FILE}", "rb") as fh:
            text = fh.read().decode("utf-8", errors="replace")
    return resolve_layout(rel, text, default_only=default_only)


def select(files: list[Any], splits: list[str] | None, aliases: dict[str, str]) -> tuple[list[Any], list[str], list[str]]:
    """(files of the asked splits or subsets, unknown names, the names one may ask for).

    A name may be a split, an alias of one (`science`), or a subset (`sft`, `rl`: every split of it).
    """
    names = sorted({f.split for f in files})
    subsets = sorted({(f.subset or "").lower() for f in files if f.subset} - set(names))
    if not splits:
        return list(files), [], names
    wanted = {aliases.get(s, s) for s in splits}
    unknown = [s for s in splits if aliases.get(s, s) not in names and s.lower() not in subsets]
    chosen = [f for f in files if f.split in wanted or (f.subset or "").lower() in {s.lower() for s in splits}]
    return chosen, unknown, names + [f"{s} (subset)" for s in subsets]


def count_jsonl_rows(path: str) -> int:
    """Non-blank lines of a local JSONL file (.gz too): what `posttrain info` shows for JSONL rows."""
    import gzip

    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())
