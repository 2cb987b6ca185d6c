"""A run's Batch API batches and their intent log.

A batch row moves ``packed -> uploading -> uploaded -> creating -> submitted -> done`` (``BATCH_MOVES``).
``uploading`` and ``creating`` are intents, written *before* the call to the API: a process killed after the call
but before recording its result leaves the intent behind, and the next run reconciles it with the server (the file
by name, the batch by its metadata) instead of uploading or creating twice. Every move is compare-and-set.

Requests of a batch are ``batched`` with ``batch_id`` pointing here; collecting a finished batch moves each of them
(COLLECT, REJECT or REQUEUE) and the batch to ``done``, in one transaction with the results and spend rows.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

from runner.errors import StateConflict
from runner.store.base import Base, Part
from runner.store.outcomes import Outcome
from runner.store.requests import OUTPUT_ALLOWANCE
from runner.store.results import Results
from runner.store.states import Move

__all__ = ["BATCH_MOVES", "QUEUED", "BatchRow", "BatchState", "Batches", "PackedLine"]


class BatchState(StrEnum):
    PACKED = "packed"  # its file is written in the spool
    UPLOADING = "uploading"  # intent: an upload may have happened
    UPLOADED = "uploaded"  # the server holds the file (input_file_id)
    CREATING = "creating"  # intent: a batch may have been created
    SUBMITTED = "submitted"  # the server runs it (batch_id)
    DONE = "done"  # collected: every request settled


BATCH_MOVES: dict[BatchState, frozenset[BatchState]] = {
    BatchState.PACKED: frozenset({BatchState.UPLOADING, BatchState.DONE}),  # done: its file lost, or refused
    BatchState.UPLOADING: frozenset({BatchState.UPLOADED, BatchState.PACKED}),  # packed: the upload did not happen
    BatchState.UPLOADED: frozenset({BatchState.CREATING, BatchState.DONE}),  # done: the server refused to create it
    BatchState.CREATING: frozenset({BatchState.SUBMITTED, BatchState.UPLOADED}),  # uploaded: no batch was created
    BatchState.SUBMITTED: frozenset({BatchState.DONE}),
    BatchState.DONE: frozenset(),
}
QUEUED = tuple(s for s in BatchState if s is not BatchState.DONE)  # counted against the batch queue limit


@dataclass(frozen=True)
class BatchRow:
    id: int
    run: str
    chunk: int
    model: str
    endpoint: str
    state: BatchState
    spool_path: str
    sha256: str
    bytes: int
    requests: int
    est_tokens: int
    input_file_id: str | None
    batch_id: str | None
    status: str | None
    output_file_id: str | None
    error_file_id: str | None
    counts: str | None
    note: str | None
    polls: int
    next_poll_at: float
    created_at: float
    updated_at: float
    turnaround: float | None  # seconds from the server's created_at to completed_at, once completed

    @property
    def filename(self) -> str:
        """The name the file is uploaded under (after the store id); reconciliation finds an upload by it."""
        return f"{self.run}-{self.chunk:05d}-{self.sha256[:12]}.jsonl"


class PackedLine(NamedTuple):
    """A pending request as packing reads it (a named tuple: a million of them are made in a pack)."""

    id: int
    custom_id: str
    body: str
    prompt_tokens: int
    output_tokens: int
    n: int


def _row(values: tuple[Any, ...]) -> BatchRow:
    row = BatchRow(*values)
    return BatchRow(**{**row.__dict__, "state": BatchState(row.state)})


class Batches(Part):
    """``store.batches``: the Batch API chunks of each run through their life, and the requests they hold; a
    finished batch's lines are recorded with their results (``results``)."""

    def __init__(self, base: Base, results: Results) -> None:
        super().__init__(base)
        self.results = results

    # -- reading ---------------------------------------------------------------------------------------------------

    def batch_rows(self, run: str, states: Iterable[BatchState] = tuple(BatchState)) -> list[BatchRow]:
        wanted = tuple(s.value for s in states)
        marks = ",".join("?" * len(wanted))
        cur = self.conn.execute(
            f"SELECT * FROM batches WHERE run=? AND state IN ({marks}) ORDER BY chunk", (run, *wanted)
        )
        return [_row(r) for r in cur]

    def batch(self, row_id: int) -> BatchRow:
        return _row(self.conn.execute("SELECT * FROM batches WHERE id=?", (row_id,)).fetchone())

    def queued_tokens(self, model: str, run: str | None = None) -> int:
        """Estimated tokens of the unfinished batches of ``model`` in this database: all of ``run``'s, and other
        runs' from the last 25 hours (the queue is the organisation's; older batches ended on the server, even
        if their run has not been resumed to collect them)."""
        marks = ",".join("?" * len(QUEUED))
        row = self.conn.execute(
            f"SELECT coalesce(sum(est_tokens), 0) FROM batches WHERE model=? AND state IN ({marks})"
            " AND (run=? OR created_at>?)",
            (model, *QUEUED, run, self.clock() - 25 * 3600),
        ).fetchone()
        return int(row[0])

    def next_chunk(self, run: str) -> int:
        return int(
            self.conn.execute("SELECT coalesce(max(chunk), 0) + 1 FROM batches WHERE run=?", (run,)).fetchone()[0]
        )

    def batch_members(self, row: BatchRow) -> list[tuple[int, str, int]]:
        """``(request id, custom_id, resubmits)`` of the requests still batched in ``row``, in file order."""
        return [
            (int(a), str(b), int(c))
            for a, b, c in self.conn.execute(
                "SELECT id, custom_id, resubmits FROM requests WHERE batch_id=? AND state='batched' ORDER BY id",
                (row.id,),
            )
        ]

    def batched_tokens(self, run: str) -> list[tuple[str, int, int]]:
        """``(model, prompt tokens, output maximum x n)`` summed over the requests of ``run`` inside batches: what
        their worst case is reckoned from."""
        return [
            (str(m), int(p), int(o))
            for m, p, o in self.conn.execute(
                f"SELECT model, sum(prompt_tokens), sum({OUTPUT_ALLOWANCE}) FROM requests"
                " WHERE run=? AND state='batched' GROUP BY model",
                (run,),
            )
        ]

    # -- packing ---------------------------------------------------------------------------------------------------

    def pending_groups(self, run: str, due: float) -> list[tuple[str, str]]:
        """``(model, endpoint)`` of the requests of ``run`` that are pending and due: one batch file holds one."""
        return [
            (str(m), str(e))
            for m, e in self.conn.execute(
                "SELECT DISTINCT model, endpoint FROM requests WHERE run=? AND state='pending' AND not_before<=?",
                (run, due),
            )
        ]

    def pending_lines(
        self, run: str, model: str, endpoint: str, due: float, after: int, upto: int | None = None
    ) -> Iterator[PackedLine]:
        """Pending, due requests of one group with an id above ``after`` (and up to ``upto``: a split run's batch
        lane), in id order, streamed from SQLite."""
        cursor: sqlite3.Cursor = self.conn.execute(
            "SELECT id, custom_id, body, prompt_tokens, output_tokens, n FROM requests NOT INDEXED"
            " WHERE id>? AND id<=? AND run=? AND model=? AND endpoint=? AND state='pending' AND not_before<=?"
            " ORDER BY id",
            (after, upto or 2**62, run, model, endpoint, due),
        )
        try:
            for values in cursor:
                yield PackedLine._make(values)
        finally:
            cursor.close()

    def first_due(self, run: str, due: float, upto: int | None = None) -> tuple[str, PackedLine] | None:
        """The model and line of the first pending, due request of ``run`` (up to ``upto``), if any."""
        for model, endpoint in self.pending_groups(run, due):
            for line in self.pending_lines(run, model, endpoint, due, 0, upto):
                return model, line
        return None

    def add_batch(
        self,
        run: str,
        chunk: int,
        group: tuple[str, str],
        spool_path: str,
        sha256: str,
        nbytes: int,
        ids: tuple[int, int, int],
        est_tokens: int,
        due: float,
    ) -> int:
        """Record a packed batch of ``group`` (model, endpoint) holding ``ids`` (count, first id, last id), and move
        its requests pending -> batched (PACK), in one transaction."""
        model, endpoint = group
        requests, first_id, last_id = ids
        now = self.clock()
        with self.transaction():
            row_id = int(
                self.conn.execute(
                    "INSERT INTO batches(run, chunk, model, endpoint, state, spool_path, sha256, bytes, requests,"
                    " est_tokens, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) RETURNING id",
                    (run, chunk, model, endpoint, BatchState.PACKED.value, spool_path, sha256, nbytes, requests,
                     est_tokens, now, now),
                ).fetchone()[0]
            )  # fmt: skip
            moved = self._move(
                Move.PACK,
                "run=? AND model=? AND endpoint=? AND not_before<=? AND id BETWEEN ? AND ?",
                (run, model, endpoint, due, first_id, last_id),
                "batch_id=?",
                (row_id,),
            )
            if moved != requests:
                raise StateConflict(f"packing chunk {chunk} of {run!r}: {moved} requests moved, {requests} packed")
        return row_id

    # -- a batch through its life ----------------------------------------------------------------------------------

    def move_batch(self, row: BatchRow, to: BatchState, **fields: Any) -> BatchRow:
        """Compare-and-set ``row`` from its state to ``to`` (allowed by ``BATCH_MOVES``), setting ``fields``."""
        if to not in BATCH_MOVES[row.state]:
            raise StateConflict(f"batch chunk {row.chunk} of {row.run!r}: no move {row.state} -> {to}")
        sets = "".join(f", {k}=?" for k in fields)
        with self.transaction():
            changed = self.conn.execute(
                f"UPDATE batches SET state=?, updated_at=?{sets} WHERE id=? AND state=?",
                (to.value, self.clock(), *fields.values(), row.id, row.state.value),
            ).rowcount
        if changed != 1:
            raise StateConflict(f"batch chunk {row.chunk} of {row.run!r}: not {row.state} (-> {to})")
        return self.batch(row.id)

    def note_poll(self, row: BatchRow, status: str, counts: dict[str, Any] | None, next_poll_at: float) -> None:
        with self.transaction():
            self.conn.execute(
                "UPDATE batches SET status=?, counts=?, polls=polls+1, next_poll_at=?, updated_at=? WHERE id=?",
                (status, json.dumps(counts) if counts else None, next_poll_at, self.clock(), row.id),
            )

    def poll_now(self, run: str) -> None:
        """Make every submitted batch of ``run`` due for a poll (a restart looks at once)."""
        with self.transaction():
            self.conn.execute("UPDATE batches SET next_poll_at=0 WHERE run=? AND state='submitted'", (run,))

    def collect_batch(
        self,
        row: BatchRow,
        outcomes: list[Outcome],
        requeue: list[tuple[int, bool, str]],
        status: str,
        note: str,
        counts: dict[str, Any] | None,
        turnaround: float | None = None,
    ) -> None:
        """Settle a finished batch in one transaction: results and spend of its lines (COLLECT or REJECT),
        requeued requests (``(request id, counts as a resubmission, reason)``), and the batch row ``done``
        (with the server's ``turnaround``, creation to completion, in seconds, when it completed)."""
        if BatchState.DONE not in BATCH_MOVES[row.state]:
            raise StateConflict(f"batch chunk {row.chunk} of {row.run!r}: cannot be done from {row.state}")
        with self.transaction():
            for o in outcomes:
                what = f"request {o.custom_id!r} batched in chunk {row.chunk}"
                self._move_one(o.move, o.request_id, what, "batch_id=?", (row.id,), last_error=o.error_message)
                self.results.insert(o, row.run, "batch")
            for request_id, counted, reason in requeue:
                self._move_one(
                    Move.REQUEUE, request_id, f"request {request_id} batched in chunk {row.chunk}", "batch_id=?",
                    (row.id,), batch_id=None, last_error=reason,
                )  # fmt: skip
                if counted:
                    self.conn.execute("UPDATE requests SET resubmits=resubmits+1 WHERE id=?", (request_id,))
            changed = self.conn.execute(
                "UPDATE batches SET state=?, status=?, note=?, counts=?, updated_at=?, turnaround=? WHERE id=?"
                " AND state=?",
                (BatchState.DONE.value, status, note, json.dumps(counts) if counts else None, self.clock(),
                 turnaround, row.id, row.state.value),
            ).rowcount  # fmt: skip
            if changed != 1:
                raise StateConflict(f"batch chunk {row.chunk} of {row.run!r}: not {row.state} (-> done)")
