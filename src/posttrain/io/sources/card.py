"""A hub dataset card's YAML header: the `configs` (which files make which split) and the row counts.

The hub decides a repo's splits from the card's `configs:` when it has them, not from file names:
`nvidia/Nemotron-Post-Training-Dataset-v2` holds a `data/multilingual-*.parquet` that no config
lists (so the hub never serves it), and `nvidia/Llama-Nemotron-Post-Training-Dataset` declares its
`SFT/<folder>/*.jsonl` files as splits of a config `SFT`. `parse_card` reads the header the way the
hub does; `posttrain.io.sources.hub_layouts` turns it into files.

>>> card = parse_card('''---
... configs:
... - config_name: default
...   data_files:
...   - split: chat
...     path: data/chat-*
... dataset_info:
...   splits:
...   - name: chat
...     num_examples: 12
... ---
... # My set''')
>>> card.configs[0].name, card.configs[0].data_files, card.split_rows
('default', {'chat': ['data/chat-*']}, {'default': {'chat': 12}})
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml


@dataclass(frozen=True)
class CardConfig:
    """One `configs:` entry: its name, whether it is the default, and split -> path patterns."""

    name: str
    data_files: dict[str, list[str]]
    default: bool = False


@dataclass
class Card:
    """What posttrain uses of a card: configs (in card order) and row counts per config and split."""

    configs: list[CardConfig] = field(default_factory=list)
    split_rows: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def default_config(self) -> CardConfig | None:
        """The config the hub loads without a name: `default: true`, else the one named `default`, else the first."""
        for c in self.configs:
            if c.default:
                return c
        for c in self.configs:
            if c.name == "default":
                return c
        return self.configs[0] if self.configs else None


def card_header(text: str) -> dict[str, Any]:
    """The YAML mapping between the leading `---` lines of a README, or {} when there is none or it is invalid.

    >>> card_header("---\\nlicense: cc-by-4.0\\n---\\ntext"), card_header("# no header")
    ({'license': 'cc-by-4.0'}, {})
    """
    lines = text.lstrip("\ufeff").splitlines()
    if not lines or lines[0].strip() != "---":
        return {}
    for end in range(1, len(lines)):
        if lines[end].strip() == "---":
            try:
                data = yaml.safe_load("\n".join(lines[1:end]))
            except yaml.YAMLError:
                return {}
            return data if isinstance(data, dict) else {}
    return {}


def _patterns(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value if isinstance(v, str)]
    return []


def _data_files(value: Any) -> dict[str, list[str]]:
    """A config's `data_files` in any of the hub's spellings, as split -> patterns."""
    out: dict[str, list[str]] = {}
    if isinstance(value, (str, list)) and not (isinstance(value, list) and value and isinstance(value[0], dict)):
        return {"train": _patterns(value)} if _patterns(value) else {}
    if isinstance(value, dict):
        return {str(k): _patterns(v) for k, v in value.items() if _patterns(v)}
    for entry in value or []:
        if isinstance(entry, dict) and "split" in entry:
            out.setdefault(str(entry["split"]), []).extend(_patterns(entry.get("path")))
    return out


def parse_card(text: str | None) -> Card:
    """The configs and row counts of a README's YAML header (an empty Card when it declares none)."""
    header = card_header(text or "")
    configs = []
    for entry in header.get("configs") or []:
        if not isinstance(entry, dict):
            continue
        files = _data_files(entry.get("data_files"))
        if files:
            configs.append(CardConfig(str(entry.get("config_name", "default")), files, bool(entry.get("default"))))
    rows: dict[str, dict[str, int]] = {}
    info = header.get("dataset_info")
    for item in info if isinstance(info, list) else [info] if isinstance(info, dict) else []:
        name = str(item.get("config_name", "default"))
        for s in item.get("splits") or []:
            if isinstance(s, dict) and isinstance(s.get("num_examples"), int):
                rows.setdefault(name, {})[str(s.get("name"))] = s["num_examples"]
    return Card(configs, rows)
