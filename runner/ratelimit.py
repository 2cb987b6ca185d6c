"""The gate: paces one model's requests under its RPM and TPM, the way OpenAI enforces them.

Two token buckets (requests, tokens) refill continuously at ``limit * (1 - headroom) / 60`` per second and hold
only ``burst_seconds`` of that rate, so a minute's budget is never released in one burst (OpenAI may enforce a
minute's limit over shorter windows). A request costs 1 request and its reservation (prompt estimate + output
maximum, times n); when its response arrives, ``settle`` refunds the reservation minus the real usage. A request
larger than the bucket waits until the bucket is full and then goes into debt, so it is paced, never stuck. A
request larger than the whole minute's limit can never pass: the executor fails it before it reaches the gate.

Admission is first come, first served (one lock): a large request is not starved by a stream of small ones.

Feedback from the server:
- ``observe(headers)``: when ``x-ratelimit-remaining-*`` says less is left than the gate believes (someone else
  shares the organisation), the gate lowers its level to match. When ``x-ratelimit-limit-*`` differs from the
  configured limit, the gate adopts a lower number always, and a higher one unless the user set the limit
  explicitly; ``notices`` says so.
- ``pause(seconds)``: a rate-limit 429 stops every sender, not only the one that got it, until Retry-After.
- ``slow_down()``: a ``slow_down`` 429 cuts the rate to 80%, which recovers linearly over a minute.

Time is injected (``clock``, ``sleep``) so tests move a fake clock instead of sleeping.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from runner.durations import parse_duration

__all__ = ["Gate", "GateStats"]


class _Bucket:
    def __init__(self, limit: int, headroom: float, burst_seconds: float, now: float) -> None:
        self.limit = limit
        self.headroom = headroom
        self.burst_seconds = burst_seconds
        self.level = self.capacity
        self.stamp = now

    @property
    def rate(self) -> float:
        return self.limit * (1.0 - self.headroom) / 60.0

    @property
    def capacity(self) -> float:
        return self.rate * self.burst_seconds

    def refill(self, now: float, factor: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate * factor)
        self.stamp = now

    def wait(self, cost: float, factor: float) -> float:
        need = min(cost, self.capacity)
        if self.level >= need - 1e-6:  # float residue must not become a wait shorter than the clock's resolution
            return 0.0
        return (need - self.level) / (self.rate * factor)

    def deficit(self) -> float:
        return self.capacity - self.level


@dataclass(frozen=True)
class GateStats:
    """A snapshot of the gate."""

    rpm: int | None
    tpm: int | None
    requests_level: float | None
    tokens_level: float | None
    paused_for: float
    admitted: int
    admitted_tokens: int
    waiting: int


class Gate:
    def __init__(
        self,
        rpm: int | None,
        tpm: int | None,
        *,
        headroom: float = 0.03,
        burst_seconds: float = 1.0,
        explicit: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.clock, self.sleep = clock, sleep
        self.explicit = explicit
        now = clock()
        self.requests = _Bucket(rpm, headroom, burst_seconds, now) if rpm else None
        self.tokens = _Bucket(tpm, headroom, burst_seconds, now) if tpm else None
        self.paused_until = 0.0
        self.factor = 1.0
        self.factor_stamp = now
        self.lock = asyncio.Lock()
        self.admitted = 0
        self.admitted_tokens = 0
        self.waiting = 0
        self.notices: list[str] = []

    def __repr__(self) -> str:
        s = self.statistics()
        return f"<Gate rpm={s.rpm} tpm={s.tpm} tokens_level={s.tokens_level} paused_for={s.paused_for:.2f}s>"

    @property
    def rpm(self) -> int | None:
        return self.requests.limit if self.requests else None

    @property
    def tpm(self) -> int | None:
        return self.tokens.limit if self.tokens else None

    def _refill(self, now: float) -> None:
        if self.factor < 1.0:
            self.factor = min(1.0, self.factor + (now - self.factor_stamp) * 0.2 / 60.0)
        self.factor_stamp = now
        for bucket in (self.requests, self.tokens):
            if bucket:
                bucket.refill(now, self.factor)

    def delay(self, tokens: int) -> float:
        """Seconds until a request of ``tokens`` would be admitted now (0 if at once)."""
        now = self.clock()
        self._refill(now)
        waits = [self.paused_until - now]
        if self.requests:
            waits.append(self.requests.wait(1, self.factor))
        if self.tokens:
            waits.append(self.tokens.wait(tokens, self.factor))
        return max(0.0, *waits)

    async def acquire(self, tokens: int) -> None:
        """Wait until a request reserving ``tokens`` may be sent, then take its cost from the buckets."""
        self.waiting += 1
        try:
            async with self.lock:
                while (wait := self.delay(tokens)) > 0:
                    await self.sleep(wait)
                if self.requests:
                    self.requests.level -= 1
                if self.tokens:
                    self.tokens.level -= tokens
                self.admitted += 1
                self.admitted_tokens += tokens
        finally:
            self.waiting -= 1

    def settle(self, reserved: int, used: int) -> None:
        """Give back what a finished request reserved but did not use (or take what it used beyond that)."""
        if self.tokens:
            self._refill(self.clock())
            self.tokens.level = min(self.tokens.capacity, self.tokens.level + reserved - used)
        self.admitted_tokens += used - reserved

    def pause(self, seconds: float) -> None:
        """Stop all admissions for ``seconds`` (Retry-After of a rate-limit 429)."""
        now = self.clock()
        self.paused_until = max(self.paused_until, now + seconds)
        self._refill(now)
        for bucket in (self.requests, self.tokens):
            if bucket:
                bucket.level = min(bucket.level, 0.0)

    def slow_down(self) -> None:
        self._refill(self.clock())
        self.factor = max(0.2, self.factor * 0.8)

    def observe(self, headers: Mapping[str, str]) -> None:
        """Adjust to the server's own view in ``x-ratelimit-*`` headers (see module docstring)."""
        now = self.clock()
        self._refill(now)
        for name, bucket in (("requests", self.requests), ("tokens", self.tokens)):
            limit_text = headers.get(f"x-ratelimit-limit-{name}")
            remaining_text = headers.get(f"x-ratelimit-remaining-{name}")
            if not limit_text or not remaining_text:
                continue
            try:
                limit, remaining = int(limit_text), int(remaining_text)
            except ValueError:
                continue
            if bucket is None or limit <= 0:
                continue
            if limit != bucket.limit and (limit < bucket.limit or not self.explicit):
                self.notices.append(
                    f"server reports {name} limit {limit:,}/min, configured {bucket.limit:,}: pacing to {limit:,}"
                )
                bucket.limit = limit
                bucket.level = min(bucket.level, bucket.capacity)
            server_deficit = limit - remaining
            slack = max(bucket.capacity * 0.25, 2.0)
            if server_deficit > bucket.deficit() + slack:
                bucket.level = bucket.capacity - server_deficit + slack

    def statistics(self) -> GateStats:
        now = self.clock()
        return GateStats(
            rpm=self.rpm,
            tpm=self.tpm,
            requests_level=self.requests.level if self.requests else None,
            tokens_level=self.tokens.level if self.tokens else None,
            paused_for=max(0.0, self.paused_until - now),
            admitted=self.admitted,
            admitted_tokens=self.admitted_tokens,
            waiting=self.waiting,
        )


def retry_after_seconds(headers: Mapping[str, str], message: str = "") -> float | None:
    """Retry-After as seconds: ``retry-after-ms``, else ``retry-after``, else the "try again in 1.146s" hint."""
    for key, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(key)
        if value:
            try:
                seconds = float(value) * scale
            except ValueError:
                continue
            if math.isfinite(seconds) and seconds >= 0:
                return seconds
    marker = "try again in "
    if marker in message:
        hint = message.split(marker, 1)[1].split(" ", 1)[0].rstrip(".")
        try:
            return parse_duration(hint)
        except ValueError:
            return None
    return None
