"""How the simulator enforces a tier's limits, and each plausible way of reporting them in headers.

Each model has a requests bucket (RPM) and a tokens bucket (TPM). A bucket refills continuously at limit/60 per
second and holds at most ``limit * window / 60``: with ``window=60`` a whole minute's budget may be spent at once;
with a shorter window (OpenAI may enforce a minute's limit over shorter periods) a burst that fits the minute is
still rejected. A request larger than the window's capacity is admitted only when the bucket is full (it then goes
into debt), so nothing below the minute's limit is refused forever. A request larger than the whole minute's
limit is "Request too large": refused every time. Rejected requests still take one request from the requests
bucket ("failed requests also count"). Requests per day are counted per UTC day of the clock.

How a window is enforced (``enforcement``), since OpenAI does not say either:

| enforcement | what a request must fit in                                                             |
|-------------|----------------------------------------------------------------------------------------|
| bucket      | a token bucket of ``limit * window / 60`` refilled continuously (a GCRA, as gateways do) |
| fixed       | the count of the current clock window (``window`` seconds, aligned to the clock)          |
| sliding     | the count of the last ``window`` seconds (a log of every admission, each leaving whole)   |

Under ``fixed`` and ``sliding`` what the server "still counts" is the window's count, and it is "full again" (the
reset) when the window ends or the log's newest entry leaves it.

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
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from runner.durations import format_go

__all__ = ["ENFORCEMENTS", "READINGS", "Admission", "Bucket", "ModelBuckets"]

READINGS = ("minute", "bucket", "window", "none")
ENFORCEMENTS = ("bucket", "fixed", "sliding")


@dataclass
class Bucket:
    limit: int  # per minute
    window: float  # seconds
    now: Callable[[], float]
    background: float = 0.0  # share of the limit another client uses
    background_until: float = math.inf  # when it stops (clock time)
    enforcement: str = "bucket"  # see the module docstring
    level: float = field(init=False)
    stamp: float = field(init=False)
    minute: int = field(init=False)  # the clock minute ``used`` counts (window reading)
    used: float = field(init=False)
    span: int = field(init=False)  # the clock window ``counted`` counts (fixed)
    counted: float = field(init=False)  # what the current clock window holds (fixed)
    log: deque[list[float]] = field(init=False)  # [time, amount] of the last ``window`` seconds (sliding)
    logged: float = field(init=False)  # the log's sum

    def __post_init__(self) -> None:
        if self.enforcement not in ENFORCEMENTS:
            raise ValueError(f"unknown enforcement {self.enforcement!r} (known: {', '.join(ENFORCEMENTS)})")
        self.level = self.capacity
        self.stamp = self.now()
        self.minute = int(self.stamp // 60)
        self.used = (self.stamp - self.minute * 60) * self.rate * self.background  # the other client was there
        self.span = int(self.stamp // self.window)
        self.counted = (self.stamp - self.span * self.window) * self.rate * self.background
        self.log, self.logged = deque(), 0.0
        if self.enforcement == "sliding" and self.background:  # the other client was there: its last window
            steps = 20
            for i in range(1, steps + 1):
                self.log.append(
                    [self.stamp - self.window * (steps - i) / steps, self.window * self.rate * self.background / steps]
                )
            self.logged = self.window * self.rate * self.background

    @property
    def capacity(self) -> float:
        return self.limit * self.window / 60.0

    @property
    def rate(self) -> float:
        return self.limit / 60.0

    def refill(self, at: float | None = None) -> None:
        t = self.now() if at is None else at
        if self.stamp < self.background_until < t:  # the other client stops: its use up to then, none after
            self._advance(self.background_until)
            self.background = 0.0
        self._advance(t)

    def _advance(self, t: float) -> None:
        elapsed = max(0.0, t - self.stamp)
        self.level = min(self.capacity, self.level + elapsed * self.rate * (1.0 - self.background))
        span = int(t // self.window)
        if span != self.span:
            self.span, self.counted = span, (t - span * self.window) * self.rate * self.background
        else:
            self.counted += elapsed * self.rate * self.background
        minute = int(t // 60)
        if minute != self.minute:
            self.minute, self.used = minute, (t - minute * 60) * self.rate * self.background
        else:
            self.used += elapsed * self.rate * self.background
        self.stamp = t
        if self.enforcement == "sliding":
            if self.background and elapsed > 0:
                self._log(elapsed * self.rate * self.background)
            while self.log and self.log[0][0] <= t - self.window:
                self.logged -= self.log.popleft()[1]
            if not self.log:
                self.logged = 0.0  # no rounding left over

    def _log(self, amount: float) -> None:
        self.log.append([self.stamp, amount])
        self.logged += amount

    def wait_for(self, cost: float) -> float:
        """Seconds until ``cost`` would be admitted (0 if now): at the nominal refill rate for a bucket, when the
        window ends (fixed) or enough of the log has left it (sliding). A cost beyond the window's capacity needs
        an empty window."""
        self.refill()
        need = min(cost, self.capacity)
        if self.enforcement == "fixed":
            return 0.0 if self.counted + need <= self.capacity + 1e-9 else (self.span + 1) * self.window - self.stamp
        if self.enforcement == "sliding":
            held = self.logged
            if held + need <= self.capacity + 1e-9:
                return 0.0
            for at, amount in self.log:  # oldest first: until enough has left the window
                held -= amount
                if held + need <= self.capacity + 1e-9:
                    return at + self.window - self.stamp
            return 0.0  # not reached: an empty log holds any cost up to the capacity
        if self.level >= need - 1e-9:
            return 0.0
        return (need - self.level) / self.rate

    def take(self, cost: float, at: float | None = None) -> None:
        """Count ``cost`` now (``at``: the clock's time now, read once for every bucket a request takes from)."""
        self.refill(at)
        self.level -= cost
        self.used += cost
        self.counted += cost
        if self.enforcement == "sliding":
            self._log(cost)

    def give(self, amount: float, taken_at: float | None = None) -> None:
        """Give back ``amount`` taken at ``taken_at``; the clock minute's count is corrected only if it is still
        the minute that counted it."""
        self.refill()
        self.level = min(self.capacity, self.level + amount)
        if taken_at is None or int(taken_at // 60) == self.minute:
            self.used = max(0.0, self.used - amount)
        if taken_at is None or int(taken_at // self.window) == self.span:
            self.counted = max(0.0, self.counted - amount)
        for entry in reversed(self.log) if taken_at is not None else ():  # the admission's entry, if still there
            if entry[0] == taken_at:
                given = min(entry[1], amount)
                entry[1] -= given
                self.logged -= given
                break

    def deficit(self) -> float:
        """What the server still counts against the window: the bucket's lack, or the window's count."""
        self.refill()
        if self.enforcement == "fixed":
            return self.counted
        if self.enforcement == "sliding":
            return max(0.0, self.logged)
        return max(0.0, self.capacity - self.level)

    def full_in(self) -> float:
        """Seconds until the window counts nothing (the reset): at the nominal refill rate for a bucket."""
        deficit = self.deficit()
        if deficit <= 0:
            return 0.0
        if self.enforcement == "fixed":
            return (self.span + 1) * self.window - self.stamp
        if self.enforcement == "sliding":
            return self.log[-1][0] + self.window - self.stamp
        return deficit / self.rate

    def report(self, reading: str) -> tuple[int, float]:
        """``(remaining, reset seconds)`` as ``reading`` reports them."""
        self.refill()
        if reading == "window":
            return max(0, math.floor(self.limit - self.used)), (self.minute + 1) * 60 - self.stamp
        deficit = self.deficit()
        remaining = self.capacity - deficit if reading == "bucket" else self.limit - deficit
        return max(0, min(self.limit, math.floor(remaining))), self.full_in()


@dataclass(frozen=True)
class Admission:
    ok: bool
    dimension: str = ""  # "requests" or "tokens"
    period: str = ""  # "min" or "day"
    retry_after: float = 0.0
    too_large: bool = False
    used: int = 0
    at: float = 0.0  # when the server counted it (the clock's time): a refund names it by this


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
        enforcement: str = "bucket",
    ) -> None:
        if reading not in READINGS:
            raise ValueError(f"unknown header reading {reading!r} (known: {', '.join(READINGS)})")
        self.now = now
        self.reading = reading
        self.requests = Bucket(rpm, window, now, background, background_until, enforcement) if rpm else None
        self.tokens = Bucket(tpm, window, now, background, background_until, enforcement) if tpm else None
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
        at = self.now()
        for bucket, amount in ((self.requests, 1), (self.tokens, cost)):
            if bucket is not None:
                bucket.take(amount, at)
        self.day_count += 1
        return Admission(True, at=at)

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
