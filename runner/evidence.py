"""What the server's ``x-ratelimit-*`` headers say about its count of a limit: evidence, never commands.

A reading (``limit``, ``remaining``, ``reset`` of one dimension, requests or tokens) is used only when all three
are present and consistent (``0 <= remaining <= limit``); the gate refuses readings about a period longer than a
minute before they reach this module. OpenAI pins down neither what ``remaining`` counts nor when a header is
taken, so ``Evidence`` tells the plausible readings apart by their arithmetic instead of assuming one:

- continuous (OpenAI's observed per-minute units, or a sub-minute bucket's level): ``reset x limit / 60`` is what
  the server still counts against us, whatever its window. The gate's own admissions and refunds since the
  previous reading are replayed on a shadow of that deficit, refilling at what the estimate of other use leaves;
  what the server counts beyond the shadow corrects the estimate. A replay that touched zero says the server had
  more room than the estimate leaves (the estimate fades), except after a 429: then what the server counts beyond
  it is at least the others' use. Where no headers come, the "Limit N, Used M" of 429s are the readings: the
  balance between two of them is the others' use if the server was short all along (a replay at the rate that
  leaves never touches zero), else at least it. An answer without a 429 is the only other sign there: after a
  quiet spell the estimate fades (a probe; a 429 puts it back and makes the next probe wait longer).
- fixed window (remaining = limit - used this clock minute, reset = time to the minute's end): recognised when
  ``limit - remaining < reset x limit / 60``, which no continuous reading can show, or when the end of the window
  (now + reset) stays put while the gate uses the limit. What the server counts this window beyond the gate's
  own use since the window began is other use.

The server's count of the gate's own requests is not the gate's count: OpenAI's limiter estimates a request from its
characters and maximum output, not with the tokenizer. What the server counts beyond the gate's own use is therefore
either other clients' use or the server's own scale (it counts each of the gate's tokens as ``scale`` of its own),
and the two call for different pacing: an excess read as others' use where it is the scale swings the gate from
side to side and, on a server that counts twice the gate's estimate, down to a crawl. Each interval between two
readings is a sample of the gate's own rate and the rate the server counted; the gate's use comes in lumps
(admissions, refunds at answers) while others' is spread over time, so a least-squares fit tells them apart
(``_Hypothesis.fit``): all others' use, all scale, or both, whichever leaves the samples least unexplained. A
server that counts less than the gate (scale below 1) gives the gate more than the limit in its own count.

A server that reads full (or clearly below the replay of the gate's own use) while the gate holds requests back
has room the estimate does not know of: the share rises by ``PROBE_PER_SECOND`` of the limit a second until the
server is short again and its readings say how much it counts. So no belief about others holds the gate back for
long once they stop, and a server that counts less than the gate is found.

Whether a header describes the server at the request's admission (``sent``) or at its answer (``answered``) is
replayed both ways; the way that explains the readings clearly better is believed, and until then the larger
estimate, but no more than the limit unless both say so (the benefit of the doubt: a 429 will say if it was wrong,
see ``explain``, for ``PREFER_SECONDS`` unless another 429 backs it up: a wrong reading can starve the right one
of samples). One reading moves the estimate by at most its share of ``EVIDENCE_SECONDS`` and never by more than
its own ``reset`` covers, so no single reply can hold a gate back longer than its reset says.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass

from runner.durations import parse_duration

__all__ = ["EVIDENCE_SECONDS", "Evidence", "Ledger", "Reading", "read_reading"]

EVIDENCE_SECONDS = 3.0  # time constant of the other-use estimate
LEDGER_SECONDS = 130.0  # how long the gate's own use is remembered
MIN_SPAN = 0.05  # seconds between two readings compared: answers that arrive together are read as one
# 60 s brought the limit back twice as fast after another client stopped, but refused 1.23% instead of 0.74% under
# 40% other use at a 1 s window in bench/pacing.py (the virtual model did not show it)
FADE_SECONDS = 120.0  # an estimate the server cannot confirm (it is full) fades over this, so the gate probes
PROBE_PER_SECOND = 0.02  # the share rises this much a second while the server is full and the gate holds requests
MAX_SHARE = 4.0  # a server that counts a request as a quarter of the gate's estimate, at the least
MIN_SCALE, MAX_SCALE = 0.25, 50.0
FIT_SECONDS = 10.0  # time constant of the fit of the server's scale and others' use
FULL_SECONDS = 5.0  # time constant of how often the server reads full
PREFER_SECONDS = 10.0  # a 429's word on which reading is right holds this long unless another 429 backs it up
QUIET_SECONDS = 60.0  # without headers: this long without a 429 (twice that after each probe that found the
PROBE_SECONDS = 60.0  # estimate right, up to 4 times) and the estimate starts to fade by exp(-(seconds / this) ** 2)


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

    def __init__(self, name: str) -> None:
        self.name = name
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
        self.boost = 1.0  # how far probes have raised the share beyond what the samples say
        self.short = 0.0  # how often it read clearly less than the replay said
        self.full = 0.0  # how often the server read full lately (exponentially weighted), and how often the replay
        self.full_replayed = 0.0  # of the gate's own use said it would

    def fit(self) -> tuple[float, float]:
        """``(scale, other)``: how many of the server's units one of the gate's is, and what others use per second.

        Three readings of the samples compete, each by how little of them it leaves unexplained: all of the excess
        is others' use (scale 1), all of it is the server's scale (no others), or both, fitted (which must explain
        a third more to be believed: it has a parameter more). Where no headers come, 429s alone (a few a minute)
        cannot tell them apart: the excess is taken as others' use."""
        if not self.headed or self.samples == 0:
            return 1.0, (self.counted - self.mine) / max(self.weight, 0.25) if self.weight > 0 else 0.0
        w, wu, wuu, wv, wuv, wvv = self.sums
        if w <= 0 or wuu <= 0:
            return 1.0, 0.0
        suu, suv, svv = wuu - wu * wu / w, wuv - wu * wv / w, wvv - wv * wv / w  # centred
        others = (svv - 2 * suv + suu, 1.0, (wv - wu) / w)
        ratio = wuv / wuu
        scaled = (wvv - wuv * ratio, max(MIN_SCALE, min(MAX_SCALE, ratio)), 0.0)
        choices = [others, scaled]
        if self.samples >= 8 and suu > (0.1 * wu / w) ** 2 * w:  # the gate's rate varied enough to fit both
            scale = suv / suu
            if MIN_SCALE <= scale <= MAX_SCALE:
                choices.append(((svv - suv * scale) * 1.5, scale, max(0.0, wv / w - scale * wu / w)))
        _, scale, other = min(choices)
        return scale, other

    @property
    def share(self) -> float:
        """The share of the limit the gate may use, in its own count: the limit less others' use, divided by the
        server's scale (above 1 where the server counts a request as less than the gate does; see ``fit``), times
        what probes found beyond that. Taken as 1 until a second or so of samples is seen."""
        if self.counted <= 0 or self.limit_rate <= 0:
            return self.boost
        scale, other = self.fit()
        seen = min(1.0, self.weight / 0.25)
        target = max(0.02, min(MAX_SHARE, (1.0 - other / self.limit_rate) / scale))
        return (1.0 + (target - 1.0) * seen) * self.boost

    @property
    def other(self) -> float:
        """What others use per second, as the fit says."""
        return max(0.0, self.fit()[1])

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

    def probe(self, seconds: float, per_second: float) -> None:
        """The server had room the share left unused: raise the share by ``per_second`` of the limit each second,
        until the server is short again and its readings say how much it counts."""
        self.boost = min(MAX_SHARE, self.boost + per_second * max(0.0, seconds))

    def fade(self, seconds: float, scale: float) -> None:
        """Let what the server counted beyond the gate's own shrink over ``scale`` seconds (nothing to learn)."""
        keep = math.exp(-max(0.0, seconds) / scale)
        self.counted = self.mine + (self.counted - self.mine) * keep
        _, wu, wuu, wv, wuv, wvv = self.sums  # towards the server counting as the gate does
        self.sums[3] = wu + (wv - wu) * keep
        self.sums[4] = wuu + (wuv - wuu) * keep
        self.sums[5] = wuu + (wvv - wuu) * keep


