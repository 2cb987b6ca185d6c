"""What the server's ``x-ratelimit-*`` headers say about its count of a limit: evidence, never commands.

A reading (``limit``, ``remaining``, ``reset`` of one dimension, requests or tokens) is used only when all three
are present and consistent (``0 <= remaining <= limit``); the gate refuses readings about a period longer than a
minute before they reach this module. OpenAI pins down neither what ``remaining`` counts, nor when a header is
taken, nor how the server counts a request (its guide: an estimate from the characters and the maximum output, not
the tokenizer), so ``Evidence`` tells the plausible readings apart by their arithmetic instead of assuming one:

- continuous (OpenAI's observed per-minute units, or a sub-minute bucket's level): ``reset x limit / 60`` is what
  the server still counts against the limit, whatever its window. Every way the server might count (how many of
  its units one of the gate's is, at admission and at a refund, and what share of the limit other clients use)
  replays the gate's own admissions and refunds from an earlier reading and is judged by how well it predicts
  this one (``runner.candidates``); the gate paces to what the best of them leaves. Each replay starts from what
  the server said, so no belief about other clients can confirm itself, and where the readings cannot tell the
  candidates apart (a server that is full between the gate's requests), the one nearest to "nobody else, counted
  as the gate counts" is believed: the most the readings allow, so the gate sends more until they say otherwise.
- fixed window (remaining = limit - used this clock minute, or this window of a few seconds; reset = time to the
  window's end): recognised when ``limit - remaining < reset x limit / 60``, which no continuous reading can
  show, or when the end of the window (now + reset) stays put while the gate uses the limit; its length is how
  far the end jumps from one window to the next. The count's growth since a reading ``WINDOW_SPAN`` older in the
  same window (or since the window began) is a sample of the gate's own rate and the rate the server counted; a
  least-squares fit (``_Hypothesis.fit``) tells the server's scale from other use, and others' use is the recent
  excess over that scale. Under a window shorter than a minute the gate also sends no more in a window than it
  may use of it (``window_wait``): answers to requests of an earlier window give nothing back in this one.
- sliding log (the count of the last few seconds, each request leaving it whole; reset = until the newest
  leaves): recognised by a reset, or an end less the gate's last admission, that stays put while the count
  moves (``_Hypothesis.slides``). Each reading is a sample of the log's count against the gate's own requests in
  it, for the same fit; and the gate admits a request only where its own requests in the log, less what their
  answers gave back, leave room for it (``log_wait``).
- no headers: the "Limit N, Used M" of 429s are the readings. The balance between two of them is the others' use
  if the server was short all along (a replay at the rate that leaves never touches zero), else at least it. An
  answer without a 429 is the only other sign: after a quiet spell of a few seconds the estimate fades (a probe; a
  429 puts it back), so a wrong belief in others' use costs about 15 s at most.

Whether a header describes the server at the request's admission (``sent``) or at its answer (``answered``) is
judged both ways; the way that explains the readings clearly better is believed (while it stays the better), and
until then the larger estimate, but no more than the limit unless both say so (the benefit of the doubt: a 429
will say if it was wrong, see ``explain``, for ``PREFER_SECONDS`` unless another 429 backs it up or the readings
lean its way: a wrong reading can starve the right one of samples). docs/pacing.md has the model as equations,
its invariants and the reason for each constant.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from runner.candidates import CHANGE_KEEP, CHANGE_OTHER, MAX_SCALE, MIN_SCALE, SCALES, Candidates
from runner.durations import parse_duration

__all__ = [
    "EVIDENCE_SECONDS",
    "MAX_SCALE",
    "MAX_SHARE",
    "MIN_SCALE",
    "MIN_SHARE",
    "Evidence",
    "Ledger",
    "Reading",
    "read_reading",
]

EVIDENCE_SECONDS = 3.0  # time constant of the other-use estimate
STALE_WORDS = 2.0  # seconds: a reading waits no longer for a quiet peer's word (a word is fresh as long)
LEDGER_SECONDS = 130.0  # how long the gate's own use is remembered
GIVEN_BACK_ANSWERS = 50  # answers the share they give back is averaged over
ANCHOR_SECONDS = 1.0  # a continuous reading is judged against the last one at least this much older
MIN_SPAN = 0.05  # seconds between two readings compared: answers that arrive together are read as one
MAX_SHARE = 4.0  # a server that counts a request as a quarter of the gate's estimate, at the least
MIN_SHARE = 0.02  # of the limit, whatever others seem to use: the gate keeps sending, so it keeps learning
FIT_SECONDS = 10.0  # time constant of the fit of the server's scale (others' use: EVIDENCE_SECONDS)
WINDOW_SPAN = 4.0  # seconds: a fixed window's count is sampled as its growth since a reading this much older
WINDOW_CHANGE = 0.5  # a growth short of the fit's by this share of others' use says that their use changed
PERIODS = (1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0)  # seconds: the fixed windows a minute's limit may be counted in
JUMPS_SECONDS = 120.0  # how long a jump of a window's end says what the window's period is
SAME_END = 0.05  # seconds: two readings whose ends are this close are of one fixed window (the network's jitter)
TRANSIT_MARGIN = 0.01  # seconds: a request sent this much before a window began (by the readings) may be in it
BLOCK_SECONDS = 0.1  # the gate's own requests are summed in blocks this long (``OwnLog``)
MOST_STEPS_KEPT = 256  # of those, at most this many (a fixed window shows in a few dozen; the rest is cost)
SHAPE_READINGS = 8  # a sliding log is recognised by this many readings in a row
SLIDING_SECONDS = 30.0  # and believed this long after the last time they showed it
BELIEVE = 0.5  # a hypothesis is believed once its spread is under this share of the other's (then while it leads)
PREFER_SECONDS = 10.0  # a 429's word on which reading is right holds this long unless another 429 backs it up
QUIET_SECONDS = 8.0  # without headers: this long without a 429 and the estimate of others' use starts to fade,
PROBE_SECONDS = 2.0  # by exp(-(seconds / this) ** 2): a probe, every QUIET_SECONDS + a few while they stay
PROBE_HELD = 2.0  # seconds: a probe's 429 says the server held what the runners used over this long before it
PROBE_KEEP = 0.8  # and the estimate it puts back leaves them at least this much of that


@dataclass(frozen=True)
class Reading:
    """One dimension of a reply's ``x-ratelimit-*`` headers."""

    limit: int
    remaining: int
    reset: float


def stated_limit(headers: Mapping[str, str], name: str) -> int | None:
    """The limit ``x-ratelimit-limit-{name}`` (requests or tokens) states: a positive whole number, else None. The
    one reading of that header (the gate's evidence, the tier detection and 429 diagnosis all take it from here)."""
    value = headers.get(f"x-ratelimit-limit-{name}")
    text = value.strip() if value is not None else ""
    return int(text) if text.isdigit() and int(text) > 0 else None


