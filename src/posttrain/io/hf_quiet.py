"""transformers draws its own progress bars (loading weights, saving shards); a posttrain run reports
through its `on_progress` callback only, so train and eval load and save models inside `quiet()`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """transformers' progress bars off inside the block, restored after (a notebook's own setting is kept)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()
