"""The gate paces on a fake clock: nothing here sleeps."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from runner.gate import Gate, Ticket
from runner.retry import rate_limit_detail, retry_after_seconds

from .conftest import FakeTime

pytestmark = pytest.mark.anyio


def make(rpm: int | None, tpm: int | None, **kw: Any) -> tuple[Gate, FakeTime]:
    """A gate on a fake clock, without the cautious start unless asked for."""
    clock = FakeTime(1000.0)
    kw.setdefault("start_share", 1.0)
    return Gate(rpm, tpm, clock=clock, sleep=clock.sleep, **kw), clock


def headers(limit: int, remaining: int, reset: str, name: str = "tokens") -> dict[str, str]:
    return {
        f"x-ratelimit-limit-{name}": str(limit),
        f"x-ratelimit-remaining-{name}": str(remaining),
        f"x-ratelimit-reset-{name}": reset,
    }


async def test_never_releases_a_minute_in_one_burst() -> None:
    gate, clock = make(600, None, headroom=0.0, burst_seconds=1.0)
    start = clock.now
    times = []
    for _ in range(40):
        await gate.acquire(1)
        times.append(clock.now - start)
    # 600 RPM = 10/s: the first second's 10 go at once, then one every 0.1 s
    assert times[9] == pytest.approx(0.0)
    assert times[39] == pytest.approx(3.0)
    # conformance to a 1-second bucket: any i..j admits at most capacity (10) + rate (10/s) * elapsed
    for i in range(len(times)):
        for j in range(i, len(times)):
            assert j - i + 1 <= 10 + 10 * (times[j] - times[i]) + 1e-6


async def test_sustained_rate_is_limit_minus_headroom() -> None:
    gate, clock = make(None, 60_000, headroom=0.05)
    start = clock.now
    for _ in range(500):
        await gate.acquire(100)  # 50,000 tokens
    rate_per_min = 50_000 / (clock.now - start) * 60
    assert rate_per_min == pytest.approx(57_000, rel=0.03)


async def test_a_cautious_start_reaches_the_whole_rate_in_two_seconds() -> None:
    gate, clock = make(600, None, headroom=0.0, start_share=0.5)
    assert gate.request_rate == pytest.approx(5.0)
    clock.now += 1.0
    assert gate.delay(1) == 0 and gate.request_rate == pytest.approx(7.5)
    clock.now += 1.0
    gate.delay(1)
    assert gate.request_rate == pytest.approx(10.0)


async def test_refund_of_unused_reservation_lets_more_through() -> None:
    gate, clock = make(None, 6_000, headroom=0.0, burst_seconds=1.0)  # 100 tokens/s
    ticket = await gate.acquire(100)
    assert gate.delay(100) == pytest.approx(1.0)
    gate.settle(ticket, used=20)
    assert gate.delay(100) == pytest.approx(0.2)


async def test_a_refund_lets_a_waiting_request_through_before_its_computed_wait() -> None:
    gate, clock = make(None, 6_000, headroom=0.0)  # 100 tokens/s, bucket of 100
    first = await gate.acquire(100)
    waiter = asyncio.ensure_future(gate.acquire(100))
    await asyncio.sleep(0)
    gate.settle(first, used=10)  # 90 back: the waiter needs only 10 more, 0.1 s instead of 1 s
    async with asyncio.timeout(5):
        await waiter
    assert clock.now - 1000.0 <= 0.15


async def test_a_refund_that_comes_while_the_bucket_waits_for_a_large_reservation_is_not_lost() -> None:
    """A reservation nearly as large as the bucket (90 of 100): a refund of 30 that comes when the level is at 80
    lifts it to 110, and the 20 beyond the capacity still count for the next request. Clipped at the capacity,
    such refunds cost 7% of the limit when the server counts twice the gate's estimate."""
    gate, clock = make(None, 6_000, headroom=0.0, burst_seconds=1.0)  # 100 tokens/s, bucket of 100
    first = await gate.acquire(90)
    clock.now += 0.7  # the level is 80: the next 90 waits 0.1 s
    gate.settle(first, used=60)  # 30 back: 110
    await gate.acquire(90)
    assert clock.now == pytest.approx(1000.7)
    assert gate.delay(90) == pytest.approx(0.7)  # 20 kept: 70 more needed


async def test_after_a_429_for_a_request_sent_from_kept_refunds_they_are_kept_no_more() -> None:
    """A server whose window is as short as the gate's burst loses refunds that come while its bucket is full, as
    the gate's own bucket would: a 429 for a request admitted from a level beyond the capacity shows it, and
    refunds stop lifting the level beyond the capacity for two minutes."""
    gate, clock = make(None, 6_000, headroom=0.0, burst_seconds=1.0)

    async def refund_at_a_high_level() -> tuple[Ticket, float, float]:
        """A refund of 30 while the level is at 80, then the next request; the level after the refund and the
        bucket's capacity then."""
        first = await gate.acquire(90)
        clock.now += 0.7
        gate.settle(first, used=60)
        stats = gate.statistics()
        assert stats.tokens_level is not None and stats.tokens_rate is not None
        return await gate.acquire(90), stats.tokens_level, stats.tokens_rate * stats.burst

    refused, level, capacity = await refund_at_a_high_level()
    assert level > capacity
    gate.rejected(refused, {}, "tokens", 0.5)
    clock.now += 5.0
    _, level, capacity = await refund_at_a_high_level()
    assert level == pytest.approx(capacity)
    clock.now += 120.0
    _, level, capacity = await refund_at_a_high_level()
    assert level > capacity


