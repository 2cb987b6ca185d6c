"""Token counts for requests, offline.

tiktoken downloads its encoding files on first use, which fails without internet. The ``bpe-openai`` package
ships the same files; we check each one's SHA-256 against the hash tiktoken itself expects, place it in a private
cache directory under the key tiktoken looks for, and let tiktoken load it from there (tiktoken checks the hash
once more). A missing or altered file is a ConfigError; there is no silent fallback to a rough estimate.

``RequestCost`` is what the gate reserves at admission: prompt tokens (cookbook chat formula for o200k models:
3 per message + every value + 1 per name + 3 priming the reply) plus the output reservation, times ``n``.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tiktoken

from runner.errors import ConfigError

__all__ = ["RequestCost", "count_prompt", "encoding", "estimate", "output_reservation"]

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

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3


def encoding(name: str) -> tiktoken.Encoding:
    """The tiktoken encoding ``name`` (o200k_base or cl100k_base), loaded from bpe-openai's verified copy."""
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
    with tempfile.TemporaryDirectory(prefix="runner-tiktoken-") as cache:
        Path(cache, hashlib.sha1(blob.encode()).hexdigest()).write_bytes(data)
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


def _text_of(value: Any) -> str:
    """The text a message value contributes: strings as they are, text parts joined, other parts as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts: list[str] = []
        for part in value:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
            else:
                parts.append(json.dumps(part, separators=(",", ":")))
        return "".join(parts)
    if value is None:
        return ""
    return json.dumps(value, separators=(",", ":"))


def _count_messages(enc: tiktoken.Encoding, messages: list[Any]) -> int:
    total = REPLY_PRIMING
    for message in messages:
        total += TOKENS_PER_MESSAGE
        if not isinstance(message, dict):
            total += len(enc.encode_ordinary(_text_of(message)))
            continue
        for key, value in message.items():
            total += len(enc.encode_ordinary(_text_of(value)))
            if key == "name":
                total += TOKENS_PER_NAME
    return total


def count_prompt(endpoint: str, body: dict[str, Any], tokenizer: str) -> int:
    """Prompt tokens of a request body for ``endpoint``, as the simulator bills them and OpenAI roughly does."""
    enc = encoding(tokenizer)
    extra = 0
    for key in ("tools", "functions", "response_format"):
        if body.get(key):
            extra += len(enc.encode_ordinary(json.dumps(body[key], separators=(",", ":"))))
    if endpoint.endswith("/embeddings"):
        inputs = body.get("input", "")
        items = inputs if isinstance(inputs, list) else [inputs]
        return sum(len(x) if isinstance(x, list) else len(enc.encode_ordinary(str(x))) for x in items)
    if endpoint.endswith("/responses"):
        messages: list[Any] = []
        if body.get("instructions"):
            messages.append({"role": "developer", "content": body["instructions"]})
        given = body.get("input", "")
        messages.extend(given if isinstance(given, list) else [{"role": "user", "content": given}])
        text = body.get("text")
        if isinstance(text, dict) and text.get("format"):
            extra += len(enc.encode_ordinary(json.dumps(text["format"], separators=(",", ":"))))
        return _count_messages(enc, messages) + extra
    messages = body.get("messages") or []
    if not isinstance(messages, list):
        messages = [messages]
    return _count_messages(enc, messages) + extra


def output_reservation(endpoint: str, body: dict[str, Any], default: int, model_max: int) -> int:
    """Output tokens to reserve: the request's own maximum, else ``default``, never above the model's maximum."""
    if endpoint.endswith("/embeddings"):
        return 0
    keys = ("max_output_tokens",) if endpoint.endswith("/responses") else ("max_completion_tokens", "max_tokens")
    for key in keys:
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return min(default, model_max) if model_max else default


@dataclass(frozen=True)
class RequestCost:
    """What one request may consume: ``prompt_tokens`` in, up to ``output_tokens`` out per choice, ``n`` choices."""

    prompt_tokens: int
    output_tokens: int
    n: int = 1

    @property
    def reserved(self) -> int:
        """Tokens the gate (and OpenAI) counts against TPM at admission."""
        return self.prompt_tokens + self.output_tokens * self.n


def estimate(endpoint: str, body: dict[str, Any], tokenizer: str, default_output: int, model_max: int) -> RequestCost:
    n = body.get("n", 1)
    choices = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
    return RequestCost(
        count_prompt(endpoint, body, tokenizer),
        output_reservation(endpoint, body, default_output, model_max),
        choices,
    )