def read_reading(headers: Mapping[str, str], name: str) -> Reading | str | None:
    """The ``name`` (requests or tokens) reading of ``headers``: None when absent, a problem when unusable."""
    given = [headers.get(f"x-ratelimit-{part}-{name}") for part in ("limit", "remaining", "reset")]
    if any(v is None or not v.strip() for v in given):
        return None
    limit_text, remaining_text, reset_text = (str(v).strip() for v in given)
    try:
        limit, remaining = stated_limit(headers, name), int(remaining_text)
        reset = parse_duration(reset_text)
    except ValueError:
        return f"unreadable {name} headers ({limit_text}, {remaining_text}, {reset_text})"
    if limit is None:
        return f"unreadable {name} headers ({limit_text}, {remaining_text}, {reset_text})"
    if not 0 <= remaining <= limit or not math.isfinite(reset) or reset < 0:
        return f"inconsistent {name} headers (limit {limit_text}, remaining {remaining_text}, reset {reset_text})"
    return Reading(limit, remaining, reset)


def _start(t: float, period: float, phase: float = 0.0) -> float:
    """When the period holding ``t`` began, periods of ``period`` seconds beginning at ``phase``."""
    return phase + math.floor((t - phase) / period) * period


def _count(reading: Reading, period: float) -> float:
    """What a fixed window or a sliding log of ``period`` seconds counts: the limit less ``remaining``, or, where
    ``remaining`` is the window's own room (never more than the window holds), the window's capacity less it."""
    capacity = reading.limit * period / 60.0
    return float(reading.limit - reading.remaining if reading.remaining > capacity else capacity - reading.remaining)


class _Block:
    """The gate's requests admitted in one ``BLOCK_SECONDS``: each ``[admitted at, cost, given back at, given
    back]``, and their net sum (cost less what was given back so far)."""

    __slots__ = ("entries", "net", "start")

    def __init__(self, start: float) -> None:
        self.start = start
        self.entries: list[list[float]] = []
        self.net = 0.0


class OwnLog:
    """The gate's own requests of the last minute, each with what its answer gave back and when: what a fixed window
    or a sliding log still counts of them. Kept in blocks of ``BLOCK_SECONDS`` with their net sums, so what the
    last seconds hold costs a block's requests and a sum per block, not a request each (at 500 requests a second a
    5 s window holds 2,500); a refund finds its request by its time."""

    def __init__(self) -> None:
        self.blocks: deque[_Block] = deque()
        self.by_time: dict[float, list[list[float]]] = {}
        self.given: deque[tuple[float, float, float]] = deque()  # (given back at, admitted at, amount), in order

    def add(self, t: float, cost: float) -> None:
        start = _start(t, BLOCK_SECONDS)
        if not self.blocks or self.blocks[-1].start < start:
            self.blocks.append(_Block(start))
        block = self.blocks[-1]
        entry = [t, cost, math.inf, 0.0]
        block.entries.append(entry)
        block.net += cost
        self.by_time.setdefault(t, []).append(entry)
        while t - self.blocks[0].start > 60.0 + BLOCK_SECONDS:
            for old in self.blocks.popleft().entries:
                same = self.by_time[old[0]]
                same.remove(old)
                if not same:
                    del self.by_time[old[0]]
        while self.given and t - self.given[0][0] > 60.0:
            self.given.popleft()

    def refund(self, sent: float, now: float, amount: float) -> None:
        """The request admitted at ``sent`` gave back ``amount`` ``now`` (the first of those admitted then that has
        not yet, if several were)."""
        for entry in self.by_time.get(sent, ()):
            if entry[2] == math.inf:
                entry[2], entry[3] = now, amount
                start = _start(sent, BLOCK_SECONDS)
                for block in reversed(self.blocks):
                    if block.start == start:
                        block.net -= amount
                        break
                self.given.append((now, sent, amount))
                return

    def held(self, since: float, at: float = math.inf) -> float:
        """What the requests admitted after ``since`` (up to ``at``) still count: their costs less what their
        answers had given back by ``at``."""
        total = 0.0
        for block in reversed(self.blocks):
            if block.start + BLOCK_SECONDS <= since:
                break
            if block.start > since and block.start + BLOCK_SECONDS <= at:
                total += block.net
            else:
                total += sum(cost - back for t, cost, _, back in block.entries if since < t <= at)
        for given_at, sent, amount in reversed(self.given):  # given back after ``at``: not yet, then
            if given_at <= at:
                break
            if since < sent <= at:
                total += amount
        return total

    def oldest(self, since: float) -> Iterator[tuple[float, float]]:
        """``(admitted at, what it still counts)`` of the requests admitted after ``since``, oldest first."""
        first = len(self.blocks)
        while first > 0 and self.blocks[first - 1].start + BLOCK_SECONDS > since:
            first -= 1
        for k in range(first, len(self.blocks)):
            for t, cost, _, back in self.blocks[k].entries:
                if t > since:
                    yield t, cost - back


