"""The runner database: runs, requests, results, spend, daily usage (SQLite, WAL).

Invariants, kept by this module alone:
- A request moves only along ``TRANSITIONS``; each move is one ``UPDATE ... WHERE id=? AND state IN (...)`` and a
  move that changes no row raises ``StateConflict`` (a bug or a race, never ignored).
- A request has at most one row in ``results`` (its primary key is the request id): answered exactly once.
- A spend row is written in the same transaction as the result of the response that was billed.
- One live process owns a run at a time (``runs.owner`` + heartbeat). On taking a run over, requests left
  ``in_flight`` by a dead owner go back to ``pending``.

Writes go through ``db.atomic()``; the executor groups many outcomes into one transaction for throughput.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from runner.errors import RunLocked, StateConflict
from runner.migrations import migrations

__all__ = ["Claimed", "Outcome", "RequestRow", "State", "Store", "default_db_path"]

Clock = Callable[[], float]


class State(StrEnum):
    PENDING = "pending"  # waiting to be sent (maybe not before ``not_before``)
    IN_FLIGHT = "in_flight"  # leased by a live process and being sent
    BATCHED = "batched"  # inside a Batch API batch
    SUCCEEDED = "succeeded"  # answered; final
    FAILED = "failed"  # permanent failure with a reason; final
    CANCELLED = "cancelled"  # withdrawn by the user; final


TRANSITIONS: dict[State, frozenset[State]] = {
    State.PENDING: frozenset({State.IN_FLIGHT, State.BATCHED, State.FAILED, State.CANCELLED}),
    State.IN_FLIGHT: frozenset({State.SUCCEEDED, State.PENDING, State.FAILED, State.CANCELLED}),
    State.BATCHED: frozenset({State.SUCCEEDED, State.FAILED, State.PENDING, State.CANCELLED}),
    State.SUCCEEDED: frozenset(),
    State.FAILED: frozenset(),
    State.CANCELLED: frozenset(),
}
FINAL = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED})


def sources_of(target: State) -> tuple[State, ...]:
    return tuple(s for s, targets in TRANSITIONS.items() if target in targets)


def default_db_path() -> str:
    return os.environ.get("RUNNER_DB", "runner.db")


@dataclass(frozen=True)
class RequestRow:
    """A request as ingest stores it."""

    custom_id: str
    line: int
    endpoint: str
    model: str
    body: str
    body_hash: str
    prompt_tokens: int
    output_tokens: int
    n: int


@dataclass(frozen=True)
class Claimed:
    """A request leased to this process for sending."""

    id: int
    custom_id: str
    line: int
    endpoint: str
    model: str
    body: str
    prompt_tokens: int
    output_tokens: int
    n: int
    attempts: int


@dataclass(frozen=True)
class Outcome:
    """What happened to one claimed request. ``kind``: succeeded, failed (final) or retry (back to pending)."""

    request_id: int
    custom_id: str
    kind: str
    status_code: int | None = None
    response_id: str | None = None
    body: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    not_before: float = 0.0
    # spend, when the response was billed
    model: str | None = None
    service_tier: str = "standard"
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    cost: int | None = None


class Store:
    """One SQLite database; ``clock`` is injectable so lease and heartbeat logic is tested without sleeping."""

    def __init__(self, path: str | Path, clock: Clock = time.time) -> None:
        self.path = str(path)
        self.clock = clock
        conn = sqlite3.connect(self.path, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        self.db = Database(conn)
        migrations.apply(self.db)
        self.conn = conn

    def close(self) -> None:
        self.conn.close()

    # -- runs and ownership -------------------------------------------------------------------------------

    def run(self, name: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM runs WHERE name=?", (name,)).fetchone()
        if row is None:
            return None
        cols = [d[0] for d in self.conn.execute("SELECT * FROM runs LIMIT 0").description]
        return dict(zip(cols, row, strict=True))

    def runs(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM runs ORDER BY created_at")]

    def acquire(self, name: str, input_path: str | None, stale_after: float = 15.0) -> str:
        """Own run ``name`` (creating it); recover what a dead owner left in flight. Returns the owner token."""
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        now = self.clock()
        with self.db.atomic():
            self.conn.execute(
                "INSERT INTO runs(name, input_path, created_at) VALUES (?,?,?) ON CONFLICT(name) DO NOTHING",
                (name, input_path, now),
            )
            current, heartbeat = self.conn.execute(
                "SELECT owner, heartbeat_at FROM runs WHERE name=?", (name,)
            ).fetchone()
            if current and _owner_alive(current, heartbeat, now, stale_after):
                raise RunLocked(f"run {name!r} is being worked on by {current}; wait for it or stop it")
            self.conn.execute(
                "UPDATE runs SET owner=?, heartbeat_at=?, stop_reason=NULL,"
                " input_path=coalesce(?, input_path) WHERE name=?",
                (owner, now, input_path, name),
            )
            self.conn.execute(
                "UPDATE requests SET state='pending', lease_owner=NULL, lease_expires=NULL, updated_at=?"
                " WHERE run=? AND state='in_flight'",
                (now, name),
            )
        return owner

    def heartbeat(self, name: str, owner: str, lease_seconds: float) -> None:
        now = self.clock()
        with self.db.atomic():
            self.conn.execute("UPDATE runs SET heartbeat_at=? WHERE name=? AND owner=?", (now, name, owner))
            self.conn.execute(
                "UPDATE requests SET lease_expires=? WHERE run=? AND lease_owner=? AND state='in_flight'",
                (now + lease_seconds, name, owner),
            )

    def release(self, name: str, owner: str, stop_reason: str | None = None) -> int:
        """Give up the run: this owner's in-flight requests go back to pending. Returns how many did."""
        now = self.clock()
        with self.db.atomic():
            n = self.conn.execute(
                "UPDATE requests SET state='pending', lease_owner=NULL, lease_expires=NULL, updated_at=?"
                " WHERE run=? AND lease_owner=? AND state='in_flight'",
                (now, name, owner),
            ).rowcount
            self.conn.execute(
                "UPDATE runs SET owner=NULL, stop_reason=? WHERE name=? AND owner=?",
                (stop_reason, name, owner),
            )
        return n

    def set_settings(self, name: str, tier: str, mode: str) -> None:
        with self.db.atomic():
            self.conn.execute("UPDATE runs SET tier=?, mode=? WHERE name=?", (tier, mode, name))

    def set_ingested(self, name: str, nbytes: int, sha256: str, lines: int) -> None:
        with self.db.atomic():
            self.conn.execute(
                "UPDATE runs SET ingest_bytes=?, ingest_sha256=?, ingest_lines=? WHERE name=?",
                (nbytes, sha256, lines, name),
            )

    # -- ingest --------------------------------------------------------------------------------------------

    def add_requests(self, run: str, rows: Sequence[RequestRow]) -> tuple[int, list[tuple[RequestRow, int, int, str]]]:
        """Insert new requests. Returns how many were new, and ``(row, stored_id, stored_line, stored_hash)`` for
        each row whose custom_id is stored from another line or with another body.

        Call inside ``self.db.atomic()`` to make a whole ingest one transaction.
        """
        now = self.clock()
        before = self.conn.total_changes
        self.conn.executemany(
            "INSERT INTO requests(run, custom_id, line, endpoint, model, body, body_hash, prompt_tokens,"
            " output_tokens, n, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(run, custom_id) DO NOTHING",
            [
                (
                    run,
                    r.custom_id,
                    r.line,
                    r.endpoint,
                    r.model,
                    r.body,
                    r.body_hash,
                    r.prompt_tokens,
                    r.output_tokens,
                    r.n,
                    now,
                )
                for r in rows
            ],
        )
        inserted = self.conn.total_changes - before
        if inserted == len(rows):
            return inserted, []
        stored: dict[str, tuple[int, int, str]] = {}
        ids = [r.custom_id for r in rows]
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for cid, rid, line, h in self.conn.execute(
                f"SELECT custom_id, id, line, body_hash FROM requests WHERE run=? AND custom_id IN ({marks})",
                (run, *chunk),
            ):
                stored[cid] = (rid, line, h)
        out: list[tuple[RequestRow, int, int, str]] = []
        for r in rows:
            rid, line, h = stored[r.custom_id]
            if line != r.line or h != r.body_hash:
                out.append((r, rid, line, h))
        return inserted, out

    # -- the queue -----------------------------------------------------------------------------------------

    def claim(self, run: str, owner: str, limit: int, lease_seconds: float = 600.0) -> list[Claimed]:
        """Lease up to ``limit`` pending requests that are due, oldest first: pending -> in_flight."""
        now = self.clock()
        with self.db.atomic():
            rows = self.conn.execute(
                "UPDATE requests SET state='in_flight', lease_owner=?, lease_expires=?, attempts=attempts+1,"
                " updated_at=? WHERE id IN (SELECT id FROM requests WHERE run=? AND state='pending'"
                " AND not_before<=? ORDER BY id LIMIT ?)"
                " RETURNING id, custom_id, line, endpoint, model, body, prompt_tokens, output_tokens, n, attempts",
                (owner, now + lease_seconds, now, run, now, limit),
            ).fetchall()
        return sorted((Claimed(*r) for r in rows), key=lambda c: c.id)

    def next_due(self, run: str) -> float | None:
        """When the earliest pending request becomes due, or None if nothing is pending."""
        row = self.conn.execute(
            "SELECT min(not_before) FROM requests WHERE run=? AND state='pending'", (run,)
        ).fetchone()
        return None if row[0] is None else float(row[0])

    def record(self, owner: str, outcomes: Iterable[Outcome], mode: str = "sync") -> None:
        """Apply outcomes of in-flight requests in one transaction: state, result and spend together."""
        now = self.clock()
        items = list(outcomes)
        if not items:
            return
        # an owner holds one run; an unknown owner matches no row below and raises StateConflict
        owned = self.conn.execute("SELECT name FROM runs WHERE owner=?", (owner,)).fetchone()
        run = "" if owned is None else str(owned[0])
        with self.db.atomic():
            for o in items:
                if o.kind == "retry":
                    changed = self.conn.execute(
                        "UPDATE requests SET state='pending', not_before=?, last_error=?, lease_owner=NULL,"
                        " lease_expires=NULL, updated_at=? WHERE id=? AND state='in_flight' AND lease_owner=?",
                        (o.not_before, o.error_message, now, o.request_id, owner),
                    ).rowcount
                else:
                    changed = self.conn.execute(
                        "UPDATE requests SET state=?, last_error=?, lease_owner=NULL, lease_expires=NULL,"
                        " updated_at=? WHERE id=? AND state='in_flight' AND lease_owner=?",
                        (o.kind, o.error_message, now, o.request_id, owner),
                    ).rowcount
                    if changed:
                        self.insert_result(o, run, mode, now)
                if changed != 1:
                    raise StateConflict(f"request {o.custom_id!r}: not in flight for this process (-> {o.kind})")

    def request_id(self, run: str, custom_id: str) -> int | None:
        row = self.conn.execute("SELECT id FROM requests WHERE run=? AND custom_id=?", (run, custom_id)).fetchone()
        return None if row is None else int(row[0])

    def fail_pending(self, run: str, custom_id: str, code: str, message: str) -> None:
        """pending -> failed before any attempt (e.g. larger than the TPM limit); the reason is the result."""
        now = self.clock()
        with self.db.atomic():
            row = self.conn.execute(
                "UPDATE requests SET state='failed', last_error=?, updated_at=? WHERE run=? AND custom_id=?"
                " AND state='pending' RETURNING id",
                (message, now, run, custom_id),
            ).fetchone()
            if row is None:
                raise StateConflict(f"request {custom_id!r} of run {run!r} is not pending")
            self.insert_result(
                Outcome(row[0], custom_id, "failed", error_code=code, error_message=message), run, "sync", now
            )

    def insert_result(self, o: Outcome, run: str, mode: str, now: float) -> None:
        """Write the result (and spend, if billed) of ``o`` in ``run``; call inside the transaction that moved its
        state."""
        self.conn.execute(
            "INSERT INTO results(request_id, run, custom_id, outcome, status_code, response_id, body,"
            " error_code, error_message, mode, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                o.request_id,
                run,
                o.custom_id,
                o.kind,
                o.status_code,
                o.response_id,
                o.body,
                o.error_code,
                o.error_message,
                mode,
                now,
            ),
        )
        if o.cost is not None:
            self.conn.execute(
                "INSERT INTO spend(run, request_id, model, service_tier, prompt_tokens, cached_tokens,"
                " output_tokens, cost, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    run,
                    o.request_id,
                    o.model,
                    o.service_tier,
                    o.prompt_tokens,
                    o.cached_tokens,
                    o.output_tokens,
                    o.cost,
                    now,
                ),
            )

    # -- daily limits --------------------------------------------------------------------------------------

    def count_daily(self, model: str, day: str, requests: int, tokens: int) -> None:
        with self.db.atomic():
            self.conn.execute(
                "INSERT INTO daily_usage(model, day, requests, tokens) VALUES (?,?,?,?) ON CONFLICT(model, day)"
                " DO UPDATE SET requests=requests+excluded.requests, tokens=tokens+excluded.tokens",
                (model, day, requests, tokens),
            )

    def daily(self, model: str, day: str) -> tuple[int, int]:
        row = self.conn.execute(
            "SELECT requests, tokens FROM daily_usage WHERE model=? AND day=?", (model, day)
        ).fetchone()
        return (0, 0) if row is None else (int(row[0]), int(row[1]))

    # -- reports -------------------------------------------------------------------------------------------

    def counts(self, run: str) -> dict[str, int]:
        found = dict(self.conn.execute("SELECT state, count(*) FROM requests WHERE run=? GROUP BY state", (run,)))
        return {s.value: int(found.get(s.value, 0)) for s in State}

    def spend_by(self, run: str | None = None) -> list[dict[str, Any]]:
        where, args = ("WHERE run=?", (run,)) if run else ("", ())
        cur = self.conn.execute(
            "SELECT run, model, service_tier, count(*) AS responses, sum(prompt_tokens) AS prompt_tokens,"
            " sum(cached_tokens) AS cached_tokens, sum(output_tokens) AS output_tokens, sum(cost) AS cost"
            f" FROM spend {where} GROUP BY run, model, service_tier ORDER BY run, model, service_tier",
            args,
        )
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur]

    def total_cost(self, run: str) -> int:
        return int(self.conn.execute("SELECT coalesce(sum(cost),0) FROM spend WHERE run=?", (run,)).fetchone()[0])

    def results(self, run: str) -> Iterator[dict[str, Any]]:
        cur = self.conn.execute(
            "SELECT request_id, custom_id, outcome, status_code, response_id, body, error_code, error_message"
            " FROM results WHERE run=? ORDER BY request_id",
            (run,),
        )
        cols = [d[0] for d in cur.description]
        for row in cur:
            yield dict(zip(cols, row, strict=True))

    def failures(self, run: str, limit: int = 5) -> list[tuple[str, str]]:
        return [
            (r[0], r[1] or "")
            for r in self.conn.execute(
                "SELECT custom_id, error_message FROM results WHERE run=? AND outcome='failed'"
                " ORDER BY request_id LIMIT ?",
                (run, limit),
            )
        ]


def _owner_alive(owner: str, heartbeat: float | None, now: float, stale_after: float) -> bool:
    host, pid, _ = [*owner.split(":"), "", "", ""][:3]
    if heartbeat is None or now - heartbeat > stale_after:
        return False
    if host == socket.gethostname():
        try:
            os.kill(int(pid), 0)
        except (ProcessLookupError, ValueError):
            return False
        except PermissionError:
            return True
    return True


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
