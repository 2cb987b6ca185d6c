"""Results and spend: one result per final request, one spend row per billed response, written together with the
move that made the request final. Daily usage (requests and tokens per model and UTC day) for RPD / TPD."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from runner.store.base import Part
from runner.store.outcomes import Outcome
from runner.store.states import Move

__all__ = ["Results", "Reused"]

_OUTCOME = {Move.ANSWER: "succeeded", Move.COLLECT: "succeeded", Move.FAIL: "failed", Move.REJECT: "failed",
            Move.REFUSE: "failed"}  # fmt: skip


@dataclass(frozen=True)
class Reused:
    """Requests of a run answered by answers already stored, and what those answers cost when they were bought."""

    requests: int = 0
    saved: int = 0  # picodollars


class Results(Part):
    """``store.results``: one result per final request, the spend of the billed ones, the day's usage."""

    def insert(self, o: Outcome, run: str, mode: str) -> None:
        """Write the result (and spend, if billed) of ``o``; call inside the transaction that moved its state."""
        self.insert_many([o], run, mode)

    def insert_many(self, outcomes: Sequence[Outcome], run: str, mode: str) -> None:
        """Write the results (and spend, of those billed); call inside the transaction that moved their states."""
        now = self.clock()
        self.conn.executemany(
            "INSERT INTO results(request_id, run, custom_id, outcome, status_code, response_id, body,"
            " error_code, error_message, mode, created_at, retryable, seconds) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [(o.request_id, run, o.custom_id, _OUTCOME[o.move], o.status_code, o.response_id, o.body, o.error_code,
              o.error_message, mode, now, int(o.retryable), o.seconds) for o in outcomes],
        )  # fmt: skip
        self.conn.executemany(
            "INSERT INTO spend(run, request_id, model, service_tier, prompt_tokens, cached_tokens,"
            " output_tokens, cost, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
            [(run, o.request_id, o.model, o.service_tier, o.prompt_tokens, o.cached_tokens, o.output_tokens,
              o.cost, now) for o in outcomes if o.cost is not None],
        )  # fmt: skip

    def reuse_answers(self, run: str) -> Reused:
        """Pending requests of ``run`` whose endpoint and body were answered successfully by another run of this
        database are answered by that answer (pending -> succeeded, never sent): a result pointing at the request
        that paid for it, no spend. Within one run, lines alike are each sent (samples of one prompt), on the
        first pass as on a resume."""
        with self.transaction():
            rows = self.conn.execute(
                "SELECT p.id, p.custom_id, (SELECT coalesce(r.reused_from, r.request_id) FROM requests o"
                " JOIN results r ON r.request_id = o.id WHERE o.body_hash = p.body_hash AND o.state = 'succeeded'"
                " AND r.outcome = 'succeeded' AND o.run <> p.run ORDER BY o.id LIMIT 1)"
                f" FROM requests p WHERE p.run = ? AND p.{Move.REUSE.where()}",
                (run,),
            ).fetchall()
            found = [(rid, custom_id, original) for rid, custom_id, original in rows if original is not None]
            for rid, custom_id, _ in found:
                self._move_one(Move.REUSE, rid, f"request {custom_id!r} of run {run!r}")
            self.conn.executemany(
                "INSERT INTO results(request_id, run, custom_id, outcome, status_code, response_id, body, mode,"
                " created_at, retryable, reused_from) SELECT ?, ?, ?, 'succeeded', status_code, response_id, body,"
                " mode, ?, 0, request_id FROM results WHERE request_id = ?",
                [(rid, run, custom_id, self.clock(), original) for rid, custom_id, original in found],
            )
            saved = sum(
                int(
                    self.conn.execute("SELECT coalesce(sum(cost), 0) FROM spend WHERE request_id=?", (o,)).fetchone()[0]
                )
                for _, _, o in found
            )
        return Reused(len(found), saved)

    def answered(self, body_hash: str, other_than: str | None = None) -> bool:
        """Whether a request of this endpoint and body (``body_hash``) was answered successfully in a run other
        than ``other_than`` (one a run would reuse; in its own run a request answered is simply done)."""
        return (
            self.conn.execute(
                "SELECT 1 FROM requests o JOIN results r ON r.request_id = o.id WHERE o.body_hash = ?"
                " AND o.state = 'succeeded' AND r.outcome = 'succeeded' AND o.run IS NOT ? LIMIT 1",
                (body_hash, other_than),
            ).fetchone()
            is not None
        )

    def of(self, run: str, since: float | None = None) -> Iterator[dict[str, Any]]:
        """The results of ``run`` in request order (only those written at ``since`` or later, for a reader that
        follows a run as it goes), each with what it cost (picodollars; 0 when reused), the request it reused, if
        any, and when it was written."""
        cur = self.conn.execute(
            "SELECT request_id, custom_id, outcome, status_code, response_id, body, error_code, error_message,"
            " reused_from, created_at, (SELECT coalesce(sum(cost), 0) FROM spend s"
            " WHERE s.request_id = results.request_id) AS cost FROM results WHERE run=? AND created_at>=?"
            " ORDER BY request_id",
            (run, -math.inf if since is None else since),
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

    def total_cost(self, run: str) -> int:
        """Picodollars spent on ``run``."""
        return int(self.conn.execute("SELECT coalesce(sum(cost),0) FROM spend WHERE run=?", (run,)).fetchone()[0])

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

    # -- daily limits --------------------------------------------------------------------------------------------

    def count_daily(self, model: str, day: str, requests: int, tokens: int) -> None:
        with self.transaction():
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
