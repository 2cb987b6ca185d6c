"""How many requests the sync executor keeps in flight: the second bound after the gate.

The gate decides when a request may go; this bound decides how many may be unanswered at once, so a slow server
does not collect thousands of open connections and a fast one is not starved. It follows Little's law from the
first second: the gates' request rate x latency x 1.5, plus slack. The latency is the larger of what answers took
(a moving average) and how long the oldest request in flight has waited; until ``MEASURED`` answers are in, also
what tier_limits.json's speeds expect of the requests sent, so before the first answer the bound grows with time
and never holds back what the gate admits. Once answers are measured, as BBR does, the bound is also at most twice
what the answers of the last second delivered x the quickest round trip of the last 10 s (x 1.5): beyond it the
client itself is the bottleneck, and more in flight is only queueing the client would measure as latency. New
connections open at a bounded pace (``RAMP_START`` at once, then ``RAMP_PER_SECOND``), and never beyond what the
user set (``--concurrency``) or the process may hold open.

Time is given to every method (``now``, monotonic seconds); nothing here reads a clock.
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["MEASURED", "RAMP_PER_SECOND", "RAMP_START", "InFlight"]

MEASURED = 32  # replies after which their latency, not the model's typical speed, sizes the bound
RAMP_START, RAMP_PER_SECOND = 256, 1000  # the bound's pace: 256 at once, then 1,000 more a second
HEADROOM = 1.5  # Little's law x this: answers vary, and a bound at the mean would hold back every slow spell
SLACK = 16  # a few more for the first requests of a rate too low for Little's law to ask for any
AVERAGE = 0.1  # weight of the newest answer in the latency average
DELIVERY_WINDOW, QUICKEST_WINDOW = 1.0, 10.0  # seconds of answers counted as delivered; of round trips watched


class InFlight:
    """Requests sent and not yet answered, and the most there may be (``bound``).

    Invariants: ``count`` is the number of ``sent`` calls not yet matched by ``finished``; ``bound`` is at least 1
    and at most ``ceiling`` and ``concurrency`` (when set)."""

    def __init__(self, concurrency: int | None, ceiling: int) -> None:
        self.concurrency, self.ceiling = concurrency, max(1, ceiling)
        self.sent_at: dict[int, float] = {}  # request id -> when it was sent; in the order sent
        self.latency = 0.0  # moving average of answers' seconds
        self.expected = 0.0  # what tier_limits.json's speeds expect of the requests sent
        self.answers = 0  # replies received (the latency average is trusted from MEASURED on)
        self.first_sent: float | None = None  # when the first request went (the ramp starts there)
        self.answered_at: deque[float] = deque()  # when the replies of the last second came
        self.quickest: deque[tuple[float, float]] = deque()  # (when, seconds): a sliding-window minimum

    @property
    def count(self) -> int:
        return len(self.sent_at)

    def sent(self, request: int, now: float, expected_seconds: float) -> None:
        """A request went out; ``expected_seconds`` is what the model's typical speed expects of it."""
        self.sent_at[request] = now
        self.expected = (1 - AVERAGE) * self.expected + AVERAGE * expected_seconds
        if self.first_sent is None:
            self.first_sent = now

    def answered(self, seconds: float, now: float) -> None:
        """A reply came after ``seconds`` (before ``finished`` for its request)."""
        self.latency = (1 - AVERAGE) * self.latency + AVERAGE * seconds if self.latency else seconds
        self.answers += 1
        self.answered_at.append(now)
        while self.quickest and self.quickest[-1][1] >= seconds:
            self.quickest.pop()
        self.quickest.append((now, seconds))

    def finished(self, request: int) -> None:
        """The request is no longer in flight (answered, failed, or given up)."""
        self.sent_at.pop(request, None)

    def bound(self, rate: float, now: float) -> int:
        """The most requests that may be in flight at ``now`` when the gates admit ``rate`` requests a second."""
        delivered = 2**62
        if self.answers >= MEASURED:
            while self.answered_at and now - self.answered_at[0] > DELIVERY_WINDOW:
                self.answered_at.popleft()
            while self.quickest and now - self.quickest[0][0] > QUICKEST_WINDOW:
                self.quickest.popleft()
            fastest = self.quickest[0][1] if self.quickest else self.latency
            delivered = max(RAMP_START, math.ceil(2.0 * len(self.answered_at) * fastest * HEADROOM))
        oldest = now - next(iter(self.sent_at.values())) if self.sent_at else 0.0
        expected = self.expected if self.answers < MEASURED else 0.0
        latency = max(self.latency, expected, oldest)
        wanted = math.ceil(rate * latency * HEADROOM) + SLACK
        started = self.first_sent if self.first_sent is not None else now
        ramp = RAMP_START + math.ceil(RAMP_PER_SECOND * (now - started))
        return max(1, min(wanted, ramp, delivered, self.concurrency or wanted, self.ceiling))
