"""The gate: paces one model's requests under its RPM and TPM, whatever the server's headers say.

Each dimension (requests, tokens) has a ``Pacer``: a token bucket that refills continuously at ``rate`` and holds
``burst`` seconds of it, so a minute's budget is never released in one burst (OpenAI may enforce a minute's limit
over shorter windows). A request costs 1 request and its reservation (prompt estimate + output maximum, times n);
``settle`` gives back what the answer did not use, and a waiting request is let through as soon as that makes
room. A request larger than the bucket waits until the bucket is full and then goes into debt: paced, never
stuck. Admission is first come, first served.

    rate = limit / 60 x share x (1 - headroom) x factor x start

- ``share``: what others leave of the limit, divided by the server's own scale (it may count a request as more
  or less than the gate does), as the headers (or, without them, the 429s) show it (``runner.evidence``). Where
  other runner processes on this host share the limit (``sharing``: the gate file, ``runner.store.peers``), that
  is what the runners may use together: their use counts as known, not as a stranger's, and this process takes
  its part (what those that get all they want leave, split evenly among those that want more);
- ``factor``: cut by a tenth by each 429 the evidence does not explain (a 429 for a request sent before the last
  cut is an echo of the same overshoot); it goes most of the way back to just below the factor before that run
  of 429s within seconds (to 1 when the evidence of other use has changed since: that explains the cut), and
  probes beyond at 0.1% a second all along;
- ``start``: half the rate at first, the whole rate after ``START_SECONDS`` (2 s): a client already using the
  limit shows in the first answers' headers and 429s before the gate's pace can overrun it. Longer costs a short
  job its speed and buys nothing measurable (5 s: the same refusals in bench/pacing.py under 40% other use, and
  6,000 requests at Tier 5 ran at 0.88x the rate of a paced raw client instead of 0.93x);
- ``burst``: starts at ``burst_seconds`` (1 s, the shortest window OpenAI is known to enforce) and halves when an
  unexplained 429 shows a shorter window: its "Used" plus the request is less than the burst holds (where the
  message has no figures: its Retry-After is no longer than the burst). It grows back after a quiet minute.

Headers: a reading about a period longer than a minute (``reset`` over 61 s, e.g. per-day figures) is ignored,
said once. A lower ``limit`` is adopted (said once); a higher one too, after two readings, unless the user set
the limit explicitly. Where no headers come at all, a 429's own "Limit N, Used M" is read instead.

Time is injected (``clock``, ``sleep``) so tests move a fake clock instead of sleeping.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from runner.evidence import MIN_SHARE, Evidence, Reading, read_reading
from runner.store.peers import ARM_SECONDS, TRANSIT_SECONDS

__all__ = ["Gate", "GateStats", "Pacer", "PeerWord", "Sharing", "Ticket"]

DIMENSIONS = ("requests", "tokens")
MIN_BURST = 0.05  # seconds
FACTOR_FLOOR = 0.05
FACTOR_CUT = 0.9
FACTOR_REGAIN = 3.0  # seconds: the time constant of the way back to just below the factor before a run of 429s
KEEP_SECONDS = 120.0  # after a 429 that refunds kept beyond the bucket's capacity caused, they are not kept for
# this long (4x as long after each further one, up to 16x): the server's window is as short as the burst
OTHERS_KEEP = 0.1  # of the limit: where others use more, any 429 stops refunds being kept beyond the capacity
MIRROR_SECONDS = 10.0  # refunds believed scaled this long, unbroken: the mirror is the server's bucket (``refill``)
MIRROR_MARGIN = 0.04  # of the mirror's capacity: the level keeps up with the mirror to this much below it
# a request may reach the server this long after its admission: TRANSIT_SECONDS until a 429 came back, then
# TRIP_FACTOR x the longest of the last n <= TRIPS 429s' round trips (admission to refusal) x (n + 1) / n, within
# these bounds
TRIPS = 8
TRIP_FACTOR = 1.5
TRANSIT_FLOOR = 0.005  # seconds
TRANSIT_CEILING = 0.5  # seconds
SAY_AFTER = 15.0  # seconds of a server counting more than the run uses before saying why (the evidence settles)
STORM_SECONDS = 10.0  # 429s closer than this to the previous cut belong to the same run of 429s
FACTOR_PROBE = 0.001  # per second, beyond it
START_SHARE = 0.5  # of the rate at the first moment: other clients may be using the rest
START_SECONDS = 2.0  # to reach the whole rate, while the first answers and 429s tell what others use
START_COST = START_SECONDS * (1 - START_SHARE) / 2  # seconds of the whole rate the ramp above forgoes (its triangle)
LONGEST_RESET = 61.0  # seconds: a reading with a longer reset is about another period
WAKE_SECONDS = 0.05  # a waiting request looks again this often: a refund may have made room
SHARE_SECONDS = 0.25  # how often a gate shared with other processes tells them its use and hears theirs
RATE_SECONDS = 2.0  # the span a gate's own use per second is told over


class PeerWord(Protocol):
    """What another process sharing the limit last said of one dimension (``runner.store.peers.Peer``)."""

    @property
    def member(self) -> str: ...
    @property
    def rate(self) -> float: ...
    @property
    def held(self) -> bool: ...
    @property
    def seen(self) -> float: ...
    @property
    def events(self) -> tuple[tuple[float, float], ...] | None: ...


class Sharing(Protocol):
    """The other runner processes pacing the same limit (``runner.store.peers``)."""

    def exchange(
        self, dimension: str, rate: float, held: bool, events: Sequence[tuple[float, float]]
    ) -> Sequence[PeerWord]:
        """Tell this process's use of ``dimension`` per second, whether its gate holds requests back, and its
        admissions and refunds since its last word (timed by ``now``); hear the others' words and events."""
        ...

    def now(self) -> float:
        """The clock the words and events are stamped with."""
        ...

    def admit(
        self, costs: Sequence[tuple[str, float, float, float]], force: bool = False, waited: float = 0.0
    ) -> float:
        """Take each ``(dimension, cost, rate, burst)`` from the runners' bucket of that dimension, all or none:
        0 when taken, else the seconds until they would be (``force``: taken whatever the levels). ``waited``: how
        long this process has waited for them (the one that has waited longest takes first)."""
        ...

    def give_back(self, dimension: str, amount: float, keep: bool = False) -> None:
        """``amount`` back to the runners' bucket of ``dimension`` (``keep``: the server gives nothing back, so it is
        only the runners' bookkeeping: kept above the bucket's capacity if need be)."""
        ...

    def empty(self, dimensions: Sequence[str]) -> None:
        """The runners' buckets of ``dimensions`` fill again from empty and hold admissions back for a while (the
        server refused a request)."""
        ...

    def armed(self, dimension: str) -> float:
        """For how many seconds more the runners' bucket of ``dimension`` holds admissions back (0: it does not)."""
        ...


