"""Pack pending requests into Batch API input files, under every limit, streaming.

A file holds one model and one endpoint, at most 50,000 requests and under 200 MB (and, for endpoints whose row
caps them, at most that many inputs), and its estimated tokens fit what is left of the model's batch queue limit
(``budget``). Rows are read in id order straight from SQLite and written line by line (the stored body is already
JSON, so it is not parsed again unless its inputs must be counted): memory stays flat whatever the job's size.
Each file is recorded, and its requests moved to ``batched``, in one transaction after it is written and closed.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from runner.budget import Budget, worst_case
from runner.endpoints import endpoint as endpoint_row
from runner.limits import ModelInfo
from runner.store import Store

__all__ = ["MAX_BYTES", "MAX_REQUESTS", "Packed", "pack"]

MAX_REQUESTS = 50_000
_quote = json.encoder.encode_basestring_ascii  # what json.dumps does for a str, without its dispatch
MAX_BYTES = 200 * 1024 * 1024 - 1  # "under 200 MB"


@dataclass(frozen=True)
class Packed:
    row_id: int
    model: str
    requests: int
    est_tokens: int
    bytes: int


@dataclass(frozen=True)
class _Limits:
    remaining: int | None  # queue tokens still free for the model (None: no limit)
    count_output: bool
    max_requests: int
    max_bytes: int
    max_inputs: int | None
    upto: int | None = None  # only requests with an id up to this (a split run's batch lane)


@dataclass(frozen=True)
class _Written:
    count: int
    nbytes: int
    tokens: int
    digest: str
    first: int
    last: int


def pack(
    store: Store,
    run: str,
    spool: Path,
    budget: Callable[[str], int | None],
    count_output: bool = True,
    max_requests: int = MAX_REQUESTS,
    max_bytes: int = MAX_BYTES,
    now: Callable[[], float] = time.time,
    max_inputs: int | None = None,
    spend: tuple[Budget, Callable[[str], ModelInfo]] | None = None,
    upto: int | None = None,
) -> list[Packed]:
    """Pack what fits now; ``budget(model)`` is the queue tokens still free for ``model`` (None: no limit).
    ``max_inputs`` caps inputs per file below what the endpoint's row allows. ``spend``: the run's budget and how
    to find a model's prices; each request's worst case at batch prices is reserved as it is packed, and packing
    stops where the next one would not fit. ``upto``: only requests with an id up to it (a split run's batch lane)."""
    spool.mkdir(mode=0o700, parents=True, exist_ok=True)  # the files hold prompts: private to their owner
    due = now()
    packed: list[Packed] = []
    for model, path in store.pending_groups(run, due):
        remaining = budget(model)
        allowed = endpoint_row(path).max_inputs
        inputs = min(x for x in (allowed, max_inputs) if x is not None) if allowed is not None else None
        after = 0
        while remaining is None or remaining > 0:
            chunk = store.next_chunk(run)
            file = spool / f"{run}-{chunk:05d}.jsonl"
            limits = _Limits(remaining, count_output, max_requests, max_bytes, inputs, upto)
            money = (spend[0], spend[1](model)) if spend else None
            written = _write(store, run, (model, path), due, after, file, limits, money)
            if written is None:
                file.unlink(missing_ok=True)
                break
            ids = (written.count, written.first, written.last)
            row_id = store.add_batch(run, chunk, (model, path), str(file), written.digest, written.nbytes, ids,
                                     written.tokens, due)  # fmt: skip
            packed.append(Packed(row_id, model, written.count, written.tokens, written.nbytes))
            after = written.last
            if remaining is not None:
                remaining -= written.tokens
    return packed


def _write(
    store: Store,
    run: str,
    group: tuple[str, str],
    due: float,
    after: int,
    file: Path,
    limits: _Limits,
    money: tuple[Budget, ModelInfo] | None,
) -> _Written | None:
    model, path = group
    row = endpoint_row(path)
    head = f',"method":"POST","url":"{path}","body":'.encode()
    digest = hashlib.sha256()
    count = nbytes = tokens = inputs = 0
    first = last = 0
    with file.open("wb", buffering=1 << 20) as f:
        for request in store.pending_lines(run, model, path, due, after, limits.upto):
            est = request.prompt_tokens + (request.output_tokens * request.n if limits.count_output else 0)
            line = b'{"custom_id":' + _quote(request.custom_id).encode() + head + request.body.encode() + b"}\n"
            if count and (count >= limits.max_requests or nbytes + len(line) > limits.max_bytes):
                break
            if limits.remaining is not None and tokens + est > limits.remaining:
                break
            if limits.max_inputs is not None:
                size = row.inputs(json.loads(request.body))
                if count and inputs + size > limits.max_inputs:
                    break
                inputs += size
            if money is not None:
                budget, info = money
                if not budget.reserve(
                    worst_case(info, request.prompt_tokens, request.output_tokens, request.n, "batch")
                ):
                    break
            f.write(line)
            digest.update(line)
            count += 1
            nbytes += len(line)
            tokens += est
            first = first or request.id
            last = request.id
    if not count:
        return None
    return _Written(count, nbytes, tokens, digest.hexdigest(), first, last)
