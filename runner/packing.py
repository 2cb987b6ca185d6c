"""Pack pending requests into Batch API input files, under every limit, streaming.

A file holds one model and one endpoint, at most 50,000 requests and under 200 MB, and its estimated tokens fit
what is left of the model's batch queue limit (``budget``). Rows are read in id order straight from SQLite and
written line by line (the stored body is already JSON, so it is not parsed again): memory stays flat whatever
the job's size. Each file is recorded, and its requests moved to ``batched``, in one transaction after it is
written and closed.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from runner.batchbook import BatchBook

__all__ = ["MAX_BYTES", "MAX_REQUESTS", "Packed", "pack"]

MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024 - 1  # "under 200 MB"
MAX_EMBEDDING_INPUTS = 50_000  # an embeddings batch holds at most this many inputs, over all its requests


@dataclass(frozen=True)
class Packed:
    row_id: int
    model: str
    requests: int
    est_tokens: int
    bytes: int


def pack(
    book: BatchBook,
    run: str,
    spool: Path,
    budget: Callable[[str], int | None],
    count_output: bool = True,
    max_requests: int = MAX_REQUESTS,
    max_bytes: int = MAX_BYTES,
    now: Callable[[], float] = time.time,
    max_inputs: int = MAX_EMBEDDING_INPUTS,
) -> list[Packed]:
    """Pack what fits now; ``budget(model)`` is the queue tokens still free for ``model`` (None: no limit)."""
    conn = book.conn
    spool.mkdir(parents=True, exist_ok=True)
    due = now()
    groups = conn.execute(
        "SELECT DISTINCT model, endpoint FROM requests WHERE run=? AND state='pending' AND not_before<=?", (run, due)
    ).fetchall()
    packed: list[Packed] = []
    for model, endpoint in groups:
        remaining = budget(model)
        after = 0
        while remaining is None or remaining > 0:
            chunk = book.next_chunk(run)
            path = spool / f"{run}-{chunk:05d}.jsonl"
            inputs = max_inputs if endpoint == "/v1/embeddings" else None
            written = _write(
                conn, run, model, endpoint, due, after, path, remaining, count_output, max_requests, max_bytes, inputs
            )
            if written is None:
                path.unlink(missing_ok=True)
                break
            count, nbytes, tokens, digest, first, last = written
            row_id = book.add(run, chunk, model, endpoint, str(path), digest, nbytes, count, tokens, first, last, due)
            packed.append(Packed(row_id, model, count, tokens, nbytes))
            after = last
            if remaining is not None:
                remaining -= tokens
    return packed


def _write(
    conn: sqlite3.Connection,
    run: str,
    model: str,
    endpoint: str,
    due: float,
    after: int,
    path: Path,
    remaining: int | None,
    count_output: bool,
    max_requests: int,
    max_bytes: int,
    max_inputs: int | None,
) -> tuple[int, int, int, str, int, int] | None:
    cursor = conn.execute(
        "SELECT id, custom_id, body, prompt_tokens, output_tokens, n FROM requests NOT INDEXED"
        " WHERE id>? AND run=? AND model=? AND endpoint=? AND state='pending' AND not_before<=? ORDER BY id",
        (after, run, model, endpoint, due),
    )
    head = f',"method":"POST","url":"{endpoint}","body":'.encode()
    digest = hashlib.sha256()
    count = nbytes = tokens = inputs = 0
    first = last = 0
    try:
        with path.open("wb", buffering=1 << 20) as f:
            for request_id, custom_id, body, prompt, output, n in cursor:
                est = prompt + (output * n if count_output else 0)
                line = b'{"custom_id":' + json.dumps(custom_id).encode() + head + body.encode() + b"}\n"
                if count and (count >= max_requests or nbytes + len(line) > max_bytes):
                    break
                if remaining is not None and tokens + est > remaining:
                    break
                if max_inputs is not None:
                    given = json.loads(body).get("input")
                    size = len(given) if isinstance(given, list) and given and not isinstance(given[0], int) else 1
                    if count and inputs + size > max_inputs:
                        break
                    inputs += size
                f.write(line)
                digest.update(line)
                count += 1
                nbytes += len(line)
                tokens += est
                first = first or request_id
                last = request_id
    finally:
        cursor.close()
    if not count:
        return None
    return count, nbytes, tokens, digest.hexdigest(), first, last
