"""What the planner learns from runs: rate limits the server stated, batch turnarounds, how much of the output
allowance answers use and how long they take, and the plan a run was started with."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from runner.store.base import Part

__all__ = ["Calibration", "History", "StatedLimits"]


@dataclass(frozen=True)
class StatedLimits:
    """A model's limits as a server stated them (``source``: headers or admin)."""

    model: str
    source: str
    rpm: int | None
    tpm: int | None
    rpd: int | None
    batch_queue_tokens: int | None
    seen_at: float


@dataclass(frozen=True)
class Calibration:
    """What answered requests used: ``answers`` of them, their output tokens against the allowance they were
    given (max output x n), and their mean round trip (sync answers only; None without any)."""

    answers: int
    output_tokens: int
    allowance: int
    seconds: float | None

    @property
    def output_share(self) -> float:
        """Share of the output allowance answers used (1.0 without answers: plan on the allowance)."""
        return self.output_tokens / self.allowance if self.allowance else 1.0


class History(Part):
    def state_limits(
        self,
        model: str,
        source: str,
        rpm: int | None = None,
        tpm: int | None = None,
        rpd: int | None = None,
        batch_queue_tokens: int | None = None,
    ) -> None:
        """Remember the limits a server stated for ``model`` (the newest statement per source wins)."""
        with self.transaction():
            self.conn.execute(
                "INSERT INTO observed_limits(model, source, rpm, tpm, rpd, batch_queue_tokens, seen_at)"
                " VALUES (?,?,?,?,?,?,?) ON CONFLICT(model, source) DO UPDATE SET rpm=excluded.rpm,"
                " tpm=excluded.tpm, rpd=excluded.rpd, batch_queue_tokens=excluded.batch_queue_tokens,"
                " seen_at=excluded.seen_at",
                (model, source, rpm, tpm, rpd, batch_queue_tokens, self.clock()),
            )

    def stated_limits(self, model: str) -> list[StatedLimits]:
        """What servers stated for ``model``, the admin API first, then headers."""
        rows = self.conn.execute(
            "SELECT model, source, rpm, tpm, rpd, batch_queue_tokens, seen_at FROM observed_limits WHERE model=?"
            " ORDER BY source='headers', seen_at DESC",
            (model,),
        ).fetchall()
        return [StatedLimits(*row) for row in rows]

    def turnarounds(self, model: str | None = None) -> list[float]:
        """Seconds from creation to completion of every completed batch in the database (of ``model``)."""
        where, args = ("AND model=?", (model,)) if model else ("", ())
        return [
            float(r[0])
            for r in self.conn.execute(
                f"SELECT turnaround FROM batches WHERE turnaround IS NOT NULL AND status='completed' {where}"
                " ORDER BY turnaround",
                args,
            )
        ]

    def calibration(self, run: str) -> Calibration:
        """What the answered requests of ``run`` used of their output allowance, and how long they took."""
        answers, output, allowance = self.conn.execute(
            "SELECT count(*), coalesce(sum(s.output_tokens), 0), coalesce(sum(q.output_tokens * q.n), 0)"
            " FROM spend s JOIN requests q ON q.id = s.request_id WHERE s.run=?",
            (run,),
        ).fetchone()
        (seconds,) = self.conn.execute(
            "SELECT avg(seconds) FROM results WHERE run=? AND seconds IS NOT NULL", (run,)
        ).fetchone()
        return Calibration(int(answers), int(output), int(allowance), None if seconds is None else float(seconds))

    def set_plan(self, run: str, plan: dict[str, Any]) -> None:
        """Store the plan ``run`` was started with (``--mode auto``: the mode chosen and why)."""
        with self.transaction():
            self.conn.execute("UPDATE runs SET plan=? WHERE name=?", (json.dumps(plan), run))

    def plan_of(self, run: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT plan FROM runs WHERE name=?", (run,)).fetchone()
        if row is None or row[0] is None:
            return None
        plan: dict[str, Any] = json.loads(row[0])
        return plan
