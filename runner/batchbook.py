"""The batch book: a run's Batch API batches and their intent log, in the runner database.

A batch row moves ``packed -> uploading -> uploaded -> creating -> submitted -> done``. ``uploading`` and
``creating`` are intents, written *before* the call to the API: a process killed after the call but before
recording its result leaves the intent behind, and the next run reconciles it with the server (the file by name,
the batch by its metadata) instead of uploading or creating twice. Every move is compare-and-set.

Requests of a batch are ``batched`` with ``batch_id`` pointing here; collecting a finished batch moves each of
them to succeeded, failed or back to pending, and the batch to ``done``, in one transaction with the results and
spend rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from runner.errors import StateConflict
from runner.store import Outcome, Store

__all__ = ["BatchBook", "BatchRow"]

STATES = ("packed", "uploading", "uploaded", "creating", "submitted", "done")
QUEUED = ("packed", "uploading", "uploaded", "creating", "submitted")


@dataclass(frozen=True)
class BatchRow:
    id: int
    run: str
    chunk: int
    model: str
    endpoint: str
    state: str
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

    @property
    def filename(self) -> str:
        """The name the file is uploaded under; reconciliation finds an upload by it."""
        return f"runner-{self.run}-{self.chunk:05d}-{self.sha256[:12]}.jsonl"


class BatchBook:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.conn = store.conn

    @property
    def store_id(self) -> str:
        """A random id of this database, written into each batch's metadata."""
        return str(self.conn.execute("SELECT value FROM meta WHERE key='store_id'").fetchone()[0])

    def rows(self, run: str, states: Iterable[str] = STATES) -> list[BatchRow]:
        wanted = tuple(states)
        marks = ",".join("?" * len(wanted))
        cur = self.conn.execute(
            f"SELECT * FROM batches WHERE run=? AND state IN ({marks}) ORDER BY chunk", (run, *wanted)
        )
        return [BatchRow(*row) for row in cur]

    def get(self, row_id: int) -> BatchRow:
        return BatchRow(*self.conn.execute("SELECT * FROM batches WHERE id=?", (row_id,)).fetchone())

    def queued_tokens(self, model: str, run: str | None = None) -> int:
        """Estimated tokens of the unfinished batches of ``model`` in this database: all of ``run``'s, and other
        runs' from the last 25 hours (the queue is the organisation's; older batches ended on the server, even
        if their run has not been resumed to collect them)."""
        marks = ",".join("?" * len(QUEUED))
        since = self.store.clock() - 25 * 3600
        row = self.conn.execute(
            f"SELECT coalesce(sum(est_tokens), 0) FROM batches WHERE model=? AND state IN ({marks})"
            " AND (run=? OR created_at>?)",
            (model, *QUEUED, run, since),
        ).fetchone()
        return int(row[0])

    def next_chunk(self, run: str) -> int:
        return int(
            self.conn.execute("SELECT coalesce(max(chunk), 0) + 1 FROM batches WHERE run=?", (run,)).fetchone()[0]
        )

    def add(
        self,
        run: str,
        chunk: int,
        model: str,
        endpoint: str,
        spool_path: str,
        sha256: str,
        nbytes: int,
        requests: int,
        est_tokens: int,
        first_id: int,
        last_id: int,
        due: float,
    ) -> int:
        """Record a packed batch and move its requests pending -> batched, in one transaction."""
        now = self.store.clock()
        with self.store.db.atomic():
            row_id = int(
                self.conn.execute(
                    "INSERT INTO batches(run, chunk, model, endpoint, state, spool_path, sha256, bytes, requests,"
                    " est_tokens, created_at, updated_at) VALUES (?,?,?,?,'packed',?,?,?,?,?,?,?) RETURNING id",
                    (run, chunk, model, endpoint, spool_path, sha256, nbytes, requests, est_tokens, now, now),
                ).fetchone()[0]
            )
            moved = self.conn.execute(
                "UPDATE requests SET state='batched', batch_id=?, updated_at=? WHERE run=? AND model=? AND endpoint=?"
                " AND state='pending' AND not_before<=? AND id BETWEEN ? AND ?",
                (row_id, now, run, model, endpoint, due, first_id, last_id),
            ).rowcount
            if moved != requests:
                raise StateConflict(f"packing chunk {chunk} of {run!r}: {moved} requests moved, {requests} packed")
        return row_id

    def move(self, row: BatchRow, to: str, **fields: Any) -> BatchRow:
        """Compare-and-set ``row`` from its state to ``to``, setting ``fields``."""
        if to not in STATES:
            raise ValueError(to)
        sets = ", ".join(f"{k}=?" for k in fields)
        now = self.store.clock()
        with self.store.db.atomic():
            changed = self.conn.execute(
                f"UPDATE batches SET state=?, updated_at=?{', ' + sets if sets else ''} WHERE id=? AND state=?",
                (to, now, *fields.values(), row.id, row.state),
            ).rowcount
        if changed != 1:
            raise StateConflict(f"batch chunk {row.chunk} of {row.run!r}: not {row.state} (-> {to})")
        return self.get(row.id)

    def note_poll(self, row: BatchRow, status: str, counts: dict[str, Any] | None, next_poll_at: float) -> None:
        with self.store.db.atomic():
            self.conn.execute(
                "UPDATE batches SET status=?, counts=?, polls=polls+1, next_poll_at=?, updated_at=? WHERE id=?",
                (status, json.dumps(counts) if counts else None, next_poll_at, self.store.clock(), row.id),
            )

    def poll_now(self, run: str) -> None:
        """Make every submitted batch of ``run`` due for a poll (a restart looks at once)."""
        with self.store.db.atomic():
            self.conn.execute("UPDATE batches SET next_poll_at=0 WHERE run=? AND state='submitted'", (run,))

    def members(self, row: BatchRow) -> list[tuple[int, str, int]]:
        """``(request id, custom_id, resubmits)`` of the requests still batched in ``row``, in file order."""
        return [
            (int(a), str(b), int(c))
            for a, b, c in self.conn.execute(
                "SELECT id, custom_id, resubmits FROM requests WHERE batch_id=? AND state='batched' ORDER BY id",
                (row.id,),
            )
        ]

    def collect(
        self,
        row: BatchRow,
        outcomes: list[Outcome],
        requeue: list[tuple[int, bool, str]],
        status: str,
        note: str,
        counts: dict[str, Any] | None,
    ) -> None:
        """Settle a finished batch in one transaction: results and spend of answered lines, requeued requests
        (``(request id, counts as a resubmission, reason)``), and the batch row ``done``."""
        now = self.store.clock()
        with self.store.db.atomic():
            for o in outcomes:
                changed = self.conn.execute(
                    "UPDATE requests SET state=?, last_error=?, updated_at=? WHERE id=? AND state='batched'"
                    " AND batch_id=?",
                    (o.kind, o.error_message, now, o.request_id, row.id),
                ).rowcount
                if changed != 1:
                    raise StateConflict(f"request {o.custom_id!r}: not batched in chunk {row.chunk}")
                self.store.insert_result(o, row.run, "batch", now)
            for request_id, counted, reason in requeue:
                changed = self.conn.execute(
                    "UPDATE requests SET state='pending', batch_id=NULL, last_error=?, updated_at=?,"
                    " resubmits=resubmits+? WHERE id=? AND state='batched' AND batch_id=?",
                    (reason, now, 1 if counted else 0, request_id, row.id),
                ).rowcount
                if changed != 1:
                    raise StateConflict(f"request {request_id}: not batched in chunk {row.chunk}")
            self.conn.execute(
                "UPDATE batches SET state='done', status=?, note=?, counts=?, updated_at=? WHERE id=? AND state=?",
                (status, note, json.dumps(counts) if counts else None, now, row.id, row.state),
            )
