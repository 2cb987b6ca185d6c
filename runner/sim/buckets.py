"""How the simulator enforces a tier's limits, and each plausible way of reporting them in headers.

Each model has a requests bucket (RPM) and a tokens bucket (TPM). A bucket refills continuously at limit/60 per
second and holds at most ``limit * window / 60``: with ``window=60`` a whole minute's budget may be spent at once;
with a shorter window (OpenAI may enforce a minute's limit over shorter periods) a burst that fits the minute is
still rejected. A request larger than the window's capacity is admitted only when the bucket is full (it then goes
into debt), so nothing below the minute's limit is refused forever. A request larger than the whole minute's
limit is "Request too large": refused every time. Rejected requests still take one request from the requests
bucket ("failed requests also count"). Requests per day are counted per UTC day of the clock.

``background`` plays another client of the same organisation using that fraction of every limit: the bucket
refills at ``(1 - background) * limit / 60`` and the fixed-window counter grows by its use. It is visible to a
client only through the headers and 429s. With ``background_until`` (a time on the clock) it stops then.

What the ``x-ratelimit-*`` headers report (``reading``), since OpenAI does not pin it down:

| reading | remaining                                   | reset                           |
|---------|---------------------------------------------|---------------------------------|
| minute  | ``limit - deficit`` (per-minute units)      | time until the bucket is full   |
| bucket  | the enforcing bucket's own level             | time until the bucket is full   |
| window  | ``limit - used`` in the current clock minute | time until the minute ends      |
| none    | no rate-limit headers at all                 |                                 |

``deficit`` is what the bucket lacks to be full; the refill rate in ``reset`` is the nominal ``limit / 60`` (a
server cannot know what other clients will do next).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from runner.durations import format_go

__all__ = ["READINGS", "Admission", "Bucket", "ModelBuckets"]

READINGS = ("minute", "bucket", "window", "none")


@dataclass
class Bucket:
    limit: int  # per minute
    window: float  # seconds
    now: Callable[[], float]
    background: float = 0.0  # share of the limit another client uses
    background_until: float = math.inf  # when it stops (clock time)
    level: float = field(init=False)
    stamp: float = field(init=False)
    minute: int = field(init=False)  # the clock minute ``used`` counts (window reading)
    used: float = field(init=False)

    def __post_init__(self) -> None:
        self.level = self.capacity
        self.stamp = self.now()
        self.minute = int(self.stamp // 60)
        self.used = (self.stamp - self.minute * 60) * self.rate * self.background  # the other client was there

    @property
    def capacity(self) -> float:
        return self.limit * self.window / 60.0

    @property
    def rate(self) -> float:
        return self.limit / 60.0

    def refill(self) -> None:
        t = self.now()
        if self.stamp < self.background_until < t:  # the other client stops: its use up to then, none after
            self._advance(self.background_until)
            self.background = 0.0
        self._advance(t)

    def _advance(self, t: float) -> None:
        elapsed = max(0.0, t - self.stamp)
        self.level = min(self.capacity, self.level + elapsed * self.rate * (1.0 - self.background))
        minute = int(t // 60)
        if minute != self.minute:
            self.minute, self.used = minute, (t - minute * 60) * self.rate * self.background
        else:
            self.used += elapsed * self.rate * self.background
        self.stamp = t

    def wait_for(self, cost: float) -> float:
        """Seconds until ``cost`` would be admitted (0 if now), at the nominal refill rate."""
        self.refill()
        need = min(cost, self.capacity)
        if self.level >= need - 1e-9:
            return 0.0
        return (need - self.level) / self.rate

    def take(self, cost: float) -> None:
        self.refill()
        self.level -= cost
        self.used += cost

    def give(self, amount: float, taken_at: float | None = None) -> None:
        """Give back ``amount`` taken at ``taken_at``; the clock minute's count is corrected only if it is still
        the minute that counted it."""
        self.refill()
        self.level = min(self.capacity, self.level + amount)
        if taken_at is None or int(taken_at // 60) == self.minute:
            self.used = max(0.0, self.used - amount)

    def deficit(self) -> float:
        self.refill()
        return max(0.0, self.capacity - self.level)

    def report(self, reading: str) -> tuple[int, float]:
        """``(remaining, reset seconds)`` as ``reading`` reports them."""
        self.refill()
        if reading == "window":
            return max(0, math.floor(self.limit - self.used)), (self.minute + 1) * 60 - self.stamp
        deficit = self.deficit()
        remaining = self.level if reading == "bucket" else self.limit - deficit
        return max(0, min(self.limit, math.floor(remaining))), deficit / self.rate


@dataclass(frozen=True)
class Admission:
    ok: bool
    dimension: str = ""  # "requests" or "tokens"
    period: str = ""  # "min" or "day"
    retry_after: float = 0.0
    too_large: bool = False
    used: int = 0


class ModelBuckets:
    """Limits of one model: RPM and TPM buckets and an RPD counter, reported in ``reading``."""

    def __init__(
        self,
        rpm: int | None,
        tpm: int | None,
        rpd: int | None,
        window: float,
        now: Callable[[], float],
        reading: str = "minute",
        background: float = 0.0,
        background_until: float = math.inf,
    ) -> None:
        if reading not in READINGS:
            raise ValueError(f"unknown header reading {reading!r} (known: {', '.join(READINGS)})")
        self.now = now
        self.reading = reading
        self.requests = Bucket(rpm, window, now, background, background_until) if rpm else None
        self.tokens = Bucket(tpm, window, now, background, background_until) if tpm else None
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
            used = 0 if bucket is None else math.ceil(bucket.deficit())
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

    def settle(self, reserved: int, used: int, admitted_at: float | None = None) -> None:
        """Correct the tokens bucket once real usage is known: refund (or charge) the difference."""
        if self.tokens:
            self.tokens.give(reserved - used, admitted_at)

    def headers(self) -> dict[str, str]:
        if self.reading == "none":
            return {}
        out: dict[str, str] = {}
        for name, bucket in (("requests", self.requests), ("tokens", self.tokens)):
            if bucket is None:
                continue
            remaining, reset = bucket.report(self.reading)
            out[f"x-ratelimit-limit-{name}"] = str(bucket.limit)
            out[f"x-ratelimit-remaining-{name}"] = str(remaining)
            out[f"x-ratelimit-reset-{name}"] = format_go(reset)
        return out