class Ledger:
    """The gate's own net use of one dimension, event by event, for the last ``LEDGER_SECONDS``."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.amounts: list[float] = []
        self.totals: list[float] = []  # cumulative, including this event
        self.offset = 0  # absolute position of times[0]

    @property
    def end(self) -> int:
        """Absolute position after the last event."""
        return self.offset + len(self.times)

    def add(self, t: float, amount: float) -> int:
        total = (self.totals[-1] if self.totals else 0.0) + amount
        self.times.append(t)
        self.amounts.append(amount)
        self.totals.append(total)
        if len(self.times) > 4096 and t - self.times[len(self.times) // 2] > LEDGER_SECONDS:
            drop = len(self.times) // 2
            del self.times[:drop], self.amounts[:drop], self.totals[:drop]
            self.offset += drop
        return self.end

    def time_at(self, position: int) -> float | None:
        """When the event just before ``position`` happened."""
        i = position - 1 - self.offset
        return self.times[i] if 0 <= i < len(self.times) else None

    def total_until(self, t: float) -> float:
        """Cumulative use of every event at or before ``t``."""
        i = bisect.bisect_right(self.times, t)
        return self.totals[i - 1] if i else (self.totals[0] - self.amounts[0] if self.totals else 0.0)

    def total_at(self, position: int) -> float:
        i = min(position, self.end) - 1 - self.offset
        if i < 0:
            return self.totals[0] - self.amounts[0] if self.totals else 0.0
        return self.totals[i]

    def last_admission(self, position: int) -> float | None:
        """When the last admission (not a refund) before ``position`` happened, among the last 64 events."""
        i = min(position, self.end) - 1 - self.offset
        for j in range(i, max(-1, i - 64), -1):
            if self.amounts[j] > 0:
                return self.times[j]
        return None

    def events(self, start: int, stop: int) -> list[tuple[float, float]]:
        """``(time, amount)`` of the events after position ``start`` up to ``stop``."""
        lo, hi = max(start, self.offset) - self.offset, min(stop, self.end) - self.offset
        return list(zip(self.times[lo:hi], self.amounts[lo:hi], strict=True)) if lo < hi else []

    def replay(
        self, deficit: float, start: int, stop: int, since: float, until: float, rate: float
    ) -> tuple[float, bool]:
        """A deficit ``deficit`` at time ``since`` (just after position ``start``) carried to ``until`` through the
        events up to ``stop``, refilling at ``rate``: what the server would show if only this gate used it, and
        whether it touched zero on the way (then refill was lost and the replay says less than it seems)."""
        t, floored = since, False
        for i in range(max(start, self.offset) - self.offset, min(stop, self.end) - self.offset):
            deficit -= (self.times[i] - t) * rate
            if deficit < 0:
                deficit, floored = 0.0, True
            deficit += self.amounts[i]
            t = self.times[i]
        deficit -= max(0.0, until - t) * rate
        if deficit < 0:
            deficit, floored = 0.0, True
        return deficit, floored


class _Hypothesis:
    """Where a header's reading is taken: at the request's admission (``sent``) or at its answer (``answered``)."""

    def __init__(self, name: str, scales: Sequence[float] = SCALES) -> None:
        self.name = name
        self.candidates = Candidates(scales)  # judged by continuous readings from headers
        self.judged = False  # the last readings were continuous ones from headers: the candidates say it
        self.anchors: list[tuple[int, float, float]] = []  # (position, time, deficit) of the last readings
        self.position = -1
        self.time = 0.0
        self.deficit = 0.0
        self.anchor = (0.0, 0.0, -1)  # (time, end, position) of the reading the next end is compared with
        self.ends: list[tuple[float, bool]] = []  # (when, whether the end stayed put) for recent readings
        self.mine = 0.0  # exponentially weighted per-second use: the gate's own, what the server counted, and
        self.counted = 0.0  # the weights, so recent samples count most
        self.weight = 0.0
        self.limit_rate = 0.0  # the limit per second the samples were taken under
        self.spread = 0.0  # mean absolute residual: how badly this hypothesis explains the readings
        self.samples = 0
        # exponentially weighted sums of a least-squares fit, weighted by each interval's length, of the rate the
        # server counted in an interval (v) to the gate's own rate in it (u): v = scale u + other. The gate's use
        # comes in lumps (requests admitted, refunds at answers) while other clients' is spread over time, so the
        # two are told apart once the gate's rate has varied from interval to interval
        self.sums = [0.0] * 6  # w, w u, w u u, w v, w u v, w v v
        self.headed = False  # samples come from headers (else from 429s alone)
        self.marks: deque[tuple[float, float, float]] = deque()  # (time, gate's use, server's count) this window
        self.began = 0.0  # when that window began
        self.end = 0.0  # the end of the window the last reading was in (its time + reset)
        self.jumps: deque[tuple[float, float]] = deque(maxlen=MOST_STEPS_KEPT)  # (when, how far) it moved on
        self.window: tuple[float, float] | None = None  # (start, period) of the fixed window as this reading sees it
        self.steps: deque[tuple[float, float]] = deque()  # (when, how far the end moved) from reading to reading
        self.still = 0  # how many of the steps stayed put
        # (reset, the end less the gate's last admission, remaining + reset x limit rate) of the last readings
        self.shape: deque[tuple[float, float, float]] = deque(maxlen=SHAPE_READINGS)

    def slides(self, largest: float, now: float) -> float | None:
        """The length of a sliding log, if the readings are of one: the reset stays put at about it (the newest
        admission, another client's, was just now) or the end stays put that far after the gate's own last
        admission, while the count and the reset do not add up to one figure as a bucket's do (its remaining and
        reset both say the deficit). A bucket's readings never hold the reset or that lag steady with the count
        moving by a request."""
        if len(self.shape) < SHAPE_READINGS or self.stays(now):  # a fixed window's end stays put
            return None
        sums = [k for _, _, k in self.shape]
        if max(sums) - min(sums) <= 0.2 * largest + 2.0:
            return None
        for values in ([r for r, _, _ in self.shape], [lag for _, lag, _ in self.shape]):
            middle = statistics.median(values)  # most of them: a request refused, or still on its way to the
            near = sum(1 for v in values if abs(v - middle) <= SAME_END)  # server, is not the log's newest
            if middle >= 0.5 and near >= len(values) - 2:
                return min(PERIODS, key=lambda p: abs(math.log(p / middle)))
        return None

    def stays(self, now: float) -> bool:
        """Whether the end of the readings stays put from one to the next at least as often as it moves (a fixed
        window; a sliding log's end moves with every admission), or there are too few to say."""
        self._forget_steps(now)
        return len(self.steps) < 4 or 2 * self.still >= len(self.steps)

    def step(self, now: float, moved: float) -> None:
        """The end moved by ``moved`` since the last reading."""
        self.steps.append((now, moved))
        self.still += abs(moved) < SAME_END
        self._forget_steps(now)

    def _forget_steps(self, now: float) -> None:
        while self.steps and (now - self.steps[0][0] > JUMPS_SECONDS or len(self.steps) > MOST_STEPS_KEPT):
            self.still -= abs(self.steps.popleft()[1]) < SAME_END

    def regular(self, now: float) -> bool:
        """Whether the readings are of fixed windows shorter than a minute: their end stays put at least as often as
        it moves, and (all but a tenth of the time) it either stays put or moves on by whole windows. A continuous
        reading's end moves by each request's share of the limit, and back at each answer's refund."""
        period = self.period(now)
        if period >= 60.0 or len(self.steps) < 2 * SHAPE_READINGS or not self.stays(now):
            return False
        off = sum(
            1
            for _, moved in self.steps
            if abs(moved) >= SAME_END and (moved < 0.5 or abs(moved - round(moved / period) * period) > 2 * SAME_END)
        )
        return off <= 0.1 * len(self.steps)

    def period(self, now: float) -> float:
        """The length of a fixed window: what the end moves on by from one window to the next (the median of its
        recent jumps: a window without a reading makes one twice as long), as the nearest of ``PERIODS``; a minute until
        one has been seen, or while the end moves more often than it stays put (readings taken at another moment
        than this hypothesis says: the end moves by each request's latency)."""
        while self.jumps and now - self.jumps[0][0] > JUMPS_SECONDS:
            self.jumps.popleft()
        if not self.jumps or not self.stays(now):
            return 60.0
        typical = statistics.median_low(jump for _, jump in self.jumps)
        return min(PERIODS, key=lambda p: abs(math.log(p / typical)))

    def fit(self) -> tuple[float, float]:
        """``(scale, other)``: how many of the server's units one of the gate's is, and what others use per second.

        Three readings of the samples compete, each by how little of them it leaves unexplained: all of the excess
        is others' use (scale 1), all of it is the server's scale (no others), or both, fitted (which must explain
        a third more to be believed: it has a parameter more). The scale is the server's and changes seldom; others'
        use comes and goes, so where it is fitted it is the excess over that scale of the last few seconds
        (``EVIDENCE_SECONDS``). Where no headers come, 429s alone (a few a minute) cannot tell them apart: the
        excess is taken as others' use."""
        if self.judged:
            scale, other = self.candidates.best
            return scale, other * self.limit_rate
        if not self.headed or self.samples == 0:
            scale = self.told_scale()  # the excess over what the 429s say the server counts is others' use
            return scale, (self.counted - scale * self.mine) / self._divisor if self.weight > 0 else 0.0
        w, wu, wuu, wv, wuv, wvv = self.sums
        if w <= 0 or wuu <= 0:
            return 1.0, 0.0
        suu, suv, svv = wuu - wu * wu / w, wuv - wu * wv / w, wvv - wv * wv / w  # centred
        others = (svv - 2 * suv + suu, 1.0, (wv - wu) / w)
        ratio = wuv / wuu
        scaled = (wvv - wuv * ratio, max(MIN_SCALE, min(MAX_SCALE, ratio)), 0.0)
        choices = [others, scaled] if wu > 0 and wuv > 0 else [others]  # net refunds say nothing of a scale
        if self.samples >= 8 and suu > (0.1 * wu / w) ** 2 * w:  # the gate's rate varied enough to fit both
            scale = suv / suu
            if MIN_SCALE <= scale <= MAX_SCALE:
                choices.append(((svv - suv * scale) * 1.5, scale, max(0.0, wv / w - scale * wu / w)))
        _, scale, other = min(choices)
        if other > 0:
            other = max(0.0, self.counted - scale * self.mine)
            # the samples cannot tell a scale from others' use at a steady pace; the 429s' "Requested" can: as much
            # of the excess as their scale explains is the server's counting, not another client
            floor = self.told_floor()
            lifted = min(floor, self.counted / self.mine) if self.mine > 0 and floor > 1.0 else scale
            if lifted > scale:
                scale, other = lifted, max(0.0, self.counted - lifted * self.mine)
        return scale, other

    def told_floor(self) -> float:
        """The least scale the 429s' "Requested" allows over a while, where they say the server counts a request as
        more than the gate does at admission (else 1): it then counts at least that much after the answer too,
        whether it gives back what was not used scaled like the reservation (the same scale), one for one or not at
        all (more)."""
        told = self.candidates.told_band()
        return math.exp(told[0] - told[1]) if told is not None and told[0] > told[1] else 1.0

    @property
    def share(self) -> float:
        """The share of the limit the gate may use, in its own count: the limit less others' use, divided by the
        server's scale (above 1 where the server counts a request as less than the gate does). Taken as 1 until a
        second or so of samples (or a couple of readings judged) is seen."""
        if self.judged:
            scale, other = self.candidates.best
            target = max(MIN_SHARE, min(MAX_SHARE, (1.0 - other) / scale))
            seen = min(1.0, self.candidates.weight / 2.0)  # a couple of readings before the first is believed
            return 1.0 + (target - 1.0) * seen
        if self.counted <= 0 or self.limit_rate <= 0:
            return 1.0 / self.told_scale()
        scale, other = self.fit()
        seen = min(1.0, self.weight / 0.25)
        target = max(MIN_SHARE, min(MAX_SHARE, (1.0 - other / self.limit_rate) / scale))
        return 1.0 + (target - 1.0) * seen

    @property
    def other(self) -> float:
        """What others use per second, as the fit says."""
        return max(0.0, self.fit()[1])

    def told_scale(self) -> float:
        """Where no headers come: how many of the server's units one of the gate's is, as the 429s' "Requested" says
        (1 unless they say it counts more than the gate: a word that it counts less would send more than the limit
        in the gate's own count, and without headers nothing would say it was wrong but 429s)."""
        told = self.candidates.told_band() if not self.headed else None
        return max(1.0, math.exp(told[0])) if told is not None else 1.0

    def learn(self, mine: float, counted: float, seconds: float, limit_rate: float) -> None:
        """Add a sample covering ``seconds`` (per-second uses under a limit of ``limit_rate`` per second); older
        samples fade with ``EVIDENCE_SECONDS`` (``FIT_SECONDS`` in the fit)."""
        self.limit_rate = limit_rate
        keep = math.exp(-max(0.0, seconds) / FIT_SECONDS)
        w, u, v = seconds, mine, counted
        sample = (w, w * u, w * u * u, w * v, w * u * v, w * v * v)
        self.sums = [a * keep + b for a, b in zip(self.sums, sample, strict=True)]
        fade = math.exp(-max(0.0, seconds) / EVIDENCE_SECONDS)
        self.mine = self.mine * fade + mine * (1 - fade)
        self.counted = self.counted * fade + counted * (1 - fade)
        self.weight = self.weight * fade + (1 - fade)

    @property
    def _divisor(self) -> float:
        """What the weighted sums of uses are divided by to give others' use per second where no headers come (the
        weight, but at least a quarter: one sample must not speak for seconds)."""
        return max(self.weight, 0.25)

    def leave_at_least(self, rate: float) -> None:
        """Where no headers come: lower the estimate of others' use so that the share it leaves the gate is at least
        ``rate`` per second of the gate's own use (see ``fit``: others' use is the excess over the told scale)."""
        if self.limit_rate <= 0 or rate <= 0:
            return
        scale = self.told_scale()
        most = max(0.0, self.limit_rate - scale * rate)  # per second, what others may use then
        self.counted = min(self.counted, scale * self.mine + most * self._divisor)

    def fade(self, seconds: float, scale: float) -> None:
        """Let what the server counted beyond the gate's own shrink over ``scale`` seconds (nothing to learn)."""
        keep = math.exp(-max(0.0, seconds) / scale)
        base = self.told_scale() * self.mine  # what the server counts of the gate's own use
        self.counted = base + (self.counted - base) * keep
        _, wu, wuu, wv, wuv, wvv = self.sums  # towards the server counting as the gate does
        self.sums[3] = wu + (wv - wu) * keep
        self.sums[4] = wuu + (wuv - wuu) * keep
        self.sums[5] = wuu + (wvv - wuu) * keep


@dataclass(frozen=True)
class _Waiting:
    """A continuous reading to judge, with the reading it is judged from (``start``, ``since``, ``deficit``)."""

    hypothesis: _Hypothesis
    start: int
    since: float
    deficit: float
    position: int
    at: float
    counted: float
    rate: float


class Evidence:
    """What one dimension's headers say about other use of the same limit, cross-checked with the gate's own."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ledger = Ledger()
        self.log = OwnLog()  # for a fixed window or a sliding log: what it still counts of the gate's requests
        scales = SCALES if name == "tokens" else (1.0,)  # a request is one request to any server
        self.hypotheses = (_Hypothesis("sent", scales), _Hypothesis("answered", scales))
        self.window_votes: deque[float] = deque()  # when a reading could only come from a fixed window
        self.sliding: float | None = None  # the length of the sliding log the readings are of, if they are
        self.slid_at = 0.0  # when the readings last showed it
        self.headed = False  # readings come from headers (else only from 429 messages)
        self.refused_at = -math.inf  # the last reading that came with a 429
        self.faded_at = -math.inf
        self.probed: list[tuple[float, float]] | None = None  # (mine, counted) of each hypothesis before probing
        self.was_windowed = False
        self.held: _Hypothesis | None = None  # believed on the spreads (see ``_reconsider``)
        self.preferred: _Hypothesis | None = None  # believed on the word of a 429, until the spreads decide or
        self.preferred_at = -math.inf  # ``PREFER_SECONDS`` pass without another 429 while the other leads
        self.seen = -math.inf  # when the last reading was weighed
        self.largest = 1.0  # the largest single use seen lately
        self.window: tuple[float, float] | None = None  # (start, period) of the fixed window last read
        self._share: float | None = None  # the share as last worked out (None: to be worked out again)
        self.stale = Ledger()  # refunds of uses admitted before that window began (it no longer counts them)
        self.peers = 0.0  # per second: what the runner processes sharing this limit use of it, as they say
        self.peer_times: list[float] = []  # when their admissions (+) and refunds (-) came, as they wrote them
        self.peer_amounts: list[float] = []
        self.waiting: list[_Waiting] = []  # readings to judge once the peers have spoken past them
        self.peers_cover = (math.inf, -math.inf)  # the span over which the events above are all of the peers' use
        self.peer_told: deque[tuple[float, float, float]] = deque()  # (when, their use until then, rate told then)
        self.given_back = 0.0  # the share of a reservation answers give back, lately
        self.answers = 0

    @property
    def believed(self) -> _Hypothesis | None:
        """The hypothesis the spreads hold (see ``_reconsider``), else the one a 429 pointed at (``explain``), else
        the one whose believed candidate alone counts a request as the 429s said (their "Requested"): under a short
        window both readings' spreads come close, and each time a belief was dropped the other's larger share (the
        benefit of the doubt) cost a 429."""
        if self.held is not None or self.preferred is not None:
            return self.held if self.held is not None else self.preferred
        agree = [h for h in self.hypotheses if h.judged and h.candidates.agrees()]
        return agree[0] if len(agree) == 1 else None

    def _leads(self, h: _Hypothesis) -> bool:
        """Whether ``h`` explains the readings better than the other, if only a little."""
        other = self.hypotheses[1] if h is self.hypotheses[0] else self.hypotheses[0]
        return min(h.samples, other.samples) >= 3 and h.spread < other.spread

    def _reconsider(self) -> None:
        """After the spreads moved: a hypothesis whose spread is under ``BELIEVE`` of the other's (once both have a
        few readings) is believed, and stays so while it leads; under a fixed window, the one that alone sees its
        end stay put or move on by whole windows. Under a short window both explain a server that is
        full between the gate's requests about as badly; a belief dropped as soon as its lead fell below 2x gave the
        gate the other's larger share at once, a 429 each time. A 429's word against the spreads is void."""
        sent, answered = self.hypotheses
        if min(sent.samples, answered.samples) < 3:
            return
        if self.was_windowed:  # a fixed window's end stays put, or moves on by whole windows, only at the right time:
            regular = [h for h in self.hypotheses if h.regular(self.seen)]  # a stronger word than spreads taken
            if len(regular) == 1:  # over windows of different lengths
                self.held = regular[0]
                if self.preferred is not self.held:
                    self.preferred = None
                return
        for h, other in ((sent, answered), (answered, sent)):
            if h.spread < BELIEVE * other.spread:
                self.held = h
                if self.preferred is not h:  # the spreads decide: an older 429's word against them is void
                    self.preferred = None
            elif h is self.held and not self._leads(h):
                self.held = None

    @property
    def refunds_scaled(self) -> bool:
        """Whether the server gives back what answers leave unused scaled like the reservation (so as the gate
        counts it), as the candidates of the believed reading (or of both, where neither is believed) say."""
        return self._refunds_are("scaled")

    @property
    def refunds_none(self) -> bool:
        """Whether the server gives nothing back of what answers leave unused, as the candidates of the believed
        reading (or of both, where neither is believed) say."""
        return self._refunds_are("none")

    def _refunds_are(self, way: str) -> bool:
        read = self._read()
        return bool(read) and all(h.judged and h.candidates.refunds == way for h in read)

    @property
    def admission(self) -> float:
        """How many of the server's units each unit the gate reserves is at admission, as the candidates of the
        believed reading say (of both, the more, where neither is believed; 1 before any judged a reading)."""
        believed = self.believed
        read = [believed] if believed is not None else self.hypotheses
        return max((h.candidates.admission for h in read if h.judged), default=1.0)

    def told(self, admission: float) -> None:
        """A 429 said the server counted a request as ``admission`` of the gate's units each (its "Requested")."""
        for h in self.hypotheses:
            h.candidates.told(admission)
        self._share = None

    def explain(self) -> bool:
        """A 429 arrived while pacing to the larger share: if one hypothesis leaves the gate clearly less, the 429
        says it is the right one. Returns whether that explains the 429."""
        if self.believed is not None:
            return False
        self._share = None
        read = [h for h in self.hypotheses if h.position >= 0]
        if len(read) < 2:
            return False
        low = min(read, key=lambda h: h.share)
        if max(h.share for h in read) - low.share > 0.05:
            self.preferred, self.preferred_at = low, self.seen
            return True
        return False

    @property
    def share(self) -> float:
        """The share of the limit the gate may use: the believed hypothesis's, else the larger (the benefit of the
        doubt; a 429 will tell if it was wrong). Kept until a reading or a 429 changes it: the gate asks for it on
        every admission."""
        if self._share is None:
            believed = self.believed
            if believed is not None:
                self._share = believed.share
            else:
                # the benefit of the doubt, but no more than the limit: a server said to count less than the gate
                # must first be shown to by the readings it explains
                shares = [h.share for h in self.hypotheses if h.position >= 0]
                if shares and min(shares) > 1.0:  # both say the server counts less: the smaller
                    self._share = min(shares)
                else:
                    self._share = max((min(1.0, x) for x in shares), default=1.0)
        return self._share

    @property
    def other(self) -> float:
        """What the server counts beyond the gate's own use, per second, as the share above is based on."""
        return min((h.other for h in self._read()), default=0.0)

    def _read(self) -> list[_Hypothesis]:
        """The believed hypothesis, else both that have a reading."""
        believed = self.believed
        return [believed] if believed is not None else [h for h in self.hypotheses if h.position >= 0]

    def hear_peers(
        self,
        now: float,
        rate: float,
        events: Sequence[tuple[float, float]] = (),
        cover: tuple[float, float] | None = None,
    ) -> None:
        """The runner processes sharing this limit say ``now`` that they use ``rate`` per second of it: known use,
        not another client's. ``events``: when their admissions and refunds came (as far as their words tell), and
        ``cover`` the span over which those are all of their use (None: not known)."""
        if self.peer_told:
            when, used, told = self.peer_told[-1]
            self.peer_told.append((now, used + told * (now - when), rate))
        else:
            self.peer_told.append((now, 0.0, rate))
        while len(self.peer_told) > 1 and now - self.peer_told[1][0] > LEDGER_SECONDS:
            self.peer_told.popleft()
        self.peers = rate
        for when, amount in events:
            i = bisect.bisect_right(self.peer_times, when)
            self.peer_times.insert(i, when)
            self.peer_amounts.insert(i, amount)
        old = bisect.bisect_left(self.peer_times, self.peer_times[-1] - LEDGER_SECONDS) if self.peer_times else 0
        del self.peer_times[:old], self.peer_amounts[:old]
        self.peers_cover = cover if cover is not None else (math.inf, -math.inf)
        # readings waiting for the peers' words: judged once every peer has spoken past them (or has gone quiet for
        # as long as a word stays fresh: it is judged with what is known)
        newest = max((w.at for w in self.waiting), default=-math.inf)
        ready = [w for w in self.waiting if cover is None or w.at <= cover[1] or newest - w.at > STALE_WORDS]
        self.waiting = [w for w in self.waiting if w not in ready]
        for w in ready:
            self._replay_judge(w)

    def admitted(self, now: float, cost: float) -> int:
        """The gate admitted a request of ``cost`` ``now``; returns its ledger position."""
        self.largest = max(cost, self.largest * 0.999)
        self.log.add(now, cost)
        return self.ledger.add(now, cost)

    def answered(self, reserved: float, back: float) -> None:
        """An answer gave back ``back`` of the ``reserved`` its request took: the share answers give back, over the
        last ``GIVEN_BACK_ANSWERS`` or so (the candidates need it to turn a server's count into a pace)."""
        self.given_back += (back / reserved - self.given_back) / min(self.answers + 1, GIVEN_BACK_ANSWERS)
        self.answers += 1

    def refunded(self, now: float, amount: float, sent: float) -> None:
        """A request sent at ``sent`` gave back ``amount`` ``now``: a fixed window that began after it was sent no
        longer counts what it gives back."""
        self.ledger.add(now, -amount)
        self.log.refund(sent, now, amount)
        began = self.window_start(now)
        if began is not None and sent < began:
            self.stale.add(now, -amount)

    def log_wait(self, now: float, cost: float, rate: float) -> float:
        """Under a sliding log: seconds until the gate's own requests of the log's last seconds, less what their
        answers gave back, leave room for ``cost`` in what the gate may use of it (``rate`` per second over the
        log's length); a request larger than that waits for an empty log. 0 where the readings are of no log. A
        token bucket's pace is not enough there: the log forgets a request only when it leaves, whole, so a
        bucket's burst after a quiet spell, or requests that arrive at its pace but not evenly, overrun it."""
        if self.sliding is None or self.sliding >= 60.0:  # a minute's log: the pace keeps within it, and its
            return 0.0  # requests on their way are a hundredth of it
        since, allowed = now - self.sliding, rate * self.sliding
        held = self.log.held(since)
        need = min(cost, allowed)
        if held + need <= allowed:
            return 0.0
        for t, amount in self.log.oldest(since):  # oldest first: until enough has left the log
            held -= amount
            if held + need <= allowed:
                return t - since
        return 0.0

    def window_wait(self, now: float, cost: float, rate: float) -> float:
        """Under a fixed window shorter than a minute: 0 if the gate's own requests of this window (less what their
        answers gave back in it) leave room for ``cost`` in what the gate may use of it (``rate`` per second over the
        window's length), else the seconds to the window's end (a request larger than that waits for an empty
        window). 0 where the readings are of no such window."""
        if not self.was_windowed:
            return 0.0
        seen = next((h for h in self.hypotheses if len(h.steps) >= SHAPE_READINGS and h.stays(now)), None)
        if seen is None or seen.window is None:
            return 0.0  # nor where the readings' ends move more than they stay put (a sliding log, say)
        start, period = seen.window
        began = _start(now, period, start)
        if period >= 60.0:  # a minute's count may be all the headers say while a bucket enforces the limit: its
            return 0.0  # pace is what holds then (waiting for the minute's end, the gate would burst into it)
        allowed = rate * period
        # a request sent just before the window began (by the readings, which reach the gate a network's delay
        # late) may reach the server after it began: counted in this one
        held = self.log.held(began - TRANSIT_MARGIN)
        if held == 0 or held + min(cost, allowed) <= allowed:
            return 0.0
        return began + period - now

    def refused_elsewhere(self, at: float) -> None:
        """Another runner process sharing this limit had a request refused at ``at``: the server was full then.
        Without headers that is the word a 429 of the gate's own would be: the quiet spell after which the estimate
        of others' use fades starts again, and a probe under way went too far (each process probing on its own
        clock: four processes on the gate file had 15-17% of their requests refused under a 1 s window, prose
        counted by characters and never given back)."""
        if not self.headed and at > self.refused_at:
            self.refused_at = at
            self._probe_too_far(at, lift=False)  # what they used up to it is not all told yet
            self._share = None

    def _probe_too_far(self, now: float, *, lift: bool = True) -> None:
        """The server refused a request while the estimate was fading: back to what was known before the probe, but
        (``lift``) to no less than the probe showed the server holds. Its room ended near what the runners used over
        the last ``PROBE_HELD`` seconds, so they may use ``PROBE_KEEP`` of that: an estimate formed from one odd
        sample (a pause at the start, answers given back that the server never gives back) was otherwise put back at
        every probe and held the gate below its room for the whole run (64-72% of the limit alone, prose counted by
        characters and never given back, under a 1 s window)."""
        if self.probed is not None:
            for h, (mine, counted) in zip(self.hypotheses, self.probed, strict=True):
                h.mine, h.counted = mine, counted
            if lift:
                since = now - PROBE_HELD
                used = self.ledger.total_until(now) - self.ledger.total_until(since) + self._peers_used(since, now)
                for h in self.hypotheses:
                    h.leave_at_least(PROBE_KEEP * used / PROBE_HELD)
        self.probed = None

    def quiet(self, now: float) -> None:
        """An answer without a 429. Where no headers come, that is the only sign that others use less than the
        estimate says: after ``QUIET_SECONDS`` without a 429 the estimate fades within a few seconds
        (``PROBE_SECONDS``), so the gate probes: where others still use the limit, a 429 soon says where the room
        ends (and the estimate is put back, for the next probe ``QUIET_SECONDS`` later: one 429 per probe); where
        they have gone, the gate has the whole limit back within about 15 s. With headers, the readings say it."""
        if self.headed or now - self.faded_at < 1.0:
            return
        began = self.refused_at + QUIET_SECONDS
        before, self.faded_at = max(0.0, self.faded_at - began), now
        after = max(0.0, now - began)
        if after > before and any(h.counted > h.told_scale() * h.mine for h in self.hypotheses):
            if self.probed is None:
                self.probed = [(h.mine, h.counted) for h in self.hypotheses]
            for h in self.hypotheses:  # the estimate times exp(-(seconds probing / PROBE_SECONDS) ** 2)
                h.fade((after**2 - before**2) / PROBE_SECONDS, PROBE_SECONDS)
            self._share = None

    def window_start(self, t: float) -> float | None:
        """When the fixed window holding ``t`` began, if the readings are of a fixed window."""
        if self.window is None:
            return None
        began, period = self.window
        return _start(t, period, began)

    def windowed(self, now: float) -> bool:
        """Whether the readings of the last two minutes are of a fixed window: two that only a window explains, or
        readings whose end stays put while the gate uses the limit, three times as often as it moves with it."""
        while self.window_votes and now - self.window_votes[0] >= 120.0:
            self.window_votes.popleft()
        if len(self.window_votes) >= 2 or any(h.regular(now) for h in self.hypotheses):
            return True
        for h in self.hypotheses:
            h.ends = [(t, still) for t, still in h.ends if now - t < 60.0]
            still = sum(1 for _, s in h.ends if s)
            if still >= 3 and still > 3 * (len(h.ends) - still):
                return True
        return False

    def observe(
        self,
        reading: Reading,
        now: float,
        sent_position: int | None = None,
        *,
        refused: bool = False,
        headers: bool = True,
    ) -> None:
        """Weigh one reading taken ``now``; ``sent_position`` is the ledger position just after its request's own
        admission (None for a reading that no request of the gate carried, e.g. a 429's message); ``refused``: it
        came with a 429, so the server is short now whatever a replay says; ``headers``: it came from the reply's
        headers (else from a 429's message)."""
        self.headed = self.headed or headers
        self._share = None
        self.seen = now
        for h in self.hypotheses:
            h.headed = self.headed
        if refused:
            self.refused_at = now
            for h in self.hypotheses:  # more than the limit in the gate's count went too far: a server said (by
                if not h.judged and h.fit()[0] < 1.0:  # window readings) to count less than the gate, half as much less
                    h.fade(math.log(2.0), 1.0)
            self._probe_too_far(now)
        elif (
            self.preferred is not None
            and now - max(self.preferred_at, self.refused_at) > PREFER_SECONDS
            and not self._leads(self.preferred)
        ):
            self.preferred = None  # the word of a 429 that no other 429 backed up: the benefit of the doubt again
        rate = reading.limit / 60.0
        counted = reading.reset * rate
        if reading.limit - reading.remaining < counted - 0.01 * reading.limit - 2:
            self.window_votes.append(now)  # less used than a continuous reading still counts: a fixed window
        references: list[tuple[_Hypothesis, int, float]] = []
        for h in self.hypotheses:
            if h.name == "sent":
                position = -1 if sent_position is None else sent_position
                at = self.ledger.time_at(position)
            else:
                position, at = self.ledger.end, now
            if at is None or position <= h.position:  # no admission to refer to, or older than what was read
                continue
            references.append((h, position, at))
            # a window's end stays put while the gate uses the limit; a continuous reading's moves with the use, by
            # the use times the server's scale (whatever it is: a server counting 2x moves it twice as far)
            anchor_time, anchor_end, anchor_position = h.anchor
            if at - anchor_time >= 0.2:
                used = (self.ledger.total_at(position) - self.ledger.total_at(anchor_position)) / rate
                moved = at + reading.reset - anchor_end
                if anchor_position >= 0 and used > 0.1 and not refused:  # a refused request was not counted
                    if abs(moved) < 0.2 * used:
                        h.ends.append((now, True))
                    elif moved > 0.2 * used:
                        h.ends.append((now, False))
                h.anchor = (at, at + reading.reset, position)
            onward = at + reading.reset - h.end
            if h.end and reading.reset > 0:  # a reset of 0 (nothing counted) says nothing of where a window ends
                h.step(now, onward)
                if onward > 0.5:  # on to a later window: a fixed window's end moves by its period (a continuous
                    h.jumps.append((now, onward))  # reading's by any amount)
            h.end = at + reading.reset if reading.reset > 0 else h.end
            last = self.ledger.last_admission(position)
            if last is not None and not refused:
                h.shape.append((reading.reset, at + reading.reset - last, reading.remaining + reading.reset * rate))
        sliding = next((p for h in self.hypotheses if (p := h.slides(self.largest, now)) is not None), None)
        if sliding is not None:
            self.slid_at = now
        elif self.sliding is not None and now - self.slid_at < SLIDING_SECONDS:  # a few readings in a row that miss
            sliding = self.sliding  # (the log empties between two of the gate's requests) do not end it
        windowed = sliding is None and self.windowed(now)
        if (windowed, sliding) != (self.was_windowed, self.sliding):  # what was learnt under another reading does
            self.was_windowed, self.sliding = windowed, sliding  # not carry over
            self.window = self.window if windowed else None
            for h in self.hypotheses:
                h.mine = h.counted = h.weight = 0.0
                h.judged = False
        for h, position, at in references:
            if h.position >= 0 and at - h.time < MIN_SPAN:  # too close to the last reading to tell anything:
                continue  # the next reading covers both
            if sliding is not None:
                self._sliding_sample(h, reading, at, sliding)
            elif windowed:
                self._window_sample(h, reading, position, at)
            elif h.position >= 0 and self.headed:
                self._judge(h, position, at, counted, rate)
            elif h.position >= 0:
                self._balance_sample(h, position, at, counted, rate)
            h.position, h.time, h.deficit = position, at, counted

    def _judge(self, h: _Hypothesis, position: int, at: float, counted: float, rate: float) -> None:
        """A continuous reading from headers (the server still counts ``counted``): every way the server might count
        is judged by it (``runner.candidates``), from a reading at least ``ANCHOR_SECONDS`` older (a wrong estimate
        of others' use misses by that much of it, which one request in transit does not drown). Where the peers
        tell when their use came, the reading waits until every peer has spoken past it (``hear_peers``)."""
        h.limit_rate, h.judged = rate, True
        h.anchors = [a for a in h.anchors if at - a[1] < 4 * ANCHOR_SECONDS] + [(h.position, h.time, h.deficit)]
        start, since, deficit = next((a for a in reversed(h.anchors) if at - a[1] >= ANCHOR_SECONDS), h.anchors[0])
        waiting = _Waiting(h, start, since, deficit, position, at, counted, rate)
        first, last = self.peers_cover
        if first <= since and last < at:
            self.waiting.append(waiting)
        else:
            self._replay_judge(waiting)

    def _replay_judge(self, w: _Waiting) -> None:
        events = self.ledger.events(w.start, w.position)
        known = w.since  # the peers' use is replayed as their rate from here on
        first, last = self.peers_cover
        if first <= w.since < last:  # and as the events they wrote up to ``last``
            known = min(w.at, last)
            span = self._peer_span(w.since, known)
            events = sorted(events + list(zip(self.peer_times[span], self.peer_amounts[span], strict=True)))
        h = w.hypothesis
        h.candidates.judge(w.deficit, events, w.since, w.at, w.rate, self.peers, w.counted, self.given_back, known)
        h.spread, h.samples = h.candidates.spread, h.candidates.readings
        self._reconsider()
        self._share = None

    def _peers_used(self, since: float, until: float) -> float:
        """What the runner processes sharing the limit used from ``since`` to ``until``: the events they wrote where
        those are all of their use, elsewhere the rates they told, each from when it was told."""
        first, last = self.peers_cover
        lo, hi = max(since, first), min(until, last)
        if lo >= hi:
            return self._told_until(until) - self._told_until(since)
        told = self._told_until(lo) - self._told_until(since) + self._told_until(until) - self._told_until(hi)
        return told + math.fsum(self.peer_amounts[self._peer_span(lo, hi)])

    def _peer_span(self, since: float, until: float) -> slice:
        """Where the peers' events after ``since`` up to ``until`` are in ``peer_times`` and ``peer_amounts``."""
        return slice(bisect.bisect_right(self.peer_times, since), bisect.bisect_right(self.peer_times, until))

    def _told_until(self, t: float) -> float:
        """The peers' use up to ``t`` by the rates they told (the first of them back before it was told)."""
        if not self.peer_told:
            return 0.0
        i = bisect.bisect_right(self.peer_told, t, key=lambda word: word[0])
        when, used, rate = self.peer_told[max(0, i - 1)]
        return used + rate * (t - when)

    def _balance_sample(self, h: _Hypothesis, position: int, at: float, counted: float, rate: float) -> None:
        """Where no headers come, the "Limit N, Used M" of 429s are the readings (the server is short at each), and
        pairs of them are all there is to learn from."""
        elapsed = at - h.time
        # the runner processes this one shares the limit with use it as this one does: their use (as their events
        # and the rates they told say) counts as the gate's own
        mine = self.ledger.total_at(position) - self.ledger.total_at(h.position) + self._peers_used(h.time, at)
        # the replay refills at what the estimate leaves the gate: where it holds, the server stays short as long
        # as the replay does, and what it counts beyond the replay corrects the estimate
        other = h.other
        left = max(0.05 * rate, rate - other)
        refill = max(0.05 * rate, left - self.peers)
        expected, floored = self.ledger.replay(h.deficit, h.position, position, h.time, at, refill)
        beyond = counted - expected + (rate - left) * elapsed  # beyond the gate's own use
        most = counted + (rate - left) * elapsed
        if not floored and min(counted, h.deficit) >= self.largest:
            self._sample(h, mine, beyond, elapsed, rate, most)
            return
        # the balance between two of them (the server short at both) says what others used, if the server was short
        # all along: it was, if a replay refilling at what that leaves never touches zero
        balance = counted - h.deficit - mine + rate * elapsed
        if 0 < balance < rate * elapsed and min(counted, h.deficit) >= self.largest:
            _, empty = self.ledger.replay(h.deficit, h.position, position, h.time, at, rate - balance / elapsed)
            if not empty:
                self._sample(h, mine, balance, elapsed, rate, balance)
                return
        # else the replay that touched zero lost refill that more use by others would have taken: what the server
        # counts beyond it is at least their use, worth learning when it says more than the estimate. Up to a
        # request's worth of it is crowding: a request that reached the server later than sent (a busy machine or
        # network) arrives on top of the next one
        beyond -= self.largest
        if beyond > other * elapsed:
            self._sample(h, mine, beyond, elapsed, rate, most)

    def _sample(self, h: _Hypothesis, mine: float, residual: float, elapsed: float, rate: float, most: float) -> None:
        """``mine``: the gate's own net use between two readings; ``residual``: what the server counted beyond it,
        at most ``most`` (what the reading's reset covers beyond what the estimate already held)."""
        if elapsed <= 0:
            return
        # one reading moves the estimate by its share of a few seconds, never by more than its own reset covers;
        # a request in transit at either reading shifts a residual by its size, so that much is allowed both ways
        cap = rate * elapsed * 1.5 + self.largest
        residual = max(-cap, min(residual, cap, most))
        k, other = h.fit()  # what the estimate does not explain
        h.spread += (abs(residual - other * elapsed - (k - 1.0) * mine) - h.spread) * 0.05
        h.learn(mine / elapsed, (mine + residual) / elapsed, elapsed, rate)  # net: refunds can outweigh admissions
        h.samples += 1
        self._reconsider()

    def _sliding_sample(self, h: _Hypothesis, reading: Reading, at: float, period: float) -> None:
        """A sliding log's reading: what the server counts of the last ``period`` seconds (the limit less
        ``remaining``, or the log's capacity less it where ``remaining`` is the log's own room), against the gate's
        own use in them: a sample of the gate's rate and the rate the server counted, for the fit."""
        rate = reading.limit / 60.0
        count = _count(reading, period)
        since = at - period  # the gate's requests in the log then, less what they had given back by then
        mine = self.log.held(since, at) + self._peers_used(since, at)
        k, other = h.fit()
        h.spread += (abs(count - k * mine - other * period) / period - h.spread) * 0.05
        step = at - h.time if h.position >= 0 else period
        h.learn(mine / period, count / period, min(step, period), rate)
        h.samples += 1
        self._reconsider()

    def _window_sample(self, h: _Hypothesis, reading: Reading, position: int, at: float) -> None:
        period = h.period(at)
        began = at + reading.reset - period
        self.window = (began, period)
        h.window = (began, period)
        elapsed = at - began
        if elapsed < 2.0:
            return
        used = _count(reading, period)
        mine = self.ledger.total_at(position) - self.ledger.total_until(began) + self._peers_used(began, at)
        mine -= self.stale.total_until(at) - self.stale.total_until(began)
        rate = reading.limit / 60.0
        h.spread += (abs(used - mine - h.other * elapsed) / max(1.0, elapsed) - h.spread) * 0.05
        # the sample is the count's growth since a reading WINDOW_SPAN older in this window, else since it began:
        # the gate's own rate in it and the rate the server counted, as for a continuous reading (so the fit tells
        # a scale from others' use the same way), and as recent, so others' leaving shows within seconds
        if abs(began - h.began) >= 1.0:
            h.began = began
            h.marks.clear()
        h.marks.append((at, mine, used))
        while len(h.marks) > 1 and at - h.marks[1][0] >= WINDOW_SPAN:  # the oldest is the one to compare with
            h.marks.popleft()
        since, mine_then, used_then = h.marks[0] if at - h.marks[0][0] >= WINDOW_SPAN else (began, 0.0, 0.0)
        span, grown, counted = at - since, mine - mine_then, used - used_then
        beyond = counted - grown
        if beyond < 0 and since == began:  # requests on their way to the server and refunds on their way back:
            beyond = min(0.0, beyond + self.largest)  # up to one counts less (at both ends of a growth: no matter)
        beyond = max(-rate * 1.1 * span, min(rate * 1.1 * span, beyond))
        # early in a window one request in transit is a large share of the count: such readings weigh less
        step = (at - h.time if h.position >= 0 else span) * min(1.0, span / WINDOW_SPAN) ** 2
        # where others used a good part of the limit and the count now grows by far less than the fit says, they
        # have gone (or use less): the samples from before say little of the server's scale now
        scale, other = h.fit()
        short = scale * grown + WINDOW_CHANGE * other * span - (grown + beyond)
        if since != began and other >= CHANGE_OTHER * rate and short > 0:
            h.sums = [x * CHANGE_KEEP for x in h.sums]
        h.learn(grown / span, (grown + beyond) / span, step, rate)
        h.samples += 1
        self._reconsider()
