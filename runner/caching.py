"""Prompt caching as OpenAI describes it: exact prefixes of at least 1,024 tokens, in 128-token steps, seen before.

The simulator bills cached input by it; the planner runs a job's prompts through it to expect the cached share."""

from __future__ import annotations

import collections
import hashlib
import json
from typing import Any

from runner.encodings import encoding

__all__ = ["CACHE_MIN", "CACHE_STEP", "PromptCache", "cacheable"]

CACHE_MIN = 1024  # OpenAI caches prompts from 1,024 tokens ...
CACHE_STEP = 128  # ... in steps of 128


def cacheable(prefix: int) -> int:
    """Of a prefix of ``prefix`` tokens seen before, how many a hit serves from the cache: 1,024 + 128 k, or 0."""
    if prefix < CACHE_MIN:
        return 0
    return CACHE_MIN + (prefix - CACHE_MIN) // CACHE_STEP * CACHE_STEP


class PromptCache:
    """Remembers prefixes (per model) of the prompts it has seen; the oldest are forgotten past ``size``."""

    def __init__(self, size: int = 200_000) -> None:
        self.size = size
        self.prefixes: collections.OrderedDict[bytes, None] = collections.OrderedDict()

    def cached(self, body: dict[str, Any], model: str, tokenizer: str, prompt: int) -> int:
        """How many of the prompt's ``prompt`` tokens are a prefix seen before (0 under 1,024)."""
        if prompt < CACHE_MIN:
            return 0
        source = body.get("messages") if "messages" in body else [body.get("instructions"), body.get("input")]
        ids = encoding(tokenizer).encode_ordinary(json.dumps(source, separators=(",", ":")))
        cached = 0
        digest = hashlib.sha256(model.encode())
        start = 0
        for end in range(CACHE_MIN, len(ids) + 1, CACHE_STEP):
            digest.update(repr(ids[start:end]).encode())
            start = end
            key = digest.digest()
            if key in self.prefixes:
                cached = end
                self.prefixes.move_to_end(key)
            else:
                self.prefixes[key] = None
        while len(self.prefixes) > self.size:
            self.prefixes.popitem(last=False)
        # the tail past the last matching block is never cached (in the prompt's own count), and what is cached
        # comes in OpenAI's steps: 1,024 + 128 k
        return cacheable(min(cached, prompt - (len(ids) - cached)))