async def test_request_larger_than_bucket_is_paced_not_stuck() -> None:
    gate, clock = make(None, 6_000, headroom=0.0, burst_seconds=1.0)  # bucket holds 100
    await gate.acquire(550)  # bigger than the bucket: admitted when full, into debt
    assert clock.now == 1000.0
    await gate.acquire(50)
    assert clock.now == pytest.approx(1000.0 + 5.0)  # the 450 debt + 50 needed, at 100/s


async def test_admission_is_first_come_first_served() -> None:
    gate, clock = make(None, 6_000, headroom=0.0)
    order: list[str] = []

    async def send(name: str, tokens: int) -> None:
        await gate.acquire(tokens)
        order.append(name)

    await gate.acquire(100)  # empty the bucket
    async with asyncio.timeout(5):
        await asyncio.gather(send("big", 100), *(send(f"small{i}", 10) for i in range(5)))
    assert order[0] == "big"


async def test_pause_stops_everyone_until_retry_after() -> None:
    gate, clock = make(6000, None)
    gate.pause(2.5)
    await gate.acquire(1)
    assert clock.now >= 1002.5


async def test_lower_limit_in_headers_is_adopted_and_said_once() -> None:
    gate, _ = make(500, 200_000, explicit=True)
    for _ in range(3):
        gate.observe({**headers(500, 499, "120ms", "requests"), **headers(30_000, 30_000, "0s")})
    assert gate.tpm == 30_000
    assert [n for n in gate.notices if "30,000" in n] == [
        "server reports tokens limit 30,000/min, configured 200,000: pacing to 30,000"
    ]


async def test_higher_limit_in_headers_is_not_adopted_over_explicit_user_limit() -> None:
    gate, _ = make(500, 100_000, explicit=True)
    for _ in range(3):
        gate.observe(headers(2_000_000, 2_000_000, "0s"))
    assert gate.tpm == 100_000
    tier_gate, _ = make(500, 200_000, explicit=False)
    tier_gate.observe(headers(2_000_000, 2_000_000, "0s"))
    assert tier_gate.tpm == 200_000  # one reading is not enough to go faster
    tier_gate.observe(headers(2_000_000, 2_000_000, "0s"))
    assert tier_gate.tpm == 2_000_000


@pytest.mark.parametrize(
    ("given", "notice"),
    [
        (headers(10_000, 9_000, "23h59m1s", "requests"), "describe a period longer than a minute"),
        (headers(500, 900, "1s", "requests"), "inconsistent requests headers"),
        (headers(500, 400, "soon", "requests"), "unreadable requests headers"),
    ],
)
async def test_readings_about_another_period_or_inconsistent_are_ignored_and_said(
    given: dict[str, str], notice: str
) -> None:
    gate, clock = make(500, None, headroom=0.0)
    for _ in range(5):
        gate.observe(given)
    assert gate.rpm == 500 and gate.request_rate == pytest.approx(500 / 60)
    assert sum(notice in n for n in gate.notices) == 1


async def test_one_reply_never_holds_the_gate_longer_than_its_reset() -> None:
    """The issue's stall: a sub-minute bucket's level read as per-minute units. Whatever one reply says, the gate
    admits again within that reply's reset."""
    gate, clock = make(900, 90_000, headroom=0.0)
    ticket = await gate.acquire(400)
    gate.settle(ticket, 300)
    gate.observe({**headers(900, 3, "400ms", "requests"), **headers(90_000, 120, "900ms")}, ticket)
    clock.now += 0.9
    assert gate.delay(400) <= 0.3
    assert gate.statistics().other_tokens < 0.05 * 1500


async def test_other_use_in_continuous_readings_slows_the_gate_to_what_is_left() -> None:
    """A per-minute reading whose deficit grows faster than this gate's own use explains: others use the rest."""
    gate, clock = make(None, 60_000, headroom=0.0)  # 1,000 tokens/s
    deficit, stamp = 0.0, clock.now
    while clock.now < 1030.0:  # 30 s; someone else uses 700 tokens/s of the server's 1,000/s
        clock.now += gate.delay(50)
        ticket = gate.take(50)
        deficit = max(0.0, deficit + (clock.now - stamp) * (700 - 1000)) + 50
        stamp = clock.now
        gate.settle(ticket, 50)
        gate.observe(headers(60_000, int(60_000 - deficit), f"{deficit / 1000:.3f}s"), ticket)
    assert gate.statistics().tokens_rate == pytest.approx(300, rel=0.1)
    said = [n for n in gate.notices if "use about" in n]  # what the user is told, once the evidence settled
    assert said == ["other clients of the organisation use about 70% of the tokens limit: pacing to the rest"], said


