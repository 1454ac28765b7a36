"""Tokenizer fingerprints: the shards and the model must speak the same token ids.

`prepare` records `tokenizer_fingerprint(dir)` in the manifest (`manifest["tokenizer"]`); `run_train`
computes the model's and refuses shards whose fingerprint differs. Token ids from another tokenizer
train a model on garbage without any error, which is why the check compares the bytes and not just
the vocabulary size.

It sits in io/ (beside the tokenizer loader) so that `prepare` (jobs) and `train` both use it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from posttrain.errors import PosttrainError
from posttrain.io.user_cache import cache_dir

_FIELDS = {"sha256": str, "content_sha256": str, "vocab_size": int, "special_ids": dict}
_CACHE_VERSION = "v1"  # in each entry's name: a change to what a fingerprint holds starts a new cache


def tokenizer_fingerprint(tokenizer_dir: str | Path) -> dict[str, Any]:
    """sha256 of `tokenizer.json` (bytes and canonical content), vocab size, special-token ids.

    `content_sha256` hashes the parsed JSON with sorted keys, so the same tokenizer saved by another
    library version (other whitespace or key order) still matches.
    """
    path = Path(tokenizer_dir)
    path = path if path.name == "tokenizer.json" else path / "tokenizer.json"
    if not path.is_file():
        raise PosttrainError(
            "no tokenizer.json", place=str(path.parent), fix="give a folder saved with a fast (tokenizers) tokenizer"
        )
    st = path.stat()
    return dict(_fingerprint(str(path.resolve()), st.st_mtime_ns, st.st_size))


@functools.lru_cache(maxsize=16)
def _fingerprint(path: str, mtime_ns: int, size: int) -> dict[str, Any]:
    """Cached by (path, mtime, size): a run fingerprints the same multi-MB file more than once.

    Across runs it is cached on disk by the file's sha256 (`fingerprint_cache_dir`): the canonical
    hash parses and re-serialises the whole JSON, ~0.45 s of every `prepare` for Llama-3's 9 MB, and
    it is a pure function of the bytes, so a file with other bytes gets its own entry.
    """
    raw = Path(path).read_bytes()
    sha = hashlib.sha256(raw).hexdigest()
    cached = _read_cached(sha)
    if cached is not None:
        return cached
    fp = _compute(raw, sha)
    _write_cached(sha, fp)
    return fp


def fingerprint_cache_dir() -> Path:
    """`$POSTTRAIN_CACHE/tokenizer-fingerprints`, default under `~/.cache/posttrain` (as the model cache)."""
    return cache_dir() / "tokenizer-fingerprints"


def _read_cached(sha: str) -> dict[str, Any] | None:
    """The cached fingerprint of the file with this sha256; None when absent or not a well-formed entry."""
    try:
        fp = json.loads(_entry(sha).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = (isinstance(fp, dict) and set(fp) == set(_FIELDS) and fp["sha256"] == sha
          and all(isinstance(fp[k], t) and not isinstance(fp[k], bool) for k, t in _FIELDS.items())
          and all(isinstance(v, int) and not isinstance(v, bool) for v in fp["special_ids"].values()))
    if not ok:
        return None
    fp["special_ids"] = dict(sorted(fp["special_ids"].items(), key=lambda kv: kv[1]))  # the computed order
    return fp


def _entry(sha: str) -> Path:
    return fingerprint_cache_dir() / f"{_CACHE_VERSION}-{sha}.json"


def _write_cached(sha: str, fp: dict[str, Any]) -> None:
    """Store an entry atomically (`write_atomic`: a temporary name renamed into place); a cache that
    cannot be written (read-only home, full disk) only costs the next run the computation."""
    from posttrain.io.spool import write_atomic  # on a miss only: it loads Arrow

    try:
        fingerprint_cache_dir().mkdir(parents=True, exist_ok=True)
        write_atomic(_entry(sha), json.dumps(fp))
    except OSError:
        pass


def _compute(raw: bytes, sha: str) -> dict[str, Any]:
    data = json.loads(raw)
    canonical = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    special = {t["content"]: int(t["id"]) for t in data.get("added_tokens", []) if t.get("special")}
    return {
        "sha256": sha,
        "content_sha256": hashlib.sha256(canonical).hexdigest(),
        "vocab_size": _vocab_size(data, raw),
        "special_ids": dict(sorted(special.items(), key=lambda kv: kv[1])),
    }


def json_vocab_size(data: dict[str, Any]) -> int | None:
    """Tokens with added tokens, as `tokenizers` counts them, read from a parsed `tokenizer.json`:
    building the tokenizer for one number costs ~0.35 CPU-s and ~100 MB. None for other model types
    than the vocab-map (BPE, WordPiece) and vocab-list (Unigram) ones: build it to count them.

    >>> json_vocab_size({"model": {"vocab": {"a": 0, "b": 1}}, "added_tokens": [{"id": 1}, {"id": 2}]})
    3
    """
    vocab = (data.get("model") or {}).get("vocab")
    if isinstance(vocab, dict):
        ids = set(vocab.values())
    elif isinstance(vocab, list):
        ids = set(range(len(vocab)))
    else:
        return None
    return len(ids | {int(t["id"]) for t in data.get("added_tokens", [])})


def _vocab_size(data: dict[str, Any], raw: bytes) -> int:
    size = json_vocab_size(data)
    if size is None:
        from tokenizers import Tokenizer

        size = Tokenizer.from_str(raw.decode("utf-8")).get_vocab_size(with_added_tokens=True)
    return size


def fingerprint_mismatch(shards: dict[str, Any], model: dict[str, Any]) -> str | None:
    """None when both fingerprints name the same tokenizer, else a short description of the difference.

    >>> a = {"sha256": "x", "content_sha256": "c", "vocab_size": 10, "special_ids": {"<s>": 1}}
    >>> fingerprint_mismatch(a, dict(a, sha256="y")) is None
    True
    >>> fingerprint_mismatch(a, dict(a, sha256="y", content_sha256="d", vocab_size=12))
    'vocab size 10 != 12'
    """
    if shards.get("sha256") == model.get("sha256"):
        return None
    if shards.get("content_sha256") and shards.get("content_sha256") == model.get("content_sha256"):
        return None
    diffs = []
    if shards.get("vocab_size") != model.get("vocab_size"):
        diffs.append(f"vocab size {shards.get('vocab_size')} != {model.get('vocab_size')}")
    a, b = shards.get("special_ids") or {}, model.get("special_ids") or {}
    changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if changed:
        shown = ", ".join(f"{k}: {a.get(k)} vs {b.get(k)}" for k in changed[:3])
        diffs.append(f"{len(changed)} special token id(s) differ ({shown})")
    return "; ".join(diffs) or "tokenizer.json differs (same vocab size and special ids, other merges or vocab)"
