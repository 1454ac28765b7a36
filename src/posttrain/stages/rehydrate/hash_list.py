"""Hash lists: a published sha256 per `rehydrate_key` of the restored text, to verify a restoration.

`prompt_digest` is the hash of restored user text; `load_hash_list` reads a list (JSON object or
JSONL). `RestorePrompts(verify_hashes=...)` compares every restored row whose key is listed.
"""

from __future__ import annotations

import json
from pathlib import Path

from posttrain.errors import SourceError


def prompt_digest(texts: list[str]) -> str:
    """sha256 of restored user text(s) (several chat turns joined by U+001E): what a hash list holds.

    >>> prompt_digest(["Add two numbers."])[:12]
    '000821b4f8d9'
    """
    import hashlib

    return hashlib.sha256("\x1e".join(texts).encode("utf-8")).hexdigest()


def load_hash_list(path: str | Path) -> dict[str, str]:
    """A hash list: a JSON object {key: sha256} or JSONL lines {"key": ..., "sha256": ...}.

    Keys are `rehydrate_key`s (`taco/train/16131`, `lmsys-chat-1m/<conversation_id>`); values
    `prompt_digest` of the restored text.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
        if text.lstrip().startswith("{") and "\n{" not in text.strip():
            data = json.loads(text)
            return {str(k): str(v) for k, v in data.items()}
        out = {}
        for line in text.splitlines():
            if line.strip():
                rec = json.loads(line)
                out[str(rec["key"])] = str(rec["sha256"])
        return out
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise SourceError(f"not a readable hash list ({type(exc).__name__}: {exc})", place=str(p),
                          fix='write a JSON object {"taco/train/0": "<sha256>"} or JSONL {"key": ..., "sha256": ...}') from None