async def test_answers_read_one_after_another_are_not_taken_for_other_use() -> None:
    """A busy client reads several answers before it admits anything more: between two readings the gate's own
    net use is negative (refunds only). The server, alone with this gate, agrees with every reading: nothing is
    other use. (Net use floored at zero once read such spells as other use: 6% of the limit on a loaded machine,
    and the gate held 94% of it.)"""
    gate, clock = make(None, 60_000, headroom=0.0)  # 1,000 tokens/s
    tickets = [gate.take(671) for _ in range(8)]  # in flight together: the server counts 5,368
    deficit = 8 * 671.0
    for ticket in tickets:
        clock.now += 0.1
        deficit -= 0.1 * 1000 + (671 - 200)  # a tenth of a second's refill, and this answer's refund
        gate.settle(ticket, 200)
        gate.observe(headers(60_000, int(60_000 - deficit), f"{deficit / 1000:.3f}s"), ticket)
    hypotheses = gate.evidence["tokens"].hypotheses  # headers taken at the answer: that is what this server does
    assert [h.samples > 0 for h in hypotheses] == [False, True]
    assert all(h.other < 0.01 * 1000 for h in hypotheses)


async def test_an_unexplained_429_cuts_the_rate_once_per_overshoot_and_it_recovers() -> None:
    gate, clock = make(600, None, headroom=0.0)
    tickets = [await gate.acquire(1) for _ in range(3)]
    for ticket in tickets:  # three 429s for requests sent before the first one came back: one overshoot
        gate.rejected(ticket, {}, "requests", 0.5)
    assert gate.statistics().rate_limited == 1
    assert gate.request_rate == pytest.approx(9.0)
    await gate.acquire(1)
    assert clock.now >= 1000.5  # everyone paused for Retry-After
    later = await gate.acquire(1)
    gate.rejected(later, {}, "requests", 0.5)  # sent after the cut: new evidence
    assert gate.statistics().rate_limited == 2
    for _ in range(600):  # a quiet minute, looked at as often as a busy gate does
        clock.now += 0.1
        gate.delay(1)
    assert gate.request_rate == pytest.approx(10.0)  # all the way back, not stuck just below the way back's target


async def test_a_short_retry_after_halves_the_burst_a_long_one_does_not() -> None:
    gate, clock = make(600, None, headroom=0.0, burst_seconds=1.0)
    ticket = await gate.acquire(1)
    gate.rejected(ticket, {}, "requests", 3.0)
    assert gate.statistics().burst == 1.0
    clock.now += 5
    ticket = await gate.acquire(1)
    gate.rejected(ticket, {}, "requests", 0.2)
    assert gate.statistics().burst == 0.5
    assert any("window shorter than a second" in n for n in gate.notices)


async def test_a_429_that_says_what_the_server_holds_tells_the_window_better_than_its_retry_after() -> None:
    """Retry-After is short whenever the overshoot is small; "Used" + the request is what the window could not hold.
    A one-second window (90,000 TPM holds 1,500) refusing 671 tokens at 850 used is no shorter than a second."""
    gate, clock = make(None, 90_000, headroom=0.0, burst_seconds=1.0)
    ticket = await gate.acquire(671)
    gate.rejected(ticket, {}, "tokens", 0.02, 90_000, 850)
    assert gate.statistics().burst == 1.0
    assert not any("window shorter" in n for n in gate.notices)
    clock.now += 20
    ticket = await gate.acquire(671)
    gate.rejected(ticket, {}, "tokens", 0.02, 90_000, 300)  # a quarter-second window: 375 held, 971 did not fit
    assert gate.statistics().burst == 0.5


async def test_without_headers_a_429_message_is_read_as_a_per_minute_reading() -> None:
    gate, clock = make(None, 60_000, headroom=0.0)
    tickets: list[Ticket] = []
    for second in range(6):  # the server says it is 20,000 tokens short although the gate sent 1,000/s
        ticket = await gate.acquire(1000)
        clock.now = 1000.0 + second + 1
        tickets.append(ticket)
        gate.rejected(ticket, {}, "tokens", 0.05, 60_000, 20_000 + 400 * second)
    assert gate.statistics().other_tokens > 300


def test_retry_after_and_the_429_message() -> None:
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "2"}) == 1.5
    assert retry_after_seconds({}, "Please try again in 6m0s.") == 360.0
    detail = rate_limit_detail("on tokens per min (TPM): Limit 90000, Used 89,560, Requested 500. Please try again")
    assert detail is not None and (detail.limit, detail.used, detail.requested) == (90_000, 89_560, 500)
    assert rate_limit_detail("Rate limit reached for requests") is None
    detail = rate_limit_detail("on tokens per minute (TPM): Limit 5000, Used 5747, Requested ~4251. Please try")
    assert detail is not None and (detail.limit, detail.used, detail.requested) == (5000, 5747, 4251)
