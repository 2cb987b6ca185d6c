"""What the x-ratelimit-* headers say about other use of a limit (runner.evidence), read alone: the headers, the
gate's own ledger, and the share of the limit a stream of readings leaves the gate. The server here is a small
continuous bucket written in the test (refill at the limit's rate; it counts the gate's use, times ``scale``, and
another client's), so the readings are exact and the expected share is arithmetic."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from runner.evidence import Evidence, Ledger, OwnLog, Reading, read_reading, stated_limit


def headers(limit: str, remaining: str, reset: str, name: str = "tokens") -> dict[str, str]:
    return {f"x-ratelimit-limit-{name}": limit, f"x-ratelimit-remaining-{name}": remaining,
            f"x-ratelimit-reset-{name}": reset}  # fmt: skip


def test_a_reading_is_parsed_or_named_as_the_problem_it_is() -> None:
    assert read_reading(headers("90000", "89000", "666ms"), "tokens") == Reading(90_000, 89_000, 0.666)
    assert read_reading(headers("500", "0", "1m0s", "requests"), "requests") == Reading(500, 0, 60.0)
    assert read_reading({}, "tokens") is None
    assert read_reading(headers("90000", "", "1s"), "tokens") is None
    assert read_reading(headers("lots", "1", "1s"), "tokens") == "unreadable tokens headers (lots, 1, 1s)"
    assert "inconsistent" in str(read_reading(headers("100", "101", "1s"), "tokens"))
    assert stated_limit(headers("90000", "1", "1s"), "tokens") == 90_000
    assert stated_limit(headers("0", "0", "1s"), "tokens") is None


def test_the_ledger_replays_a_deficit_through_the_gate_s_own_use() -> None:
    ledger = Ledger()
    start = ledger.add(0.0, 10.0)
    ledger.add(1.0, 10.0)
    stop = ledger.add(2.0, 10.0)
    assert ledger.total_at(stop) == 30.0 and ledger.total_until(1.5) == 20.0 and ledger.time_at(stop) == 2.0
    # 5 owed at t=0, refilling 4 a second, two more uses of 10: 5 - 4 + 10 - 4 + 10 = 17 at t=2
    assert ledger.replay(5.0, start, stop, 0.0, 2.0, 4.0) == (17.0, False)
    assert ledger.replay(0.0, start, stop, 0.0, 4.0, 20.0) == (0.0, True)  # ran dry: what it shows is a floor


@dataclass
class Bucket:
    """A server's continuous bucket for one limit per minute, read after each of the gate's requests."""

    limit: int
    scale: float = 1.0  # what the server counts per unit the gate counts
    deficit: float = 0.0
    last: float = 0.0
    shares: dict[float, float] = field(default_factory=dict[float, float])

    def play(self, evidence: Evidence, own: float | None, other: float, until: float, other_until: float) -> None:
        """The gate sends ``own`` a second (None: as its share allows); another client ``other`` a second until
        ``other_until``."""
        rate, t = self.limit / 60.0, self.last
        while t < until:
            t += 1.0 / (own if own is not None else max(0.5, evidence.share * rate))
            position = evidence.admitted(t, 1.0)
            others = other if t < other_until else 0.0
            self.deficit = max(0.0, self.deficit - (t - self.last) * rate) + self.scale + others * (t - self.last)
            self.last = t
            evidence.observe(Reading(self.limit, int(self.limit - self.deficit), self.deficit / rate), t, position)
            self.shares[round(t, 1)] = evidence.share


def test_another_client_s_use_is_read_from_the_headers_and_forgotten_when_it_stops() -> None:
    """20 a second allowed; the gate sends 14 and another client 8 (over the limit together): the share left is
    (20 - 8) / 20. The other client stops at 60 s: within 20 s the gate may use 90% of the limit again."""
    evidence, server = Evidence("requests"), Bucket(limit=1_200)
    server.play(evidence, own=14.0, other=8.0, until=100.0, other_until=60.0)
    while_both = [s for t, s in server.shares.items() if 20.0 <= t < 59.0]
    assert min(while_both) == pytest.approx(0.6, abs=0.03) and max(while_both) <= 0.64
    assert min(s for t, s in server.shares.items() if t >= 80.0) >= 0.9


@pytest.mark.parametrize("scale", [1.5, 2.0])
def test_a_server_that_counts_more_than_the_gate_is_paced_to_what_it_counts(scale: float) -> None:
    """A server that counts each request as ``scale`` of the gate's, and a gate that sends as its share allows:
    what the server counts settles near the limit, neither over it (429s) nor far under (a phantom client)."""
    evidence, server = Evidence("tokens"), Bucket(limit=1_200, scale=scale)
    server.play(evidence, own=None, other=0.0, until=120.0, other_until=0.0)
    counted = [s * 20.0 * scale for t, s in server.shares.items() if t >= 60.0]  # a second, in the server's count
    assert max(counted) <= 20.0 * 1.05
    assert sum(counted) / len(counted) >= 20.0 * 0.9


def test_a_sliding_log_is_recognised_and_the_gate_waits_for_its_own_requests_to_leave_it() -> None:
    """The simulator's sliding log of 5 s (its own implementation, not this module's): a reading after each of the
    gate's requests of 100 tokens, one every 0.3 s; then what the gate must wait for to send one more."""
    from runner.sim.buckets import ModelBuckets

    clock = [1000.0]
    server = ModelBuckets(None, 60_000, None, 5.0, lambda: clock[0], "minute", enforcement="sliding")  # 5,000 a log
    evidence = Evidence("tokens")
    sent = []
    for _ in range(40):
        clock[0] += 0.3
        sent.append(clock[0])
        position = evidence.admitted(clock[0], 100.0)
        assert server.admit(100).ok
        reading = read_reading(server.headers(), "tokens")
        assert isinstance(reading, Reading)
        evidence.observe(reading, clock[0], position)
    assert evidence.sliding == 5.0
    now = clock[0]  # the log holds the last 17 requests (1,700; the oldest came 4.8 s ago)
    assert evidence.log_wait(now, 100.0, 360.0) == 0.0  # 1,800 may be used of it: room for one more
    assert evidence.log_wait(now, 100.0, 320.0) == pytest.approx(0.5)  # 1,600: two must leave, the second at +0.5 s
    for at in sent[-4:]:  # four answers gave back half of theirs: 1,500 left in the log
        evidence.refunded(now, 50.0, at)
    assert evidence.log_wait(now, 100.0, 320.0) == 0.0


def test_the_gate_s_own_log_says_what_its_requests_still_counted_at_any_moment() -> None:
    log = OwnLog()
    for t in (1.00, 1.05, 1.25):  # two blocks of 0.1 s
        log.add(t, 100.0)
    log.refund(1.05, 2.0, 40.0)  # its answer gave back 40 at 2.0
    assert log.held(0.9) == 260.0
    assert log.held(1.0) == 160.0  # admitted after 1.0
    assert log.held(0.9, at=1.5) == 300.0  # at 1.5 nothing had been given back yet
    assert log.held(1.02, at=1.1) == 100.0  # admitted in (1.02, 1.1], before its refund
    assert list(log.oldest(1.0)) == [(1.05, 60.0), (1.25, 100.0)]
    log.add(62.0, 10.0)  # a minute later the old blocks are gone, and a refund for them finds nothing
    log.refund(1.25, 62.0, 50.0)
    assert log.held(0.0) == 10.0
