"""The bundled sample: 2,500 synthetic rows laid out like the hub repo, with planted defects.

`sample_root()` is a directory with `data/<split>-00000-of-00001.parquet` (tool_calling in
`data/tool-*`) and `manifest.json`; `fixtures_root()` holds the external-source tables that
`posttrain rehydrate` restores withheld prompts from. Regenerate with
`python -m posttrain.sample.generate` (deterministic, byte-identical).

>>> (sample_root() / "manifest.json").is_file()
True
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent


def sample_root() -> Path:
    """Directory of the bundled sample, laid out like nvidia/Nemotron-Post-Training-Dataset-v1."""
    return _HERE / "data"


def fixtures_root() -> Path:
    """Directory of the restoration fixtures (TACO/APPS/CodeContests/codeforces/lmsys-like tables)."""
    return _HERE / "fixtures"


def load_manifest(root: Path | None = None) -> dict[str, Any]:
    """The sample manifest: rows per split, planted defects, withheld rows (see `generate.NOTES`)."""
    path = (root or sample_root()) / "manifest.json"
    return json.loads(path.read_text(encoding="utf-8"))


def default_code_sources() -> dict[str, Path]:
    """The bundled code fixtures by metadata `dataset` name."""
    root = fixtures_root()
    return {
        "taco": root / "taco.parquet",
        "apps": root / "apps",
        "code_contests": root / "code_contests.parquet",
        "open-r1/codeforces": root / "codeforces.parquet",
    }


def default_chat_source() -> Path:
    """The bundled lmsys-chat-1m-like fixture."""
    return fixtures_root() / "lmsys-chat-1m.parquet"
