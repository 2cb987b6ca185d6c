"""The day's requests per model, for the requests-per-day limit (RPD), which counts per UTC day and per key.

Three sources make the day's figure: what this database has stored (``daily_usage``, read once per flush, since
other runs in the database count against the same day), what this process sent since its last flush, and what
other databases on the key told the shared gate (``SharedGate.tell``; each database's figure is its own, so
processes on one database never count each other twice).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from runner.gates import SharedGate
from runner.store import Store

__all__ = ["DailyCount", "utc_day"]


def utc_day(now: float) -> str:
    """The UTC date of a wall-clock time, as the daily limit counts it: ``2026-12-05``."""
    return dt.datetime.fromtimestamp(now, dt.UTC).date().isoformat()


@dataclass
class _Unsaved:
    requests: int = 0
    tokens: int = 0


class DailyCount:
    """``sent`` counts a request; ``used`` says what the day holds so far; ``flush`` stores what was counted."""

    def __init__(self, store: Store, shared: SharedGate | None) -> None:
        self.store, self.shared = store, shared
        self.unsaved: dict[tuple[str, str], _Unsaved] = {}
        self.stored: dict[tuple[str, str], int] = {}  # requests stored per (model, day), read once a flush
        self.others: dict[tuple[str, str], int] = {}  # requests other databases on the key told, per day

    def ours(self, model: str, day: str) -> int:
        """Requests this database has sent to ``model`` on ``day``: stored and not yet."""
        stored = self.stored.get((model, day))
        if stored is None:
            stored = self.stored[model, day] = self.store.results.daily(model, day)[0]
        unsaved = self.unsaved.get((model, day))
        return stored + (unsaved.requests if unsaved else 0)

    def used(self, model: str, day: str) -> tuple[int, int]:
        """(this database's requests, other databases' requests) to ``model`` on ``day``."""
        return self.ours(model, day), self.others.get((model, day), 0)

    def sent(self, model: str, day: str, tokens: int, *, tell: bool) -> None:
        """Count one request of ``tokens``; with ``tell``, tell the other databases on the key the new figure."""
        unsaved = self.unsaved.setdefault((model, day), _Unsaved())
        unsaved.requests += 1
        unsaved.tokens += tokens
        if tell and self.shared is not None:
            what = f"{model} requests {day}"
            self.others[model, day] = self.shared.tell(what, self.store.store_id, self.ours(model, day))

    def flush(self) -> None:
        """Store what was counted since the last flush; read the stored figures again at the next use."""
        self.stored = {}
        unsaved, self.unsaved = self.unsaved, {}
        for (model, day), count in unsaved.items():
            self.store.results.count_daily(model, day, count.requests, count.tokens)
