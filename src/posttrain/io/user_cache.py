"""posttrain's cache folder for what it derives once and reuses across runs (the default model
converted from its GGUF, tokenizer fingerprints): `$POSTTRAIN_CACHE`, default `~/.cache/posttrain`.

Only posttrain writes below it, each entry atomically, and a missing or damaged entry is made again.

>>> import os
>>> saved = os.environ.get("POSTTRAIN_CACHE")
>>> os.environ["POSTTRAIN_CACHE"] = "/tmp/pt-cache"
>>> str(cache_dir())
'/tmp/pt-cache'
>>> _ = os.environ.pop("POSTTRAIN_CACHE") if saved is None else os.environ.update(POSTTRAIN_CACHE=saved)
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$POSTTRAIN_CACHE`, default `~/.cache/posttrain`."""
    return Path(os.environ.get("POSTTRAIN_CACHE") or Path.home() / ".cache" / "posttrain").expanduser()
