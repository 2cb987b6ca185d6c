"""Every way the server might count a limit, each judged by how well it predicts the server's readings.

A continuous reading (``x-ratelimit-remaining-*`` and ``reset`` of a bucket or per-minute units) says what the
server still counts against the limit: its ``deficit``, in its own units. Between two readings the gate knows its
own use event by event (admissions, and refunds of what answers did not use, from its ledger). A candidate is a
way the server might count:

- ``admit``: each unit the gate reserves counts as this many of the server's (OpenAI's limiter estimates a
  request from its characters and maximum output, not with the tokenizer);
- ``refund``: each unit the gate gets back at an answer is given back by the server as ``admit`` of its own
  (it scales both alike), as one (it counts the answer's real output, as the gate does) or not at all;
- ``other``: other clients use this share of the limit.

Each candidate replays the gate's use from the earlier reading's deficit, refilling at what the others leave and
never below zero (the server's bucket is full there), and is charged the squared difference between its
prediction and the later reading, in seconds of the limit; the charges fade over ``JUDGE_SECONDS``. Every replay
starts from what the server said, never from a prediction, so no candidate can confirm itself: a belief in other
clients that refills the replay slowly is charged as soon as the server reads less than it predicts.

Candidates whose charge is close to the least are as good as the best (``TOLERANCE``, ``NOISE``); of those, the
nearest to "nobody else, counted as the gate counts" is believed. Once 429s have said what the server counted
requests as ("Requested N" in OpenAI's message: ``told``), only candidates that count a request about so at
admission are judged (``BAND``), and the nearest to it is preferred: readings under a short window, or with
requests late on their way, cannot tell a scale from others' use, but the server's own word can.

Below 1, where its neighbours in admission scale are clearly worse, the believed scale is refined between the
grid's steps (``_vertex``). Where the readings cannot tell candidates apart (a server that is full between the
gate's requests shows only the request it just counted), that is the most the readings allow: the gate sends more
until they say otherwise.

What the gate may use follows: over a while the server counts ``admit x A - refund x F`` of the gate's
admissions ``A`` and refunds ``F``, while the gate's own bucket paces ``A - F``; with ``f = F / A`` (the share of
a reservation answers give back, as the gate has seen it lately) the server counts ``scale = (admit - refund x
f) / (1 - f)`` of each unit the gate paces, so the gate may pace ``(1 - other) / scale`` of the limit.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import numpy as np

__all__ = [
    "JUDGE_SECONDS",
    "MAX_SCALE",
    "MIN_SCALE",
    "OTHERS",
    "REFUNDS",
    "ROOM_SECONDS",
    "SCALES",
    "UNTESTED_FADE",
    "Candidates",
]

# 0.25, 0.275 ... 1.975, 2, 2.1 ... 3 (docs/pacing.md: why these steps)
SCALES = tuple(i / 40 for i in range(10, 80)) + tuple(i / 10 for i in range(20, 31))
OTHERS = tuple(i / 20 for i in range(19))  # of the limit: 0, 5% ... 90%
ALONE_BELOW = 0.5  # scales below this are candidates only with nobody else using the limit (see ``Candidates``)
REFUNDS = ("scaled", "one", "none")  # how the server gives back what an answer did not use (see above)
MIN_SCALE, MAX_SCALE = 0.25, 50.0  # what one of the gate's units may be worth to the server, over a while
JUDGE_SECONDS = 5.0  # how long a reading's charge lasts: the candidates follow a change within seconds
ROOM_SECONDS = 0.5  # of the limit: a server counting less than this has room (its bucket nearly full)
UNTESTED_FADE = 0.5  # there, while others are believed to use some, the charges fade this much faster
CHANGE = 25.0  # there, a miss of the believed candidate this many times its mean square says others' use changed
CHANGE_OTHER = 0.2  # (a server counting less than it predicts, where it has others use at least this share)
CHANGE_FLOOR = 1e-4  # (seconds of the limit, squared: 0.01 s) and beyond this
CHANGE_KEEP = 0.2  # the charges from before then count this much
NOISE = 0.003  # seconds of the limit: candidates this close to the best at each reading are as good
TOLERANCE = 0.1  # and those within this share of the best's charge
LESS = 6.0  # a server counting less than the gate is this much further from the prior than one counting more
TOLD_429S = 10  # what 429s said the server counted a request as is averaged (its log) over the last this many
BAND = 0.05  # candidates' admission scales within this (of the log, or twice the average's standard error) of it
TOLD = 10.0  # and an admission scale away from it weighs this much more in the tie-break than one away from 1
DISTRUST = 4.0  # the readings contradict the 429s' word when the best within it is charged this many times the best
CONTRADICTED = 30  # readings in a row: then the word is not believed again (under a 1 s window, single readings do)
MOST_STEPS = 12  # a replay runs through at most this many steps (events in the same step are summed)


class Candidates:
    """The candidates of one dimension and their charges."""

    def __init__(
        self, scales: Sequence[float] = SCALES, others: Sequence[float] = OTHERS, refunds: Sequence[str] = REFUNDS
    ) -> None:
        # below ALONE_BELOW only "nobody else": a wrong hypothesis would otherwise fit its readings with a scale far
        # too low and others using much of the limit, as well as the right one does
        rows = [
            (k, o, r)
            for r in refunds
            for k in scales
            for o in others
            if (r == "scaled" or k != 1.0) and (k >= ALONE_BELOW or o == 0.0)
        ]
        self.admit = np.array([k for k, _, _ in rows])
        self.log_admit = np.log(self.admit)
        self.refund = np.array([k if r == "scaled" else 1.0 if r == "one" else 0.0 for k, _, r in rows])
        self.other = np.array([o for _, o, _ in rows])
        self.way = np.array([REFUNDS.index(r) for *_, r in rows])  # the way of refunds, as an index
        self.charges = np.zeros(len(rows))
        self.weight = 0.0  # the readings judged, faded as the charges are
        self.readings = 0
        self.until: float | None = None  # when the last reading judged was taken
        self.given_back = 0.0  # the share of a reservation answers give back lately (``f`` above)
        self.said: list[float] = []  # logs of the admission scales 429s said, the last TOLD_429S
        self.distrusted = False  # the readings contradicted what the 429s said: not believed again
        self.contradicted = 0  # readings in a row that did
        self.chosen = int(np.argmin(self._distance(self.scales(), None)))
        # each candidate's neighbours along the admission scale (lower, upper; -1 if none)
        self.along = _neighbours(rows)
        self.refined = float(self.admit[self.chosen])  # the believed admission scale, between the grid's steps

    @property
    def spread(self) -> float:
        """How far the best candidate's predictions were from the readings, in seconds of the limit (root mean
        square, recent readings counting most)."""
        return math.sqrt(float(self.charges.min()) / self.weight) if self.weight > 0 else 0.0

    @property
    def best(self) -> tuple[float, float]:
        """``(scale, other)``: how many of the server's units each unit the gate paces is, over a while, and the
        share of the limit others use, as the believed candidate says (its admission scale refined between the grid's
        steps)."""
        admit = self.refined
        refund = admit if REFUNDS[self.way[self.chosen]] == "scaled" else float(self.refund[self.chosen])
        f = min(0.9, self.given_back)
        return min(MAX_SCALE, max(MIN_SCALE, (admit - refund * f) / (1.0 - f))), float(self.other[self.chosen])

    @property
    def refunds(self) -> str:
        """How the believed candidate says the server gives back what an answer did not use (``REFUNDS``)."""
        return REFUNDS[self.way[self.chosen]]

    @property
    def admission(self) -> float:
        """How many of the server's units each unit the gate reserves is at admission, as the believed candidate
        says (refined between the grid's steps)."""
        return self.refined

    def scales(self) -> np.ndarray:
        """Each candidate's scale: how many of the server's units each unit the gate paces is, over a while."""
        f = min(0.9, self.given_back)
        return np.clip((self.admit - self.refund * f) / (1.0 - f), MIN_SCALE, MAX_SCALE)

    def told(self, admission: float) -> None:
        """A 429 said the server counted a request as ``admission`` of the gate's units each: the believed
        candidate is chosen again at once, within what the server said."""
        self.said = [*self.said[-(TOLD_429S - 1) :], math.log(max(MIN_SCALE, min(MAX_SCALE, admission)))]
        if self.readings:
            self._choose(self.scales())

    def judge(
        self,
        deficit: float,
        events: Sequence[tuple[float, float]],
        since: float,
        until: float,
        rate: float,
        peers: float,
        counted: float,
        given_back: float,
        known: float | None = None,
    ) -> None:
        """The server counted ``deficit`` at ``since`` and ``counted`` at ``until``; in between the gate used
        ``events`` (time, amount in its own units; refunds negative) and the runners sharing the limit ``peers``
        per second; the limit refills at ``rate`` per second; answers give back ``given_back`` of what their
        requests reserved, lately. Up to ``known`` the runners' use is in ``events`` too (their words say when it
        came), and their rate counts only after it."""
        # the charges fade with the time since the last reading judged (readings may be judged from one anchor)
        elapsed = max(0.0, until - (since if self.until is None else max(since, self.until)))
        self.until = until
        self.given_back = given_back
        # the peers tell their net use (admissions less refunds) in their own count: the server counts it at scale
        scales = self.scales()  # with the share answers give back now
        left = (1.0 - self.other) * rate
        refill = np.maximum(0.0, left - scales * peers)
        miss = (counted - self._replay(deficit, events, since, until, left, refill, known)) / rate
        # a server with room cannot confirm a belief in others' use (its bucket is full under every candidate that
        # leaves room): that belief rests on older readings, which then count for half as long
        untested = counted / rate < ROOM_SECONDS and self.other[self.chosen] > 0
        keep = math.exp(-elapsed / (JUDGE_SECONDS * (UNTESTED_FADE if untested else 1.0)))
        # a server counting far less than the believed candidate predicts, beyond its usual miss, where that has
        # others use a fair share: their use changed (a client stopped), and the readings before describe what is gone
        missed = float(miss[self.chosen])
        usual = float(self.charges[self.chosen]) / self.weight if self.weight > 0 else math.inf
        changed = missed < 0 and missed**2 > max(CHANGE * usual, CHANGE_FLOOR)
        if untested and changed and self.other[self.chosen] >= CHANGE_OTHER - 1e-9:
            keep = min(keep, CHANGE_KEEP)
        self.charges = self.charges * keep + miss * miss
        self.weight = self.weight * keep + 1.0
        self.readings += 1
        self._choose(scales)

    def _choose(self, scales: np.ndarray) -> None:
        """Believe the nearest to the prior of the candidates as good as the best, among those the 429s allow."""
        told = self.told_band()
        allowed = self._allowed(told)
        best = float(self.charges.min())
        if allowed.all() or float(self.charges[allowed].min()) <= DISTRUST * best + self.weight * (2 * NOISE) ** 2:
            self.contradicted = 0
        else:  # the readings say otherwise than the 429s: a server whose message misstates its count
            self.contradicted += 1
            if self.contradicted >= CONTRADICTED:
                self.distrusted, told = True, None
                allowed = np.ones(len(self.charges), dtype=bool)
        bound = float(self.charges[allowed].min()) * (1.0 + TOLERANCE) + self.weight * NOISE * NOISE
        distance = self._distance(scales, told)
        self.chosen = int(np.argmin(np.where((self.charges <= bound) & allowed, distance, np.inf)))
        # below 1 the tie-break leans to the scale that counts more, a step's error costs pace: refined between the
        # steps; at 1 and above it leans to the one that counts less and a 429 corrects it: the grid's scale stays
        admit = float(self.admit[self.chosen])
        self.refined = _vertex(self.admit, self.charges, self.chosen, self.along, bound) if admit < 1 else admit

    def agrees(self) -> bool:
        """Whether the believed candidate counts a request at admission as the 429s said (within ``told_band``)."""
        told = self.told_band()
        return told is not None and abs(float(self.log_admit[self.chosen]) - told[0]) <= told[1] + 1e-9

    def told_band(self) -> tuple[float, float] | None:
        """The log of the admission scale 429s said and the half-width of the band around it, if it is believed:
        some 429 said one, the readings never contradicted it, and it says the server counts at least as the gate
        does (a word that would let the gate send more than its own count is left to the readings: believed
        wrongly, it costs a 429 storm; believed wrongly the other way, only pace, and the readings say so)."""
        if not self.said or self.distrusted:
            return None
        mean = statistics.fmean(self.said)
        error = statistics.stdev(self.said) / math.sqrt(len(self.said)) if len(self.said) > 1 else 0.0
        band = max(BAND, 2.0 * error)
        return (mean, band) if mean + band >= 0 else None

    def _allowed(self, told: tuple[float, float] | None) -> np.ndarray:
        """Which candidates count a request at admission about as the 429s said (``told_band``; all if none)."""
        if told is None:
            return np.ones(len(self.charges), dtype=bool)
        mean, band = told
        allowed: np.ndarray = np.abs(self.log_admit - mean) <= band + 1e-9
        return allowed if allowed.any() else np.ones(len(self.charges), dtype=bool)

    def _distance(self, scales: np.ndarray, told: tuple[float, float] | None) -> np.ndarray:
        """Each candidate's distance from "nobody else, counted as the gate counts", the tie-break among those as
        good (more than the limit in the gate's count must be clearly better: being wrong there costs 429s)."""
        ln = np.log(scales)
        distance: np.ndarray = np.where(ln < 0, -LESS * ln, ln) + self.other + self.way * 0.01
        if told is not None:  # what the server said it counts (``told_band``) outweighs "as the gate counts"
            distance = distance + TOLD * np.abs(self.log_admit - told[0])
        return distance

    def _replay(
        self,
        deficit: float,
        events: Sequence[tuple[float, float]],
        since: float,
        until: float,
        before: np.ndarray,
        after: np.ndarray,
        known: float | None = None,
    ) -> np.ndarray:
        """Each candidate's deficit at ``until``: ``deficit`` at ``since`` carried through ``events``, refilling at
        ``before`` a second (each candidate's own) up to ``known`` and at ``after`` from then on."""
        switch = since if known is None else known
        d = np.full(len(self.charges), float(deficit))
        t = since
        for when, taken, back in _steps(events, since, until):
            refilled = _refilled(t, when, switch, before, after)
            d = np.maximum(0.0, np.maximum(0.0, d - refilled) + self.admit * taken - self.refund * back)
            t = when
        last: np.ndarray = np.maximum(0.0, d - _refilled(t, until, switch, before, after))
        return last


def _neighbours(rows: Sequence[tuple[float, float, str]]) -> np.ndarray:
    """For each row ``(admit, other, refunds)``, the positions of the rows with the same others' share and way of
    refunds just below and just above it in admission scale; -1 where there is none."""
    lines: dict[tuple[float, str], list[tuple[float, int]]] = {}
    for i, (k, o, r) in enumerate(rows):
        lines.setdefault((o, r), []).append((k, i))
    result = np.full((len(rows), 2), -1, dtype=int)
    for points in lines.values():
        points.sort()
        for j, (_, i) in enumerate(points):
            result[i] = (points[j - 1][1] if j > 0 else -1, points[j + 1][1] if j + 1 < len(points) else -1)
    return result


def _vertex(values: np.ndarray, charges: np.ndarray, i: int, along: np.ndarray, bound: float) -> float:
    """Candidate ``i``'s value refined between the grid's steps: the least of the parabola fitted (least squares)
    to its charge and those of up to two neighbours on each side (``along``: each candidate's lower and upper
    neighbour on one axis), where both its nearest neighbours' charges are beyond ``bound`` (the grid has found the
    least to within a step); else its own value (the readings cannot place the least more finely, or the grid ends
    there). A replay's miss is nearly linear in the admission scale, its charge nearly quadratic; readings that
    show one side less than the other (taken at admission, before the refunds) bend the nearest steps, which five
    points outweigh better than three. Kept within half a step of the candidate."""
    lo, hi = int(along[i][0]), int(along[i][1])
    x1 = float(values[i])
    if lo < 0 or hi < 0 or min(charges[lo], charges[hi]) <= bound:
        return x1
    points = [lo, i, hi] + [j for j in (int(along[lo][0]), int(along[hi][1])) if j >= 0]
    a, b, _ = np.polyfit(values[points] - x1, charges[points], 2)
    if a <= 0:
        return x1
    down, up = (float(values[lo]) - x1) / 2, (float(values[hi]) - x1) / 2
    return x1 + min(up, max(down, -float(b) / (2 * float(a))))


def _refilled(start: float, end: float, switch: float, before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """What refills from ``start`` to ``end`` at ``before`` a second up to ``switch`` and ``after`` from then on."""
    early = max(0.0, min(end, switch) - min(start, switch))
    late = max(0.0, max(end, switch) - max(start, switch))
    result: np.ndarray = early * before + late * after
    return result


def _steps(events: Sequence[tuple[float, float]], since: float, until: float) -> list[tuple[float, float, float]]:
    """``events`` as ``(time, taken, given back)`` steps, at most ``MOST_STEPS`` of them: many events between two
    readings (a high rate) are summed within equal spans of time, which changes a replay by less than a step's
    refill."""
    if len(events) <= MOST_STEPS:
        return [(when, max(0.0, a), max(0.0, -a)) for when, a in events]
    span = max(1e-9, until - since) / MOST_STEPS
    sums: dict[int, list[float]] = {}
    for when, amount in events:
        step = sums.setdefault(min(MOST_STEPS - 1, int((when - since) / span)), [when, 0.0, 0.0])
        step[0] = when
        step[1 if amount > 0 else 2] += abs(amount)
    return [(when, taken, back) for _, (when, taken, back) in sorted(sums.items())]
