"""Requests: stored by ingest, claimed by the sync executor, settled with their results and spend."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from runner.errors import StateConflict
from runner.rows import RequestRow, RowValues
from runner.store.base import Base, Part
from runner.store.outcomes import Claimed, Outcome
from runner.store.results import Results
from runner.store.runs import Runs
from runner.store.states import Move, State

__all__ = ["ADMITTED", "OUTPUT_ALLOWANCE", "Claimed", "Outcome", "RequestRow", "Requests", "RowValues"]

# ``runner.tokens.admission_tokens`` over the requests table (a test holds the two to the same figures)
OUTPUT_ALLOWANCE = "output_tokens * n"
ADMITTED = f"prompt_tokens + {OUTPUT_ALLOWANCE}"


def _by_move(outcomes: list[Outcome]) -> dict[Move, list[Outcome]]:
    groups: dict[Move, list[Outcome]] = {}
    for o in outcomes:
        groups.setdefault(o.move, []).append(o)
    return groups


class Requests(Part):
    """``store.requests``: the requests of each run and their moves; outcomes are recorded with their results
    (``results``) by the process that owns the run (``runs``)."""

    def __init__(self, base: Base, runs: Runs, results: Results) -> None:
        super().__init__(base)
        self.runs, self.results = runs, results

    # -- ingest --------------------------------------------------------------------------------------------------

    def add_requests(self, run: str, rows: Sequence[RowValues]) -> tuple[int, list[tuple[RequestRow, int, int, str]]]:
        """Insert new requests (a ``RequestRow`` or its values as a plain tuple: cheaper to pass between
        processes). Returns how many were new, and ``(row, stored_id, stored_line, stored_hash)`` for each row whose
        custom_id is stored from another line or with another body. Call inside a transaction to make a whole
        ingest one."""
        now = self.clock()
        before = self.conn.total_changes
        self.conn.executemany(
            "INSERT INTO requests(run, custom_id, line, endpoint, model, body, body_hash, prompt_tokens,"
            " output_tokens, n, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(run, custom_id) DO NOTHING",
            [(run, *r, now) for r in rows],
        )
        inserted = self.conn.total_changes - before
        if inserted == len(rows):
            return inserted, []
        stored: dict[str, tuple[int, int, str]] = {}
        given = [RequestRow(*r) for r in rows]
        ids = [r.custom_id for r in given]
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for cid, rid, line, h in self.conn.execute(
                f"SELECT custom_id, id, line, body_hash FROM requests WHERE run=? AND custom_id IN ({marks})",
                (run, *chunk),
            ):
                stored[cid] = (rid, line, h)
        out: list[tuple[RequestRow, int, int, str]] = []
        for r in given:
            rid, line, h = stored[r.custom_id]
            if line != r.line or h != r.body_hash:
                out.append((r, rid, line, h))
        return inserted, out

    def last_request_id(self) -> int:
        """The highest request id in the database (0 if none): what ingest adds comes after it."""
        return int(self.conn.execute("SELECT coalesce(max(id), 0) FROM requests").fetchone()[0])

    def request_id(self, run: str, custom_id: str) -> int | None:
        row = self.conn.execute("SELECT id FROM requests WHERE run=? AND custom_id=?", (run, custom_id)).fetchone()
        return None if row is None else int(row[0])

    def refuse(self, run: str, custom_id: str, code: str, message: str) -> None:
        """pending -> failed before any attempt (it can never succeed as written); the reason is its result."""
        with self.transaction():
            row = self.conn.execute(
                f"UPDATE requests SET state=?, last_error=?, updated_at=? WHERE run=? AND custom_id=?"
                f" AND {Move.REFUSE.where()} RETURNING id",
                (Move.REFUSE.target.value, message, self.clock(), run, custom_id),
            ).fetchone()
            if row is None:
                raise StateConflict(f"request {custom_id!r} of run {run!r}: cannot refuse (not pending)")
            outcome = Outcome(row[0], custom_id, Move.REFUSE, error_code=code, error_message=message)
            self.results.insert(outcome, run, "sync")

    def reopen(self, run: str, every: bool = False) -> int:
        """Failed requests of ``run`` whose failure time may cure (all with ``every``) go back to pending, their
        results deleted and their attempts reset, in one transaction. Returns how many."""
        which = "" if every else " AND retryable=1"
        with self.transaction():
            ids = [r[0] for r in self.conn.execute(
                f"SELECT request_id FROM results WHERE run=? AND outcome='failed'{which}", (run,)
            )]  # fmt: skip
            for rid in ids:
                self.conn.execute("DELETE FROM results WHERE request_id=?", (rid,))
                self._move_one(Move.REOPEN, rid, f"request {rid} of run {run!r}", attempts=0, resubmits=0,
                               not_before=0)  # fmt: skip
        return len(ids)

    def cancel(self, run: str, custom_ids: Iterable[str] | None = None) -> int:
        """Withdraw pending requests of ``run`` (all, or those of ``custom_ids``); returns how many."""
        with self.transaction():
            if custom_ids is None:
                return self._move(Move.CANCEL, "run=?", (run,))
            moved = 0
            for custom_id in custom_ids:
                moved += self._move(Move.CANCEL, "run=? AND custom_id=?", (run, custom_id))
            return moved

    # -- the queue -----------------------------------------------------------------------------------------------

    def claim(self, run: str, owner: str, limit: int, lease_seconds: float = 600.0, above: int = 0) -> list[Claimed]:
        """Lease up to ``limit`` pending requests that are due, oldest first, with an id above ``above`` (a split
        run's sync lane): pending -> in_flight."""
        now = self.clock()
        with self.transaction():
            rows = self.conn.execute(
                f"UPDATE requests SET state=?, lease_owner=?, lease_expires=?, attempts=attempts+1, updated_at=?"
                f" WHERE id IN (SELECT id FROM requests WHERE run=? AND {Move.CLAIM.where()} AND not_before<=?"
                " AND id>? ORDER BY id LIMIT ?) AND EXISTS (SELECT 1 FROM runs WHERE name=? AND owner=?)"
                " RETURNING id, custom_id, line, endpoint, model, body, prompt_tokens, output_tokens, n, attempts",
                (Move.CLAIM.target.value, owner, now + lease_seconds, now, run, now, above, limit, run, owner),
            ).fetchall()
        return sorted((Claimed(*r) for r in rows), key=lambda c: c.id)

    def next_due(self, run: str, above: int = 0, upto: int | None = None) -> float | None:
        """When the earliest pending request (with an id in ``above``..``upto``) becomes due; None if none is."""
        row = self.conn.execute(
            "SELECT min(not_before) FROM requests WHERE run=? AND state='pending' AND id>? AND id<=?",
            (run, above, upto or 2**62),
        ).fetchone()
        return None if row[0] is None else float(row[0])

    def record(self, owner: str, run: str, outcomes: Iterable[Outcome]) -> int:
        """Apply outcomes of ``owner``'s in-flight requests in one transaction: state, result and spend together.

        Returns how many could not be recorded because another process has taken the run over (its requests went
        back to pending and are that process's now); 0 otherwise."""
        items = list(outcomes)
        if not items:
            return 0
        with self.transaction():
            if not self.runs.owns(run, owner):
                return len(items)
            for move, group in _by_move(items).items():
                final = move.target is not State.PENDING
                columns = ("last_error", "lease_owner", "lease_expires") + (() if final else ("not_before",))
                rows = [(o.error_message, None, None, *(() if final else (o.not_before,)), o.request_id, owner)
                        for o in group]  # fmt: skip
                if not self._move_all(move, "lease_owner=?", columns, rows):
                    for o in group:  # one of them cannot move: found and named
                        sets = dict(zip(columns, (o.error_message, None, None, o.not_before), strict=False))
                        self._move_one(move, o.request_id, f"request {o.custom_id!r} in flight for this process",
                                       "lease_owner=?", (owner,), **sets)  # fmt: skip
                if final:
                    self.results.insert_many(group, run, "sync")
        return 0

    # -- reports -------------------------------------------------------------------------------------------------

    def counts(self, run: str) -> dict[str, int]:
        found = dict(self.conn.execute("SELECT state, count(*) FROM requests WHERE run=? GROUP BY state", (run,)))
        return {s.value: int(found.get(s.value, 0)) for s in State}

    def pending_requests(self, run: str) -> Iterator[tuple[str, str, str, int, int, int]]:
        """``(endpoint, model, body, prompt tokens, output allowance per choice, n)`` of what is pending, in order."""
        yield from self.conn.execute(
            "SELECT endpoint, model, body, prompt_tokens, output_tokens, n FROM requests WHERE run=? AND"
            " state='pending' ORDER BY id",
            (run,),
        )

    def pending_totals(self, run: str, model: str, long_above: int | None) -> list[tuple[bool, int, int, int, int]]:
        """``(long context, requests, prompt tokens, output allowance, largest)`` of ``model``'s pending requests,
        split at ``long_above`` prompt tokens (None: no long-context row)."""
        line = 2**62 if long_above is None else long_above
        return [
            (bool(long), int(n), int(p), int(o), int(big))
            for long, n, p, o, big in self.conn.execute(
                f"SELECT prompt_tokens > ?, count(*), sum(prompt_tokens), sum({OUTPUT_ALLOWANCE}), max({ADMITTED})"
                " FROM requests WHERE run=? AND model=? AND state='pending'"
                " GROUP BY 1",
                (line, run, model),
            )
        ]

    def nth_pending_id(self, run: str, nth: int) -> int:
        """The id of the ``nth`` pending request (1-based, in id order); 0 for none."""
        row = self.conn.execute(
            "SELECT id FROM requests WHERE run=? AND state='pending' ORDER BY id LIMIT 1 OFFSET ?", (run, nth - 1)
        ).fetchone()
        return 0 if row is None or nth < 1 else int(row[0])

    def pending_count(self, run: str, upto: int | None = None) -> int:
        """Pending requests of ``run`` (with an id up to ``upto``: a split run's batch lane)."""
        row = self.conn.execute(
            "SELECT count(*) FROM requests WHERE run=? AND state='pending' AND id<=?", (run, upto or 2**62)
        ).fetchone()
        return int(row[0])

    def pending_models(self, run: str) -> list[str]:
        return [
            m
            for (m,) in self.conn.execute("SELECT DISTINCT model FROM requests WHERE run=? AND state='pending'", (run,))
        ]

    def pending_by_model(self, run: str, count_output: bool = True) -> list[tuple[str, int, int]]:
        """``(model, requests, estimated tokens)`` of what is pending, per model."""
        estimate = ADMITTED if count_output else "prompt_tokens"
        return [
            (str(m), int(n), int(t))
            for m, n, t in self.conn.execute(
                f"SELECT model, count(*), sum({estimate}) FROM requests WHERE run=? AND state='pending' GROUP BY model",
                (run,),
            )
        ]

    def pending_larger_than(
        self, run: str, model: str, tokens: int, count_output: bool, upto: int | None = None
    ) -> list[tuple[str, int, int]]:
        """``(custom_id, line, estimate)`` of pending requests of ``model`` (with an id up to ``upto``) whose
        estimate exceeds ``tokens``."""
        estimate = ADMITTED if count_output else "prompt_tokens"
        return [
            (str(c), int(line), int(est))
            for c, line, est in self.conn.execute(
                f"SELECT custom_id, line, {estimate} AS est FROM requests WHERE run=? AND model=?"
                " AND state='pending' AND est > ? AND id<=?",
                (run, model, tokens, upto or 2**62),
            ).fetchall()
        ]