@dataclass(frozen=True)
class PeerUse:
    """What the other processes sharing a limit use of it, per second, as they last said."""

    rate: float = 0.0  # all of them
    free: float = 0.0  # those that get all they want (the rest of the runners' share is split among the others)
    held: int = 0  # how many want more than they get


@dataclass(frozen=True)
class Ticket:
    """An admitted request: what it reserved, when, and where its admission sits in each dimension's ledger."""

    reserved: int
    sent: float
    positions: tuple[int, int]  # (requests, tokens) ledger positions just after this admission


class Pacer:
    """One dimension (requests or tokens) of a gate; see the module docstring for its rate."""

    def __init__(
        self,
        limit: int,
        headroom: float,
        burst_seconds: float,
        now: float,
        start_share: float = START_SHARE,
        start_seconds: float = START_SECONDS,
    ) -> None:
        self.limit = limit
        self.headroom = headroom
        self.burst = burst_seconds
        self.burst_max = burst_seconds
        self.factor = 1.0
        self.factor_bad = 1.0  # the factor before the last run of unexplained 429s
        self.last_cut = -math.inf
        self.share_at_cut = 1.0  # the share the gate knew of then
        self.share = 1.0
        self.runners = 1.0  # of the limit: what the runners sharing it may use together, in the gate's own count
        self.part = 1.0  # of that, this process's (``share / runners``)
        self.stamp = now
        self.started = now
        self.start_from = start_share
        self.start_seconds = start_seconds
        self.start_share = start_share
        self.quiet_since = now
        self.keep_from = now  # from when refunds may lift the level beyond the capacity (see ``refund``)
        self.keep_seconds = KEEP_SECONDS
        self.kept_at = -math.inf  # when a request was last admitted from a level beyond the capacity
        self.beyond = 0.0  # what refunds have lifted the level beyond a bucket of the whole limit, still there
        self.level = self.capacity
        # the server's bucket as the gate's own admissions and refunds move it, if its window is the burst: it fills
        # at the whole rate (no headroom, no cuts) and loses a refund that finds it full (see ``refund``)
        self.mirror = self.mirror_capacity
        self.sent = -math.inf  # the last admission
        self.transit = 0.0  # what was admitted within ``transit_seconds`` before it, perhaps not at the server yet
        self.transit_seconds = TRANSIT_SECONDS  # how long a request may take to reach the server (``set_transit``)

    def __repr__(self) -> str:
        return f"<Pacer limit={self.limit}/min rate={self.rate:.3f}/s level={self.level:.1f} burst={self.burst}s>"

    @property
    def rate(self) -> float:
        """Per second, as paced now."""
        return self.limit / 60.0 * self.share * (1.0 - self.headroom) * min(self.factor, self.start_share)

    @property
    def capacity(self) -> float:
        return self.rate * self.burst

    @property
    def mirror_capacity(self) -> float:
        """What the server's bucket holds for this gate (and the runners sharing the limit with it, whose admissions
        it does not see: there it rarely binds) if its window is the burst."""
        return self.limit / 60.0 * self.runners * self.burst

    @property
    def runners_rate(self) -> float:
        """Per second: what the runners sharing the limit may use together, without this process's start ramp
        or 429 factor (the rate of their shared bucket, which keeps their admissions' timing apart)."""
        return self.limit / 60.0 * self.runners * (1.0 - self.headroom)

    def refill(self, now: float, mirrored: bool = False) -> None:
        """Refill to ``now``. ``mirrored``: the server gives back what the gate does (see ``refund``), so the mirror
        is the server's bucket as far as the gate's own use moves it."""
        elapsed = max(0.0, now - self.stamp)
        if self.start_share < 1.0:
            ramp = (now - self.started) / self.start_seconds if self.start_seconds > 0 else 1.0
            self.start_share = min(1.0, self.start_from + (1 - self.start_from) * ramp)
        if abs(self.share - self.share_at_cut) > 0.05:  # what the last cut answered has changed
            self.factor_bad, self.share_at_cut = 1.0 / 0.97, self.share
        if self.factor < 1.0:
            target = self.factor_bad * 0.97
            if self.factor < target:  # most of the way back within seconds
                self.factor = target - (target - self.factor) * math.exp(-elapsed / FACTOR_REGAIN)
            # and probe beyond all along: the way back only nears its target, and a factor left just below it
            # for good cost 3% of the limit for the rest of the run
            self.factor = min(1.0, self.factor + FACTOR_PROBE * elapsed)
            self.factor_bad = max(self.factor_bad, self.factor)
        if self.burst < self.burst_max and now - self.quiet_since > 60.0:
            self.burst, self.quiet_since = min(self.burst_max, self.burst * 2), now
        # refill up to the capacity; refunds may have lifted the level above it (see ``refund``), and the refill
        # does not take that back
        self.level = max(min(self.capacity, self.level + elapsed * self.rate), min(self.level, self._ceiling(0.0)))
        self.mirror = min(self.mirror_capacity, self.mirror + elapsed * self.limit / 60.0 * self.runners)
        if mirrored and now < self.keep_from and self.part >= 1.0:
            # the server's window is the burst (a 429 showed its refunds lost) and the gate paces the whole of what
            # the runners may use: its level lags the server's bucket by no more than a margin. Else, where a
            # reservation is most of what the window holds, the level reached the cost only after the server's
            # bucket had been full a while, every time: 0.1 s of each 0.65 s lost at 2x under a 1 s window
            synced = (self.mirror - MIRROR_MARGIN * self.mirror_capacity) * self.capacity / self.mirror_capacity
            self.level = max(self.level, min(self.capacity, synced))
        self.stamp = now

    def wait(self, cost: float) -> float:
        """Seconds until ``cost`` fits (a cost above the capacity needs a full bucket)."""
        need = min(cost, self.capacity)
        if self.level >= need - 1e-6:  # float residue must not become a wait shorter than the clock's resolution
            return 0.0
        return (need - self.level) / self.rate

    def set_share(self, share: float, runners: float) -> None:
        """Pace ``share`` of the limit, of which the runners sharing it may use ``runners`` together."""
        self.share, self.runners, self.part = share, runners, share / runners

    def set_transit(self, seconds: float) -> None:
        """A request may take up to ``seconds`` to reach the server after its admission (the refusals' round trips
        tell): an answer's refund that comes later than that after the last admission found it at the server."""
        self.transit_seconds = seconds

    def set_limit(self, limit: int) -> None:
        """The limit per minute is ``limit`` from now (the server says so): the bucket holds no more than it may."""
        self.limit = limit
        self.level = min(self.level, self.capacity)

    def take(self, cost: float, now: float) -> None:
        """Admit a request of ``cost``."""
        if self.level > self.capacity or self.level > self.mirror + 1e-6:  # on a refund the server may have lost
            self.kept_at = now
        self.level -= cost
        self.beyond = max(0.0, min(self.beyond, self.level - self.capacity / self.part))
        self.mirror -= cost
        self.transit = cost + (self.transit if now - self.sent < self.transit_seconds else 0.0)
        self.sent = now

    def refund(self, amount: float, mirrored: bool = True) -> None:
        """``amount`` back (negative: taken). A refund is what a request reserved and did not use, and the server
        gives it back too: it is kept even where it lifts the level beyond the capacity (by up to itself), else a
        reservation nearly as large as the bucket, or larger (a server that counts more than the gate paces it to a
        small share), loses the refunds that come while the level waits for the next one: 7-11% of the limit. A
        server whose window is as short as the burst loses them too (its bucket is as full), and others sharing
        the limit may take them: after a 429 that shows either (``Gate.rejected``, ``stop_keeping``) refunds are
        kept for a while only up to what a bucket of the whole limit holds (a process pacing a part of the limit,
        shared with others, keeps what its smaller bucket has no room for, as the server does, instead of pacing
        at a fraction of its part). While they are not kept, a refund the server's bucket lost, full at that moment
        as the gate mirrors it (``mirror``, where requests admitted just before may not have reached the server
        yet), does not lift the level either: the gate's level lags the server's by its headroom, so a refund that
        a full server lost could otherwise let the next request through before the server has room for it.
        ``mirrored``: the server gives back what the gate does (refunds scaled like the reservation, as the evidence
        believes); elsewhere part of what the gate gives back is its own bookkeeping (its share is set on the scale
        over a while), which no full server loses, and the mirror does not cap the level. docs/pacing.md has the
        equations."""
        before = self.level
        self.level = min(max(self.level, self._ceiling(amount)), self.level + amount)
        transit = self.transit if self.stamp - self.sent < self.transit_seconds else 0.0
        self.mirror = min(self.mirror_capacity, self.mirror + transit + amount) - transit
        if self.stamp < self.keep_from and mirrored:
            self.level = min(self.level, max(before, self.mirror))
        self.beyond = max(0.0, self.level - self.capacity / self.part)

    def refuse(self, cost: float, sent: float, short: bool) -> None:
        """The server refused a request of ``cost`` admitted at ``sent``: the level gets it back as a refund, but the
        server never counted it, so the mirror gets it all back and it is no longer on its way; ``short``: the
        refusal was about this dimension, so the server had less room than ``cost`` when it came."""
        mirror = self.mirror
        if self.stamp - sent < self.transit_seconds:
            self.transit = max(0.0, self.transit - cost)
        self.refund(cost, mirrored=False)
        self.mirror = min(self.mirror_capacity, mirror + cost, cost if short else math.inf)

    def _ceiling(self, amount: float) -> float:
        """The most the level may hold after a refund of ``amount`` (0: after a refill): a bucket of the whole
        limit, and what refunds lifted it beyond that where they are kept (see ``refund``)."""
        keep = self.stamp >= self.keep_from
        return self.capacity / self.part + (max(self.beyond, amount) if keep else 0.0)

    def stop_keeping(self, now: float) -> None:
        """A 429: refunds are not kept beyond the capacity for a while (see ``refund``)."""
        if now >= self.keep_from:
            self.keep_from = now + self.keep_seconds
            self.keep_seconds = min(16 * KEEP_SECONDS, 4 * self.keep_seconds)
        self.level, self.beyond = min(self.level, self.capacity), 0.0

    def empty(self) -> None:
        """Nothing to admit now (a pause): the bucket fills again from empty."""
        self.level = min(self.level, 0.0)

    def halve_burst(self) -> None:
        """The server's window is shorter than the burst: halve it (not below ``MIN_BURST``)."""
        self.burst = max(MIN_BURST, self.burst / 2)
        self.level = min(self.level, self.capacity)
        self.mirror = min(self.mirror, self.mirror_capacity)

    def slow_down(self, now: float) -> None:
        """A ``slow_down`` 429: the rate to 80%, recovering as after any cut."""
        before = self.factor
        self.cut(now)
        self.factor = max(FACTOR_FLOOR, before * 0.8)

    def cut(self, now: float) -> None:
        """An unexplained 429: a tenth off the factor; the way back aims at the factor before this run of 429s."""
        if now - self.last_cut > STORM_SECONDS:
            self.factor_bad = self.factor
        self.last_cut = now
        self.factor = max(FACTOR_FLOOR, self.factor * FACTOR_CUT)
        self.share_at_cut = self.share
        self.quiet_since = now
        self.level = min(self.level, self.capacity)


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
    requests_rate: float | None  # per second, as paced now
    tokens_rate: float | None
    other_requests: float  # per second, other clients' use as the headers show it
    other_tokens: float
    burst: float  # seconds
    rate_limited: int  # 429s the evidence did not explain (each cut the rate)


