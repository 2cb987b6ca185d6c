"""What the sync executor hands the store: outcomes in groups, the day's count, the limits the headers state.

Senders ``add`` outcomes as replies come; ``flush`` (a few times a second, and at the end) commits them in one
transaction per group (state, result and spend of each request together). An answer that arrives after another
process took the run over is not recorded: ``dropped`` counts them. A full disk raises ``DiskFull`` from
``flush`` with the group rolled back whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from runner.crash import crash_point
from runner.evidence import stated_limit
from runner.store import Claimed, Move, Outcome, Store
from runner.sync.daily import DailyCount

__all__ = ["Recorder"]


class Recorder:
    def __init__(self, store: Store, run: str, owner: str, daily: DailyCount) -> None:
        self.store, self.run, self.owner, self.daily = store, run, owner, daily
        self.outcomes: list[Outcome] = []
        self.dropped = 0  # answers that arrived after another process took the run over
        self.stated: dict[str, tuple[int | None, int | None]] = {}  # model -> (rpm, tpm) the headers state
        self.unsaved_stated: dict[str, tuple[int | None, int | None]] = {}

    def add(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)

    def put_back(self, requests: Iterable[Claimed]) -> None:
        """Requests claimed and not sent go back to pending, untouched."""
        self.outcomes.extend(
            Outcome(r.id, r.custom_id, Move.RELEASE, error_message="not sent: run stopping") for r in requests
        )

    def limits_seen(self, model: str, headers: Mapping[str, str]) -> None:
        """Remember the limits the server states (x-ratelimit-limit-*), for the planner's tier detection."""
        stated = (stated_limit(headers, "requests"), stated_limit(headers, "tokens"))
        if stated != (None, None) and self.stated.get(model) != stated:
            self.stated[model] = self.unsaved_stated[model] = stated

    def flush(self) -> None:
        for model, (rpm, tpm) in self.unsaved_stated.items():
            self.store.history.state_limits(model, "headers", rpm=rpm, tpm=tpm)
        self.unsaved_stated = {}
        if self.outcomes:
            group, self.outcomes = self.outcomes, []
            self.dropped += self.store.requests.record(self.owner, self.run, group)
            crash_point("recorded")
        self.daily.flush()
