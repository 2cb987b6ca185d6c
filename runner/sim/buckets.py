"""How the simulator enforces a tier's limits, the way OpenAI documents them.

Each model has a requests bucket (RPM) and a tokens bucket (TPM). A bucket refills continuously at limit/60 per
second and holds at most ``limit * window / 60``: with ``window=60`` a whole minute's budget may be spent at once;
with a shorter window (OpenAI may enforce a minute's limit over shorter periods) a burst that fits the minute is
still rejected. A request larger than the window's capacity is admitted only when the bucket is full (it then goes
into debt), so nothing below the minute's limit is refused forever. A request larger than the whole minute's
limit is "Request too large": refused every time.

Admission cost = prompt tokens + the request's output maximum (or the default reservation) times n. When the
response is done, the tokens bucket is corrected with the real usage. Rejected requests still take one request
from the requests bucket ("failed requests also count"). Requests per day are counted per UTC day of the clock.

Header values follow the per-minute reading: ``remaining = limit - (tokens not yet refilled)`` and ``reset`` is
how long until the bucket is full again.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Admission", "Bucket", "ModelBuckets"]


@dataclass
class Bucket:
    limit: int  # per minute
    window: float  # seconds
    now: Callable[[], float]
    level: float = field(init=False)
    stamp: float = field(init=False)

    def __post_init__(self) -> None:
        self.level = self.capacity
        self.stamp = self.now()

    @property
    def capacity(self) -> float:
        return self.limit * self.window / 60.0

    @property
    def rate(self) -> float:
        return self.limit / 60.0

    def refill(self) -> None:
        t = self.now()
        self.level = min(self.capacity, self.level + (t - self.stamp) * self.rate)
        self.stamp = t

    def wait_for(self, cost: float) -> float:
        """Seconds until ``cost`` would be admitted (0 if now)."""
        self.refill()
        need = min(cost, self.capacity)
        if self.level >= need - 1e-9:
            return 0.0
        return (need - self.level) / self.rate

    def take(self, cost: float) -> None:
        self.level -= cost

    def give(self, amount: float) -> None:
        self.refill()
        self.level = min(self.capacity, self.level + amount)

    def remaining(self) -> int:
        self.refill()
        return max(0, math.floor(self.limit - (self.capacity - self.level)))

    def reset_seconds(self) -> float:
        self.refill()
        return max(0.0, (self.capacity - self.level) / self.rate)


@dataclass(frozen=True)
class Admission:
    ok: bool
    dimension: str = ""  # "requests" or "tokens"
    period: str = ""  # "min" or "day"
    retry_after: float = 0.0
    too_large: bool = False
    used: int = 0


class ModelBuckets:
    """Limits of one model: RPM and TPM buckets and an RPD counter."""

    def __init__(
        self, rpm: int | None, tpm: int | None, rpd: int | None, window: float, now: Callable[[], float]
    ) -> None:
        self.now = now
        self.requests = Bucket(rpm, window, now) if rpm else None
        self.tokens = Bucket(tpm, window, now) if tpm else None
        self.rpd = rpd
        self.day = -1
        self.day_count = 0

    def _day(self) -> int:
        day = int(self.now() // 86400)
        if day != self.day:
            self.day, self.day_count = day, 0
        return day

    def admit(self, cost: int, count_rejected: bool = True) -> Admission:
        day = self._day()
        if self.tokens and cost > self.tokens.limit:
            self._charge_rejected(count_rejected)
            return Admission(False, "tokens", "min", too_large=True)
        if self.rpd is not None and self.day_count >= self.rpd:
            return Admission(False, "requests", "day", retry_after=(day + 1) * 86400 - self.now(), used=self.day_count)
        waits = []
        if self.requests:
            waits.append(("requests", self.requests.wait_for(1)))
        if self.tokens:
            waits.append(("tokens", self.tokens.wait_for(cost)))
        blocked = [(w, d) for d, w in waits if w > 0]
        if blocked:
            wait, dimension = max(blocked)
            bucket = self.requests if dimension == "requests" else self.tokens
            used = 0 if bucket is None else math.ceil(bucket.capacity - bucket.level)
            self._charge_rejected(count_rejected)
            return Admission(False, dimension, "min", retry_after=wait, used=used)
        if self.requests:
            self.requests.take(1)
        if self.tokens:
            self.tokens.take(cost)
        self.day_count += 1
        return Admission(True)

    def _charge_rejected(self, count_rejected: bool) -> None:
        if count_rejected and self.requests and self.requests.level > -self.requests.capacity:
            self.requests.take(1)

    def settle(self, reserved: int, used: int) -> None:
        """Correct the tokens bucket once real usage is known: refund (or charge) the difference."""
        if self.tokens:
            self.tokens.give(reserved - used)

    def headers(self) -> dict[str, str]:
        from runner.durations import format_go

        out: dict[str, str] = {}
        for name, bucket in (("requests", self.requests), ("tokens", self.tokens)):
            if bucket is None:
                continue
            out[f"x-ratelimit-limit-{name}"] = str(bucket.limit)
            out[f"x-ratelimit-remaining-{name}"] = str(bucket.remaining())
            out[f"x-ratelimit-reset-{name}"] = format_go(bucket.reset_seconds())
        return out
