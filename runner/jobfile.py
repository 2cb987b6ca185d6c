"""Read an input JSONL into the store, streaming, with a clear error for the first bad line.

A line is the Batch API's input line (``runner.inputline`` reads one), so the same file runs in sync or batch mode
unchanged. A big input is parsed on every core (``runner.parsers``) while this process stores.

Queue semantics: the run remembers how many bytes of the input it stored and their SHA-256. If the file still
starts with those bytes, only the lines after them are read (appended work); otherwise every line is checked
against what is stored. A custom_id stored with another body, or repeated within the file, is an error. The whole
ingest is one transaction: on an error nothing of this pass is kept.

Requests that can never succeed as written (longer than the model's context window) are stored and marked
failed with the reason, so they show in results and the exit code; they are never sent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.errors import ConfigError, InputError
from runner.inputline import LineReader
from runner.limits import Limits
from runner.parsers import CHUNK_LINES, PARALLEL_FROM, Chunk, children_for, parsed
from runner.rows import RequestRow, RowValues
from runner.store import Store

__all__ = ["IngestReport", "ingest", "read"]

CHECKPOINT_AFTER = 10_000  # lines added by one ingest after which the WAL is folded into the database


@dataclass
class IngestReport:
    added: int = 0
    lines: int = 0
    refused: list[tuple[int, str, str]] = field(default_factory=list[tuple[int, str, str]])  # line, id, reason


def ingest(
    store: Store,
    run: str,
    path: str | Path,
    limits: Limits,
    default_model: str | None = None,
    parallel_from: int = PARALLEL_FROM,
) -> IngestReport:
    """Store the new lines of ``path`` as requests of ``run``; raises InputError naming the first bad line. From
    ``parallel_from`` bytes to read, lines are parsed in child processes (one per core) while this one stores."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such input file")
    info = store.runs.get(run) or {}
    report = IngestReport()
    watermark = store.requests.last_request_id()
    with path.open("rb") as f, store.transaction():
        digest, line_no = _resume_point(f, info)
        children = children_for(path.stat().st_size - f.tell(), parallel_from)
        reader = LineReader(str(path), limits, default_model)
        for rows in parsed(_chunks(f, digest, line_no, report), reader, children):
            refused = [(row[1], row[0], refusal) for row, refusal in rows if refusal]  # (line, custom_id, reason)
            report.refused.extend(refused)
            refusals = {custom_id: refusal for _, custom_id, refusal in refused}
            report.added += _store(store, run, str(path), [row for row, _ in rows], watermark, refusals)
        store.runs.set_ingested(run, f.tell(), digest.hexdigest(), report.lines + line_no)
    if report.added >= CHECKPOINT_AFTER:
        store.checkpoint()
    return report


def read(path: str | Path, limits: Limits, default_model: str | None = None) -> Iterator[tuple[RequestRow, str]]:
    """Every request of ``path`` as ingest would store it, with the reason it could never be sent ("" if none),
    without storing anything (the planner reads a job this way). Raises InputError naming the first bad line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such input file")
    parse = LineReader(str(path), limits, default_model)
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, 1):
            if raw.strip():
                yield parse(line_no, raw)


def _resume_point(f: Any, info: dict[str, Any]) -> tuple[Any, int]:
    """Hash of the already-stored prefix and its line count, with ``f`` positioned after it; else the start."""
    stored_bytes, stored_hash = int(info.get("ingest_bytes") or 0), info.get("ingest_sha256")
    if stored_bytes and stored_hash:
        digest = hashlib.sha256()
        remaining = stored_bytes
        while remaining:
            block = f.read(min(remaining, 1 << 20))
            if not block:
                break
            digest.update(block)
            remaining -= len(block)
        if not remaining and digest.hexdigest() == stored_hash:
            return digest, int(info.get("ingest_lines") or 0)
    f.seek(0)
    return hashlib.sha256(), 0


def _chunks(f: Any, digest: Any, before: int, report: IngestReport) -> Iterator[Chunk]:
    """The lines after the resume point in chunks, hashed and counted as they are read."""
    lines: list[bytes] = []
    for raw in f:
        digest.update(raw)
        lines.append(raw)
        if len(lines) == CHUNK_LINES:
            yield before, lines
            before += len(lines)
            report.lines += len(lines)
            lines = []
    if lines:
        yield before, lines
        report.lines += len(lines)


def _store(store: Store, run: str, path: str, rows: list[RowValues], watermark: int, refusals: dict[str, str]) -> int:
    if not rows:
        return 0
    inserted, conflicts = store.requests.add_requests(run, rows)
    for row, stored_id, stored_line, stored_hash in conflicts:
        if stored_id > watermark:
            raise InputError(path, row.line, f"duplicate custom_id {row.custom_id!r} (also on line {stored_line})")
        if stored_hash != row.body_hash:
            raise InputError(
                path,
                row.line,
                f"custom_id {row.custom_id!r} is already stored (line {stored_line}) with a different body; "
                "give the new request its own custom_id",
            )
    for custom_id, reason in refusals.items():
        if (store.requests.request_id(run, custom_id) or 0) > watermark:
            store.requests.refuse(run, custom_id, "request_too_large", reason)
    return inserted
