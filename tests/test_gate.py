"""The gate paces on a fake clock: nothing here sleeps."""

from __future__ import annotations

import asyncio

import pytest

from runner.ratelimit import Gate, retry_after_seconds

pytestmark = pytest.mark.anyio


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def make(rpm: int | None, tpm: int | None, **kw: object) -> tuple[Gate, FakeClock]:
    clock = FakeClock()
    return Gate(rpm, tpm, clock=clock, sleep=clock.sleep, **kw), clock  # type: ignore[arg-type]


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


async def test_refund_of_unused_reservation_lets_more_through() -> None:
    gate, clock = make(None, 6_000, headroom=0.0, burst_seconds=1.0)  # 100 tokens/s
    await gate.acquire(100)
    assert gate.delay(100) == pytest.approx(1.0)
    gate.settle(reserved=100, used=20)
    assert gate.delay(100) == pytest.approx(0.2)


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


async def test_server_reporting_less_left_slows_the_gate() -> None:
    gate, clock = make(None, 60_000, headroom=0.0)  # bucket holds 1,000 at 1,000/s
    assert gate.delay(500) == 0
    # someone else in the organisation has used 20,000 of the minute's 60,000
    gate.observe({"x-ratelimit-limit-tokens": "60000", "x-ratelimit-remaining-tokens": "40000"})
    assert gate.delay(500) > 15


async def test_lower_limit_in_headers_is_adopted_and_said() -> None:
    gate, _ = make(500, 200_000, explicit=True)
    gate.observe(
        {
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-limit-tokens": "30000",
            "x-ratelimit-remaining-requests": "499",
            "x-ratelimit-remaining-tokens": "30000",
        }
    )
    assert gate.tpm == 30_000
    assert any("30,000" in n for n in gate.notices)


async def test_higher_limit_in_headers_is_not_adopted_over_explicit_user_limit() -> None:
    gate, _ = make(500, 100_000, explicit=True)
    gate.observe({"x-ratelimit-limit-tokens": "2000000", "x-ratelimit-remaining-tokens": "2000000"})
    assert gate.tpm == 100_000
    tier_gate, _ = make(500, 200_000, explicit=False)
    tier_gate.observe({"x-ratelimit-limit-tokens": "2000000", "x-ratelimit-remaining-tokens": "2000000"})
    assert tier_gate.tpm == 2_000_000


@pytest.mark.parametrize(
    ("headers", "message", "expected"),
    [
        ({"retry-after-ms": "1500", "retry-after": "2"}, "", 1.5),
        ({"retry-after": "3"}, "", 3.0),
        ({}, "Rate limit reached ... Please try again in 1.146s. Visit", 1.146),
        ({}, "Please try again in 6m0s.", 360.0),
        ({}, "no hint here", None),
    ],
)
def test_retry_after(headers: dict[str, str], message: str, expected: float | None) -> None:
    assert retry_after_seconds(headers, message) == (pytest.approx(expected) if expected is not None else None)
