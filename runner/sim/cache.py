"""The simulator's prompt cache, as OpenAI describes it: a prompt of 1,024 tokens or more whose prefix was seen
before has that prefix served from cache, counted in 1,024 + 128 k token steps. Its own code (the client's
planner has its own expectation of the same rule, which this judges)."""

from __future__ import annotations

import hashlib
import json
from array import array
from collections import OrderedDict
from typing import Any

import tiktoken

__all__ = ["PrefixCache"]

FIRST, STEP = 1024, 128


class PrefixCache:
    """Prefixes seen per model, the least recently used forgotten past ``capacity``."""

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self.seen: OrderedDict[bytes, None] = OrderedDict()

    def hit(self, model: str, body: dict[str, Any], enc: tiktoken.Encoding, prompt: int) -> int:
        """Cached tokens of this request's ``prompt`` tokens; its prefixes are remembered for the next one."""
        if prompt < FIRST:
            return 0
        source = body["messages"] if "messages" in body else [body.get("instructions"), body.get("input")]
        ids = array("I", enc.encode_ordinary(json.dumps(source, separators=(",", ":"))))
        running = hashlib.blake2b(model.encode(), digest_size=16)
        best, done = 0, 0
        for end in range(FIRST, len(ids) + 1, STEP):
            running.update(ids[done:end].tobytes())
            done = end
            key = running.copy().digest()
            if key in self.seen:
                self.seen.move_to_end(key)
                best = end
            else:
                self.seen[key] = None
        while len(self.seen) > self.capacity:
            self.seen.popitem(last=False)
        # what is cached is a prefix of the prompt the usage reports, in whole steps
        most = FIRST + (prompt - FIRST) // STEP * STEP
        return min(best, most)
