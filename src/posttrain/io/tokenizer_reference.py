"""The HF tokenizer's ids for the fast path's check, computed in a child process.

`Tokenizer.verify_fast_path` compares tiktoken's ids with the HF `tokenizers` ids on a sample of
the first batch. Building the HF tokenizer from Llama-3's 9 MB `tokenizer.json` takes ~0.35 s and
holds the GIL all along, so in a one-process run it stalls every other thread (checks, rendering)
for that long. A child process started when the tokenizer starts loading builds it on another core
and encodes the sample when it arrives; the parent never builds it unless the child fails (then it
loads it in-process, as before). Same `tokenizers` package, same file, same calls: the same ids.
"""

from __future__ import annotations

import json
import subprocess
import sys
import weakref
from collections.abc import Sequence
from pathlib import Path

# The child reads one JSON list of texts on stdin and writes their ids; an early EOF (the parent
# died) makes it exit.
_SCRIPT = """
import json, sys
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
tok.encode_special_tokens = True
texts = json.loads(sys.stdin.buffer.read())
sys.stdout.write(json.dumps([e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]))
"""


class ReferenceEncoder:
    """One child process that encodes one list of texts with the HF tokenizer of `tokenizer_json`."""

    def __init__(self, tokenizer_json: Path) -> None:
        self._proc: subprocess.Popen | None = subprocess.Popen(
            [sys.executable, "-c", _SCRIPT, str(tokenizer_json)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        self._finalizer = weakref.finalize(self, _end, self._proc)

    def encode(self, texts: Sequence[str]) -> list[list[int]] | None:
        """Each text's ids as ordinary text; None when the child failed (the caller encodes itself)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        try:
            out, _ = proc.communicate(json.dumps(list(texts)).encode(), timeout=300)
        except (OSError, subprocess.SubprocessError):
            _end(proc)
            return None
        try:
            ids = json.loads(out) if proc.returncode == 0 else None
        except ValueError:
            return None
        ok = isinstance(ids, list) and len(ids) == len(texts) and all(isinstance(x, list) for x in ids)
        return ids if ok else None

    def close(self) -> None:
        """End the child if it is still waiting (no check was needed)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            _end(proc)


def _end(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for f in (proc.stdin, proc.stdout):
        if f is not None:
            f.close()
