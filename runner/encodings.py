"""tiktoken's encodings, offline.

tiktoken downloads its encoding files on first use, which fails without internet. The ``bpe-openai`` package
ships the same files; we check each one's SHA-256 against the hash tiktoken itself expects, place it in a private
cache directory under the key tiktoken looks for, and let tiktoken load it from there (tiktoken checks the hash
once more). A missing or altered file is a ConfigError; there is no silent fallback to a rough estimate.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import tiktoken

from runner.errors import ConfigError

__all__ = ["encoding"]

# name -> (tiktoken's blob path, which is its cache key; the SHA-256 tiktoken expects of the file)
_BLOBS = {
    "o200k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
    "cl100k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
}
_lock = threading.Lock()
_loaded: dict[str, tiktoken.Encoding] = {}


def encoding(name: str) -> tiktoken.Encoding:
    """The tiktoken encoding ``name`` (o200k_base or cl100k_base), loaded from bpe-openai's verified copy."""
    loaded = _loaded.get(name)  # the hot path (every request at ingest): no lock once loaded
    if loaded is not None:
        return loaded
    with _lock:
        if name not in _loaded:
            _loaded[name] = _load(name)
        return _loaded[name]


def _load(name: str) -> tiktoken.Encoding:
    if name not in _BLOBS:
        raise ConfigError(f"unknown tokenizer {name!r} (known: {', '.join(_BLOBS)})")
    blob, expected = _BLOBS[name]
    # find_spec locates the package without importing it (its __init__ loads data eagerly)
    spec = importlib.util.find_spec("bpe_openai")
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise ConfigError(f"tokenizer {name}: the bpe-openai package is not installed; reinstall runner")
    try:
        packed = Path(locations[0], "data", f"{name}.tiktoken.gz").read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(f"tokenizer {name}: bpe-openai's copy is missing ({exc}); reinstall runner") from exc
    data = gzip.decompress(packed)
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ConfigError(f"tokenizer {name}: bpe-openai's file has SHA-256 {actual}, tiktoken expects {expected}")
    try:
        with tempfile.TemporaryDirectory(prefix="runner-tiktoken-") as cache:
            Path(cache, hashlib.sha1(blob.encode()).hexdigest()).write_bytes(data)
            return _from_cache(name, cache)
    except OSError as exc:
        raise ConfigError(
            f"tokenizer {name}: cannot write its {len(data):,}-byte file to {tempfile.gettempdir()} "
            f"({exc.strerror}); free some space there or point TMPDIR elsewhere"
        ) from exc


def _from_cache(name: str, cache: str) -> tiktoken.Encoding:
    """tiktoken's own constructor for ``name``, reading the verified file from ``cache`` (under ``_lock``)."""
    previous = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = cache
    try:
        spec = _constructor(name)()
    finally:
        if previous is None:
            del os.environ["TIKTOKEN_CACHE_DIR"]
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = previous
    return tiktoken.Encoding(**spec)


def _constructor(name: str) -> Any:
    from tiktoken_ext import openai_public

    return getattr(openai_public, name)
