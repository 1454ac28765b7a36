"""posttrain: Nemotron post-training data, from the hub to packed, verified training shards.

The Python API a notebook calls is the same the CLI calls; each job takes a config or a source
and returns a summary, printing nothing (progress goes to an optional `on_progress` callback):

>>> import posttrain
>>> posttrain.load_recipe(None).pack.seq_len
16384
>>> sorted(API)[:4]
['decontaminate', 'dedup', 'export', 'load_recipe']

The names load on first use, so `import posttrain` stays cheap and the package root, the lowest
layer, imports no higher layer at import time.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> (module, attribute)
API = {
    "open_source": ("posttrain.io.sources", "open_source"),
    "load_recipe": ("posttrain.config", "load_recipe"),
    "validate": ("posttrain.jobs.validate", "run_validate"),
    "rehydrate": ("posttrain.jobs.rehydrate", "run_rehydrate"),
    "dedup": ("posttrain.jobs.dedup", "run_dedup"),
    "decontaminate": ("posttrain.jobs.decontaminate", "run_decontaminate"),
    "select": ("posttrain.jobs.select", "run_select"),
    "export": ("posttrain.jobs.export", "export_source"),
    "report": ("posttrain.jobs.report", "build_report"),
    "prepare": ("posttrain.jobs.prepare.run", "run_prepare"),
}


def __getattr__(name: str) -> Any:
    if name in API:
        module, attr = API[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'posttrain' has no attribute {name!r}")