class Gate:
    def __init__(
        self,
        rpm: int | None,
        tpm: int | None,
        *,
        headroom: float = 0.02,
        burst_seconds: float = 1.0,
        start_share: float = START_SHARE,
        explicit: bool = False,
        sharing: Sharing | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.clock, self.sleep = clock, sleep
        self.explicit = explicit
        self.sharing = sharing
        self.peers = dict.fromkeys(DIMENSIONS, PeerUse())
        self.peer_first: dict[str, dict[str, float]] = {d: {} for d in DIMENSIONS}  # when each peer was first heard
        self.told = dict.fromkeys(DIMENSIONS, 0)  # the ledger position up to which the peers have been told
        self.granted: int | None = None  # a request's tokens the runners' buckets let through, not yet taken
        self.bucket_since: float | None = None  # since when a request has waited for them (None: none waits)
        self.armed_until = dict.fromkeys(DIMENSIONS, -math.inf)  # the runners' buckets hold admissions back until
        self.shared_at = -math.inf
        now = clock()
        self.pacers: dict[str, Pacer | None] = {
            name: Pacer(limit, headroom, burst_seconds, now, start_share) if limit else None
            for name, limit in zip(DIMENSIONS, (rpm, tpm), strict=True)
        }
        self.evidence = {name: Evidence(name) for name in DIMENSIONS}
        self.paused_until = 0.0
        self.held_at = -math.inf  # when the gate last held a request back
        self.last_cut = -math.inf
        self.cuts = 0
        self.lock = asyncio.Lock()
        self.admitted = 0
        self.admitted_tokens = 0
        self.waiting = 0
        self.notices: list[str] = []
        self._said: set[str] = set()
        self.scaled_since = dict.fromkeys(DIMENSIONS, math.inf)  # since when refunds are believed scaled, unbroken
        self.round_trips: deque[float] = deque(maxlen=TRIPS)  # of the last 429s: from admission to the refusal
        self.crowded_since: dict[str, float] = {}  # since when the server has counted more than this run uses
        self._higher: dict[str, int] = {}

    def __repr__(self) -> str:
        s = self.statistics()
        return f"<Gate rpm={s.rpm} tpm={s.tpm} tokens_level={s.tokens_level} paused_for={s.paused_for:.2f}s>"

    @property
    def rpm(self) -> int | None:
        pacer = self.pacers["requests"]
        return pacer.limit if pacer else None

    @property
    def tpm(self) -> int | None:
        pacer = self.pacers["tokens"]
        return pacer.limit if pacer else None

    @property
    def request_rate(self) -> float:
        """Requests per second as paced now (0 when requests are not limited)."""
        pacer = self.pacers["requests"]
        return pacer.rate if pacer else 0.0

    def _say(self, key: str, text: str) -> None:
        if key not in self._said:
            self._said.add(key)
            self.notices.append(text)

    def _refill(self, now: float) -> None:
        for name, pacer in self.pacers.items():
            if pacer:
                runners = self.evidence[name].share
                pacer.set_share(self._own_share(name, pacer, runners), runners)
                if not self.evidence[name].refunds_scaled:
                    self.scaled_since[name] = math.inf
                self.scaled_since[name] = min(self.scaled_since[name], now)
                pacer.refill(now, mirrored=now - self.scaled_since[name] >= MIRROR_SECONDS)

    def _own_share(self, name: str, pacer: Pacer, runners: float) -> float:
        """This process's part of what the runners sharing the limit may use together (``runners``, of the limit):
        what those that get all they want leave, split evenly among those that want more (this one counted)."""
        peers = self.peers[name]
        if not peers.rate and not peers.held:  # alone (a peer that wants more is there even if it sent nothing lately)
            return runners
        free = peers.free / (pacer.limit / 60.0 * (1.0 - pacer.headroom))
        return max(MIN_SHARE, min(runners, (runners - free) / (1 + peers.held)))

    def _share(self, now: float) -> None:
        """Tell the processes sharing the limit this one's use, and hear theirs (every ``SHARE_SECONDS``)."""
        if self.sharing is None or now - self.shared_at < SHARE_SECONDS:
            return
        self.shared_at = now
        held = now - self.held_at < 1.0
        for name, pacer in self.pacers.items():
            if pacer is None:
                continue
            evidence = self.evidence[name]
            ledger = evidence.ledger
            own = max(0.0, ledger.total_at(ledger.end) - ledger.total_until(now - RATE_SECONDS)) / RATE_SECONDS
            offset = self.sharing.now() - now
            # the events since the last word, written only while someone listens (alone, a process writes none)
            events = ledger.events(self.told[name], ledger.end) if self._with_peers(name) else []
            told = [(at + offset, amount) for at, amount in events]
            self.told[name] = ledger.end
            heard = self.sharing.exchange(name, own, held, told)
            self.peers[name] = PeerUse(
                sum(p.rate for p in heard),
                sum(p.rate for p in heard if not p.held),
                sum(1 for p in heard if p.held),
            )
            events, cover = self._peer_events(name, heard, offset)
            evidence.hear_peers(now, self.peers[name].rate, events, cover)
            armed = now + self.sharing.armed(name)  # a peer's refusal arms them for all
            if armed > max(now, self.armed_until[name]) + SHARE_SECONDS:  # armed anew since last heard: refused then
                evidence.refused_elsewhere(armed - ARM_SECONDS)
            self.armed_until[name] = armed

    def _peer_events(
        self, name: str, heard: Sequence[PeerWord], offset: float
    ) -> tuple[list[tuple[float, float]], tuple[float, float] | None]:
        """The peers' admissions and refunds since last heard, in the gate's clock (``offset``: theirs less the
        gate's), and the span over which those are all of their use: from the latest first word to the earliest
        last (None where a peer does not tell its events: it is heard by its rate alone)."""
        first = self.peer_first[name]
        events: list[tuple[float, float]] = []
        for p in heard:
            if p.events is None:
                self.peer_first[name] = {}
                return [], None
            first.setdefault(p.member, p.seen - offset)
            events += [(at - offset, amount) for at, amount in p.events]
        self.peer_first[name] = {p.member: first[p.member] for p in heard}
        if not heard:
            return events, None
        return events, (max(self.peer_first[name].values()), min(p.seen - offset for p in heard))

    def _with_peers(self, name: str) -> bool:
        """Whether other processes share this dimension's limit now (alone, a process paces it on its own)."""
        peers = self.peers[name]
        return bool(self.peer_first[name] or peers.rate or peers.held)

    def _runners_costs(self, tokens: int, now: float) -> list[tuple[str, float, float, float]]:
        """What a request of ``tokens`` takes from the runners' buckets, ``(dimension, cost, rate, burst)`` for
        each dimension shared with other processes whose bucket a refusal armed: their admissions together then
        never come faster than the server's shortest window holds (``runner.store.peers``; each process paces
        its part on its own). Unarmed, the buckets cost nothing: their state is heard with the peers' words."""
        if self.sharing is None:
            return []
        return [
            (name, cost, pacer.runners_rate, pacer.burst)
            for (name, pacer), cost in zip(self.pacers.items(), (1.0, float(tokens)), strict=True)
            if pacer and self._with_peers(name) and now < self.armed_until[name]
        ]

    # -- admission ----------------------------------------------------------------------------------------------

    def delay(self, tokens: int) -> float:
        """Seconds until a request of ``tokens`` would be admitted now (0 if at once: then call ``take``)."""
        now = self.clock()
        self._share(now)
        self._refill(now)
        requests, reserved = self.pacers["requests"], self.pacers["tokens"]
        waits = [requests.wait(1) if requests else 0.0, reserved.wait(tokens) if reserved else 0.0]
        for pacer, cost, evidence in (
            (requests, 1.0, self.evidence["requests"]),
            (reserved, tokens, self.evidence["tokens"]),
        ):
            if pacer:
                whole = pacer.rate / (1.0 - pacer.headroom)  # a window's count is exact: no headroom for noise
                waits += [evidence.log_wait(now, cost, pacer.rate), evidence.window_wait(now, cost, whole)]
        wait = max(0.0, self.paused_until - now, *waits)
        if self.sharing and self.granted is not None and self.granted != tokens:  # let through, never taken
            for name, cost, *_ in self._runners_costs(self.granted, now):
                self.sharing.give_back(name, cost)
            self.granted = None
        if wait == 0 and self.granted is None and self.sharing and (costs := self._runners_costs(tokens, now)):
            # the runners' buckets: taken at once when they hold it (and no process that has waited longer asks)
            waited = now - self.bucket_since if self.bucket_since is not None else 0.0
            waits.append(self.sharing.admit(costs, waited=waited))
            wait = waits[-1]
            if wait > 0 and self.bucket_since is None:
                self.bucket_since = now
            self.granted = tokens if wait == 0 else None
        if max(waits) > 0:
            self.held_at = now  # the gate's pace, not the run's demand, holds a request back
        return wait

    def take(self, tokens: int) -> Ticket:
        """Charge a request of ``tokens`` now (call when ``delay`` is 0)."""
        now = self.clock()
        if self.granted is None and self.sharing and (costs := self._runners_costs(tokens, now)):
            self.sharing.admit(costs, force=True)  # not through ``delay``: the runners' buckets go into debt
        self.granted = None
        self.bucket_since = None
        positions = []
        for name, cost in zip(DIMENSIONS, (1.0, float(tokens)), strict=True):
            pacer = self.pacers[name]
            if pacer:
                pacer.take(cost, now)
            positions.append(self.evidence[name].admitted(now, cost))
        self.admitted += 1
        self.admitted_tokens += tokens
        return Ticket(tokens, now, (positions[0], positions[1]))

    async def acquire(self, tokens: int) -> Ticket:
        """Wait until a request reserving ``tokens`` may be sent, then take its cost from the buckets."""
        self.waiting += 1
        try:
            async with self.lock:
                while (wait := self.delay(tokens)) > 0:
                    await self.sleep(min(wait, WAKE_SECONDS))
                return self.take(tokens)
        finally:
            self.waiting -= 1

    def settle(self, ticket: Ticket, used: int) -> None:
        """Give back what a finished request reserved but did not use (or take what it used beyond that)."""
        if ticket.reserved > 0:  # how much of a reservation answers give back (a refused request is not an answer)
            self.evidence["tokens"].answered(ticket.reserved, ticket.reserved - used)
        self._give_back(ticket, used)

    def _give_back(self, ticket: Ticket, used: int, refused: str | None = None) -> None:
        """What the request reserved and did not use; ``refused``: the dimension of a 429's refusal ("" unsaid)."""
        now = self.clock()
        for evidence in self.evidence.values():
            evidence.quiet(now)
        self._refill(now)
        back = ticket.reserved - used
        pacer = self.pacers["tokens"]
        if pacer:
            if refused is not None:
                pacer.refuse(back, ticket.sent, short=refused in ("", "tokens"))
            else:
                pacer.refund(back, mirrored=self.evidence["tokens"].refunds_scaled)
            if back and self.sharing and self._with_peers("tokens") and now < self.armed_until["tokens"]:
                self.sharing.give_back("tokens", back, keep=self.evidence["tokens"].refunds_none)
        if back:
            self.evidence["tokens"].refunded(now, back, ticket.sent)
        self.admitted_tokens -= back

    # -- what the server says -----------------------------------------------------------------------------------

    def observe(self, headers: Mapping[str, str], ticket: Ticket | None = None, *, refused: bool = False) -> None:
        """Weigh a reply's ``x-ratelimit-*`` headers; ``ticket`` is its request's; ``refused``: a 429's."""
        now = self.clock()
        self._refill(now)
        for index, name in enumerate(DIMENSIONS):
            reading = read_reading(headers, name)
            if reading is None:
                continue
            if isinstance(reading, str):
                self._say(f"bad-{name}", f"ignored {reading}")
                continue
            if reading.reset > LONGEST_RESET:
                self._say(
                    f"period-{name}",
                    f"the server's {name} headers describe a period longer than a minute (reset "
                    f"{reading.reset:,.0f}s): not used for pacing",
                )
                continue
            pacer = self.pacers[name]
            if pacer is None:
                continue
            evidence = self.evidence[name]
            self._adopt(name, pacer, reading.limit)
            # a refused request's own cost was never counted: its reading is of the moment before its admission
            sent = ticket.positions[index] - (1 if refused else 0) if ticket else None
            evidence.observe(reading, now, sent, refused=refused)
            if evidence.share >= 0.95:
                self.crowded_since.pop(name, None)
            elif now - self.crowded_since.setdefault(name, now) >= SAY_AFTER:
                self._say(f"other-{name}", self._crowded(name, pacer.limit))
        self._refill(now)

    def _crowded(self, name: str, limit: int) -> str:
        """Why the server counts more of the ``name`` limit than this run uses, as the evidence believes it."""
        evidence = self.evidence[name]
        other = min(1.0, evidence.other / (limit / 60.0))
        scale = (1.0 - other) / evidence.share
        counts = f"the server counts this run's use of the {name} limit as about {scale:.2f}x the runner's own count"
        if scale >= 1.05 and other >= 0.05:
            return f"{counts}, and other clients use about {other:.0%} of it: pacing to what is left"
        if scale >= 1.05:
            return f"{counts} (its own way of counting): pacing to what it lets through"
        if other >= 0.05:
            return f"other clients of the organisation use about {other:.0%} of the {name} limit: pacing to the rest"
        return (
            f"the server counts more of the {name} limit than this run uses (other clients, or its own way of "
            "counting): pacing to what is left"
        )

    def _adopt(self, name: str, pacer: Pacer, limit: int) -> None:
        if limit == pacer.limit:
            self._higher.pop(name, None)
            return
        if limit > pacer.limit:
            if self.explicit:
                return
            self._higher[name] = self._higher.get(name, 0) + 1
            if self._higher[name] < 2:
                return
        self._say(
            f"limit-{name}-{limit}",
            f"server reports {name} limit {limit:,}/min, configured {pacer.limit:,}: pacing to {limit:,}",
        )
        pacer.set_limit(limit)

    def rejected(
        self,
        ticket: Ticket,
        headers: Mapping[str, str],
        dimension: str | None,
        retry_after: float | None,
        limit: int | None = None,
        used: int | None = None,
        requested: int | None = None,
    ) -> None:
        """A rate-limit 429 for a request the gate admitted: pause everyone until Retry-After, and learn.

        ``dimension`` is the 429's ``type`` (requests or tokens; None when the server does not say); ``limit``,
        ``used`` and ``requested`` are its message's "Limit N, Used M, Requested K": the first two are read where no
        headers report the limit, the third is how the server counted this request (its scale to the gate's)."""
        now = self.clock()
        self._timed(now - ticket.sent)
        if dimension == "tokens" and requested and ticket.reserved > 0:
            self.evidence["tokens"].told(requested / ticket.reserved)
        before = {name: e.share for name, e in self.evidence.items()}
        self._give_back(ticket, 0, refused=dimension or "")
        self.observe(headers, ticket, refused=True)
        if dimension in DIMENSIONS and limit and used is not None and used >= 0:
            evidence = self.evidence[dimension]
            if not evidence.headed:
                deficit = min(used, limit)
                reading = Reading(limit, limit - deficit, deficit / (limit / 60.0))
                evidence.observe(reading, now, refused=True, headers=False)
        wait = retry_after if retry_after is not None else 1.0
        self.pause(wait)
        if ticket.sent <= self.last_cut:  # sent before the last cut: an echo of the same overshoot
            return
        for name, pacer in self.pacers.items():
            if pacer and dimension in (None, name):
                # the server's window is as short as the burst, or others take what the gate counted on
                others = self.evidence[name].other > OTHERS_KEEP * pacer.limit / 60.0
                if others or 0.0 <= ticket.sent - pacer.kept_at <= pacer.burst_max:
                    pacer.stop_keeping(now)
        self._cut(ticket, dimension, wait, (used, requested), now, before)
        self._refill(now)  # what the 429 taught (a reading believed, a cut) paces from now on

    def _timed(self, round_trip: float) -> None:
        """A refusal came back ``round_trip`` seconds after its admission: the server answers a 429 at once, so a
        request reaches it within about that (on a slow network or a busy machine, longer than ``TRANSIT_SECONDS``;
        on loopback, milliseconds)."""
        self.round_trips.append(max(0.0, round_trip))
        # the longest of n round trips falls short of the longest there is by about 1/(n + 1) of it (n draws of a
        # uniform spread): (n + 1) / n of it is the estimate of that bound
        longest = max(self.round_trips) * (len(self.round_trips) + 1) / len(self.round_trips)
        transit = min(TRANSIT_CEILING, max(TRANSIT_FLOOR, TRIP_FACTOR * longest))
        for pacer in self.pacers.values():
            if pacer:
                pacer.set_transit(transit)

    def _cut(
        self,
        ticket: Ticket,
        dimension: str | None,
        wait: float,
        told: tuple[int | None, int | None],
        now: float,
        before: dict[str, float],
    ) -> None:
        """Cut the rate of each dimension the 429 is about, unless the evidence explains it; halve the burst where
        the 429 shows a window shorter than it (``told``: its "Used M" and "Requested K", where it says them)."""
        used, requested = told
        for name, pacer in self.pacers.items():
            if pacer is None or dimension not in (None, name):
                continue
            evidence = self.evidence[name]
            # explained: the server counts more than the gate knew, and its rate now follows. The fit moves the share
            # by a few hundredths a reading: a 429 that moved it less than a tenth is not explained by it, and cuts
            if evidence.explain() or before[name] - evidence.share > 0.1:
                continue
            self.last_cut = now
            self.cuts += 1
            pacer.cut(now)
            if used is not None and dimension == name:  # the server could not hold what it counted and this one
                cost = 1.0 if name == "requests" else requested or ticket.reserved * evidence.admission  # as it counts
                # but it held what it counted: its window is no shorter than that (without "Requested" the cost is
                # the believed scale's, which may be low: a 1 s window's 429 halved the burst for a minute, 88%)
                held = used <= pacer.limit / 60.0 * pacer.burst / 2
                shorter = held and used + cost < pacer.limit / 60.0 * pacer.burst * 0.95
            else:  # a Retry-After no longer than the burst: the server's window is no longer either
                shorter = wait <= pacer.burst + 0.05
            if shorter and pacer.burst > MIN_BURST:
                pacer.halve_burst()
                self._say(
                    f"burst-{name}",
                    f"the server enforces {name} over a window shorter than a second: bursts limited to "
                    f"{pacer.burst:.2f}s of the rate",
                )

    def pause(self, seconds: float) -> None:
        """Stop all admissions for ``seconds`` (Retry-After of a rate-limit 429)."""
        now = self.clock()
        self.paused_until = max(self.paused_until, now + seconds)
        self._refill(now)
        for pacer in self.pacers.values():
            if pacer:
                pacer.empty()
        shared = [name for name, pacer in self.pacers.items() if pacer and self._with_peers(name)]
        if self.sharing and shared:  # the server is full: the other processes' requests wait for room too
            self.sharing.empty(shared)
            for name in shared:
                self.armed_until[name] = now + self.sharing.armed(name)
            self._say(
                "runners-bucket",
                "the server refused a request while other runner processes share this limit: their requests "
                "together go through one bucket for a while, kept to what the server's window holds",
            )

    def slow_down(self) -> None:
        """A ``slow_down`` 429: cut the rate to 80%; it recovers as after any cut."""
        now = self.clock()
        self._refill(now)
        for pacer in self.pacers.values():
            if pacer:
                pacer.slow_down(now)

    def statistics(self) -> GateStats:
        now = self.clock()
        self._refill(now)
        requests, tokens = self.pacers["requests"], self.pacers["tokens"]
        return GateStats(
            rpm=self.rpm,
            tpm=self.tpm,
            requests_level=requests.level if requests else None,
            tokens_level=tokens.level if tokens else None,
            paused_for=max(0.0, self.paused_until - now),
            admitted=self.admitted,
            admitted_tokens=self.admitted_tokens,
            waiting=self.waiting,
            requests_rate=requests.rate if requests else None,
            tokens_rate=tokens.rate if tokens else None,
            other_requests=self.evidence["requests"].other,
            other_tokens=self.evidence["tokens"].other,
            burst=min((p.burst for p in self.pacers.values() if p), default=0.0),
            rate_limited=self.cuts,
        )
