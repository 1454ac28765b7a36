"""sha256 of every file a posttrain run wrote for the user: what the golden digests pin and what
engine-equality tests compare (one definition, so both skip and mask the same things)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

# fields that hold wall-clock time or rates, not the data
VOLATILE = {"seconds", "phase_seconds", "elapsed", "started", "finished", "tokens_per_second", "rows_per_second"}


def strip_volatile(doc: Any) -> Any:
    """A JSON document without its timing fields, at any depth."""
    if isinstance(doc, dict):
        return {k: strip_volatile(v) for k, v in doc.items() if k not in VOLATILE}
    if isinstance(doc, list):
        return [strip_volatile(v) for v in doc]
    return doc


def output_digests(out: Path, *, across_engines: bool = False) -> dict[str, str]:
    """Relative path -> sha256 for every file under `out` except the bookkeeping folders (`.work`,
    `.units`, `.posttrain`: every top-level dot entry). The output folder's own path is masked (the
    manifest records the recipe's output.dir) and JSON is compared without timings.

    `across_engines`: also leave out what names the engine that ran (the card, the manifest's `run`
    record and the recipe's `engine`/`output` sections), to compare runs of one recipe on several.
    """
    found = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = path.relative_to(out)
        if rel.parts[0].startswith(".") or (across_engines and rel.name == "README.md"):
            continue
        data = path.read_bytes().replace(str(out).encode(), b"<OUT>")
        if path.suffix == ".json":
            doc = strip_volatile(json.loads(data))
            if across_engines and isinstance(doc, dict) and "recipe" in doc:
                doc.pop("run", None)
                doc["recipe"] = {k: v for k, v in doc["recipe"].items() if k not in ("engine", "output")}
            data = json.dumps(doc, sort_keys=True).encode()
        found[rel.as_posix()] = hashlib.sha256(data).hexdigest()
    return found