class Evidence:
    """What one dimension's headers say about other use of the same limit, cross-checked with the gate's own."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ledger = Ledger()
        self.hypotheses = (_Hypothesis("sent"), _Hypothesis("answered"))
        self.window_votes: list[float] = []  # when a reading could only come from a fixed window
        self.headed = False  # readings come from headers (else only from 429 messages)
        self.refused_at = -math.inf  # the last reading that came with a 429
        self.faded_at = -math.inf
        self.probed: list[tuple[float, float]] | None = None  # (mine, counted) of each hypothesis before probing
        self.quiet_seconds = QUIET_SECONDS
        self.was_windowed = False
        self.preferred: _Hypothesis | None = None  # believed on the word of a 429, until the spreads decide or
        self.preferred_at = -math.inf  # ``PREFER_SECONDS`` pass without another 429
        self.seen = -math.inf  # when the last reading was weighed
        self.largest = 1.0  # the largest single use seen lately
        self.window: tuple[float, float] | None = None  # (start, period) of the fixed window last read
        self._share: float | None = None  # the share as last worked out (None: to be worked out again)
        self.stale = Ledger()  # refunds of uses admitted before that window began (it no longer counts them)
        self.peers = 0.0  # per second: what the runner processes sharing this limit use of it, as they say

    @property
    def believed(self) -> _Hypothesis | None:
        """The hypothesis that explains the readings clearly better than the other, once both have some."""
        sent, answered = self.hypotheses
        if min(sent.samples, answered.samples) >= 3:
            if sent.spread < 0.5 * answered.spread:
                return sent
            if answered.spread < 0.5 * sent.spread:
                return answered
        return self.preferred

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
        believed = self.believed
        if believed is not None:
            return believed.other
        return min((h.other for h in self.hypotheses if h.position >= 0), default=0.0)

    def hear_peers(self, rate: float) -> None:
        """The runner processes sharing this limit say they use ``rate`` per second of it: known use, not another
        client's."""
        self.peers = rate

    def admitted(self, now: float, cost: float) -> int:
        """The gate admitted a request of ``cost`` ``now``; returns its ledger position."""
        self.largest = max(cost, self.largest * 0.999)
        return self.ledger.add(now, cost)

    def refunded(self, now: float, amount: float, sent: float) -> None:
        """A request sent at ``sent`` gave back ``amount`` ``now``: a fixed window that began after it was sent no
        longer counts what it gives back."""
        self.ledger.add(now, -amount)
        began = self.window_start(now)
        if began is not None and sent < began:
            self.stale.add(now, -amount)

    def quiet(self, now: float) -> None:
        """An answer without a 429. Where no headers come, that is the only sign that others use less than the
        estimate says: after ``QUIET_SECONDS`` without a 429 the estimate fades, slowly at first and faster the
        longer no 429 comes (``PROBE_SECONDS``), so the gate probes: where others still use the limit, a 429
        soon says where the room ends (and the estimate is put back; the next probe waits twice as long); where
        they have gone, the gate has the whole limit back within minutes. With headers, the readings say it."""
        if self.headed or now - self.faded_at < 1.0:
            return
        began = self.refused_at + self.quiet_seconds
        before, self.faded_at = max(0.0, self.faded_at - began), now
        after = max(0.0, now - began)
        if after > before and any(h.counted > h.mine for h in self.hypotheses):
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
        return began + math.floor((t - began) / period) * period

    def windowed(self, now: float) -> bool:
        """Whether the readings of the last two minutes are of a fixed window: two that only a window explains, or
        readings whose end stays put while the gate uses the limit, three times as often as it moves with it."""
        self.window_votes = [t for t in self.window_votes if now - t < 120.0]
        if len(self.window_votes) >= 2:
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
        held: bool = False,
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
            if self.probed is not None:  # the probe went too far: back to what was known before it
                for h, (mine, counted) in zip(self.hypotheses, self.probed, strict=True):
                    h.mine, h.counted = mine, counted
                self.quiet_seconds = min(4 * QUIET_SECONDS, 2 * self.quiet_seconds)
            self.probed = None
        elif self.preferred is not None and now - max(self.preferred_at, self.refused_at) > PREFER_SECONDS:
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
            # a window's end stays put while the gate uses the limit; a continuous reading's moves with the use
            anchor_time, anchor_end, anchor_position = h.anchor
            if at - anchor_time >= 0.2:
                used = (self.ledger.total_at(position) - self.ledger.total_at(anchor_position)) / rate
                moved = at + reading.reset - anchor_end
                if anchor_position >= 0 and used > 0.1:
                    if abs(moved) < 0.2 * used:
                        h.ends.append((now, True))
                    elif abs(moved - used) < 0.2 * used:
                        h.ends.append((now, False))
                h.anchor = (at, at + reading.reset, position)
        windowed = self.windowed(now)
        if windowed != self.was_windowed:  # what was learnt under the other reading does not carry over
            self.was_windowed = windowed
            for h in self.hypotheses:
                h.mine = h.counted = h.weight = 0.0
        for h, position, at in references:
            if h.position >= 0 and at - h.time < MIN_SPAN:  # too close to the last reading to tell anything:
                continue  # the next reading covers both
            if windowed:
                self._window_sample(h, reading, position, at)
            elif h.position >= 0:
                self._continuous_sample(h, position, at, counted, rate, refused, held)
            h.position, h.time, h.deficit = position, at, counted

    def _continuous_sample(
        self, h: _Hypothesis, position: int, at: float, counted: float, rate: float, refused: bool, held: bool
    ) -> None:
        """Compare a continuous reading (the server still counts ``counted``) with the last one ``h`` read."""
        elapsed = at - h.time
        # the runner processes this one shares the limit with (``peers``, per second) use it as this one does: their
        # use counts as the gate's own, spread over the interval
        mine = self.ledger.total_at(position) - self.ledger.total_at(h.position) + self.peers * elapsed
        # the replay refills at what the estimate leaves the gate: where it holds, the server stays short as long
        # as the replay does, and what it counts beyond the replay corrects the estimate. It runs in the gate's
        # units: the deficit divided by the server's scale, refilling at what others leave divided by it
        k, other = h.fit()
        left = max(0.05 * rate, rate - other)
        refill = max(0.05 * rate / k, left / k - self.peers)
        expected, floored = self.ledger.replay(h.deficit / k, h.position, position, h.time, at, refill)
        expected *= k
        beyond = counted - expected + (rate - left) * elapsed + (k - 1.0) * mine  # beyond the gate's own use
        most = counted + (rate - left) * elapsed + max(0.0, (k - 1.0) * mine)
        # how often the server reads full, and how often the replay says it would: the server has room the estimate
        # does not know of where it reads full clearly more often than the replay of the gate's own use says, or
        # clearly less than the replay most of the time
        fade = math.exp(-elapsed / FULL_SECONDS)
        h.full = h.full * fade + (counted < 1.0) * (1 - fade)
        h.full_replayed = h.full_replayed * fade + (expected < 1.0) * (1 - fade)
        h.short = h.short * fade + (counted < 0.6 * expected) * (1 - fade)  # reads clearly less than replayed
        if not floored and min(counted, h.deficit) >= self.largest * k:
            # only a server short of at least a request's worth says anything: nearly full, the age of a reading
            # and a request in transit are all it shows (and others' use does not matter yet)
            self._sample(h, mine, beyond, elapsed, rate, most)
        elif refused:
            # where no headers come, pairs of 429s are all there is to learn from. The balance between them (the
            # server short at both) says what others used, if the server was short all along: it was, if a replay
            # refilling at what that leaves never touches zero
            balance = counted - h.deficit - mine + rate * elapsed
            if 0 < balance < rate * elapsed and min(counted, h.deficit) >= self.largest:
                _, empty = self.ledger.replay(h.deficit, h.position, position, h.time, at, rate - balance / elapsed)
                if not empty:
                    self._sample(h, mine, balance, elapsed, rate, balance)
                    return
            # else the replay that touched zero lost refill that more use by others would have taken: what the
            # server counts beyond it is at least their use, worth learning when it says more than the estimate.
            # Up to a request's worth of it is crowding: a request that reached the server later than sent (a busy
            # machine or network) arrives on top of the next one
            beyond -= self.largest
            if beyond > h.other * elapsed:
                self._sample(h, mine, beyond, elapsed, rate, most)
        elif held and (h.full > h.full_replayed + 0.2 or h.short > 0.5):  # room the estimate does not know of:
            h.probe(elapsed, PROBE_PER_SECOND)  # only sending more tells how much
        elif floored:  # the server had more room than the estimate leaves: nothing to learn now; let it fade
            h.fade(elapsed, FADE_SECONDS if counted >= 1.0 else FADE_SECONDS / 4)

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
        h.boost = 1.0 + (h.boost - 1.0) * math.exp(-elapsed / EVIDENCE_SECONDS)  # the samples say it now

    def _window_sample(self, h: _Hypothesis, reading: Reading, position: int, at: float) -> None:
        period = 60.0  # a reading about a minute (longer resets are refused before this)
        began = at + reading.reset - period
        self.window = (began, period)
        elapsed = at - began
        if elapsed < 2.0:
            return
        used = reading.limit - reading.remaining
        mine = self.ledger.total_at(position) - self.ledger.total_until(began) + self.peers * elapsed
        mine -= self.stale.total_until(at) - self.stale.total_until(began)
        rate = reading.limit / 60.0
        beyond = used - mine
        if beyond < 0:  # requests on their way to the server and refunds on their way back: up to one counts less
            beyond = min(0.0, beyond + self.largest)
        beyond = max(-rate * 1.1 * elapsed, min(rate * 1.1 * elapsed, beyond))
        h.spread += (abs(used - mine - h.other * elapsed) / max(1.0, elapsed) - h.spread) * 0.05
        # early in a window one request in transit is a large share of the count: such readings weigh less. A
        # window's count is a sum since it began, not a rate at this moment: what it shows beyond the gate's own use
        # is taken as other use at the limit's rate (the share follows as 1 - other / rate)
        step = (at - h.time if h.position >= 0 else elapsed) * min(1.0, elapsed / 10.0)
        h.learn(rate - beyond / elapsed, rate, step, rate)
        h.samples += 1
