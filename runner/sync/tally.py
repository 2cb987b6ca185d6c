"""What a sync run has done so far: answered, failed, and the last minute's rate, for the progress line (what it
spent is the budget's: one figure, kept where the cap is checked)."""

from __future__ import annotations

from collections import deque

from runner.gates import Pacing
from runner.progress import Snapshot

__all__ = ["Tally"]

RATE_WINDOW = 60.0  # seconds of answers the progress line's rates average over


class Tally:
    """Counts from the store at the start, then what this process adds; ``snapshot`` for the progress line."""

    def __init__(self, counts: dict[str, int], now: float) -> None:
        self.total = sum(counts.values())
        self.done = counts["succeeded"]
        self.failed = counts["failed"] + counts["cancelled"]
        self.started = now
        self.finished_at_start = self.done + self.failed
        self.recent: deque[tuple[float, int]] = deque()  # (when, tokens) of the answers of the last minute

    def answered(self, tokens: int, now: float) -> None:
        self.done += 1
        self.recent.append((now, tokens))

    def failed_one(self) -> None:
        self.failed += 1

    def snapshot(self, now: float, in_flight: int, spent: int, gate: Pacing | None, notices: list[str]) -> Snapshot:
        while self.recent and now - self.recent[0][0] > RATE_WINDOW:
            self.recent.popleft()
        span = min(RATE_WINDOW, max(now - self.started, 1e-3))
        finished = self.done + self.failed
        rate = (finished - self.finished_at_start) / max(now - self.started, 1e-3)
        return Snapshot(
            self.done,
            self.failed,
            self.total,
            in_flight,
            len(self.recent) * 60 / span,
            sum(t for _, t in self.recent) * 60 / span,
            gate.rpm if gate else None,
            gate.tpm if gate else None,
            spent,
            (self.total - finished) / rate if rate > 0 else None,
            gate.statistics().paused_for if gate else 0.0,
            tuple(notices),
        )
