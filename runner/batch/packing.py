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
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.budget import Budget, worst_case
from runner.endpoints import endpoint as endpoint_row
from runner.limits import ModelInfo
from runner.store import Store
from runner.tokens import admission_tokens

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
    recorded: list[tuple[Future[int], str, _Written]] = []
    chunk = store.batches.next_chunk(run)
    with _Recorder(store) as recorder:
        for model, path in store.batches.pending_groups(run, due):
            remaining = budget(model)
            allowed = endpoint_row(path).max_inputs
            inputs = min(x for x in (allowed, max_inputs) if x is not None) if allowed is not None else None
            after = 0
            while remaining is None or remaining > 0:
                file = spool / f"{run}-{chunk:05d}.jsonl"
                limits = _Limits(remaining, count_output, max_requests, max_bytes, inputs, upto)
                money = (spend[0], spend[1](model)) if spend else None
                written = _write(store, run, (model, path), due, after, file, limits, money)
                if written is None:
                    file.unlink(missing_ok=True)
                    break
                ids = (written.count, written.first, written.last)
                row = recorder.add(run, chunk, (model, path), str(file), written.digest, written.nbytes, ids,
                                   written.tokens, due)  # fmt: skip
                recorded.append((row, model, written))
                chunk += 1
                after = written.last
                if remaining is not None:
                    remaining -= written.tokens
    return [Packed(row.result(), model, w.count, w.tokens, w.nbytes) for row, model, w in recorded]


class _Recorder:
    """Records packed files (``Store.add_batch``: the batch row, and its requests moved to batched) on a connection
    of its own in one thread, while the next file is written. Moving 50,000 requests rewrites their rows, most of
    a pack's time, and SQLite lets go of the GIL meanwhile. Files are recorded in order; the connection is opened
    with the first file and the exit waits for every record (an error in one is raised by ``Future.result``)."""

    def __init__(self, store: Store) -> None:
        self.path, self.clock = store.path, store.clock
        self.pool: ThreadPoolExecutor | None = None
        self.store: Store | None = None  # used only in the pool's thread
        self.failed: BaseException | None = None  # a record that failed: the ones after it are not made

    def __enter__(self) -> _Recorder:
        return self

    def add(self, *args: Any) -> Future[int]:
        if self.pool is None:
            self.pool = ThreadPoolExecutor(1, thread_name_prefix="runner-pack-recorder")
        return self.pool.submit(self._add, *args)

    def _add(self, *args: Any) -> int:
        if self.failed is not None:
            raise self.failed
        try:
            if self.store is None:
                self.store = Store(self.path, clock=self.clock)
            return self.store.batches.add_batch(*args)
        except BaseException as exc:
            self.failed = exc
            raise

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.submit(self._close).result()
            self.pool.shutdown()

    def _close(self) -> None:
        if self.store is not None:
            self.store.close()


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
        for request in store.batches.pending_lines(run, model, path, due, after, limits.upto):
            est = admission_tokens(
                request.prompt_tokens, request.output_tokens if limits.count_output else 0, request.n
            )
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
