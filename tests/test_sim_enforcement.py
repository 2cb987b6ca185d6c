"""The simulator enforces a window three plausible ways (a token bucket, fixed clock windows, a sliding log), and its
headers say what each still counts: the client is judged against all of them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from runner.sim.buckets import ModelBuckets
from tests.test_sim import CHAT, call


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def two_a_second(enforcement: str, clock: Clock, background: float = 0.0) -> ModelBuckets:
    return ModelBuckets(120, None, None, 1.0, clock, "minute", background, enforcement=enforcement)


@pytest.mark.parametrize(
    ("enforcement", "admitted"),
    [
        # times: 10.0, 10.0 (a burst of the window), 10.5, 10.9, 11.0, 11.1
        ("bucket", [True, True, True, False, True, False]),  # half a second refills one request
        ("fixed", [True, True, False, False, True, True]),  # nothing until the clock window ends, then all of it
        ("sliding", [True, True, False, False, True, True]),  # both of 10.0 leave the log at 11.0
    ],
)
def test_each_enforcement_admits_a_burst_of_the_window_and_refills_its_own_way(
    enforcement: str, admitted: list[bool]
) -> None:
    clock = Clock(10.0)
    server = two_a_second(enforcement, clock)
    seen = []
    for t in (10.0, 10.0, 10.5, 10.9, 11.0, 11.1):
        clock.t = t
        seen.append(server.admit(1, count_rejected=False).ok)
    assert seen == admitted


def test_a_sliding_log_waits_for_its_oldest_request_to_leave() -> None:
    clock = Clock(10.0)
    server = two_a_second("sliding", clock)
    assert server.admit(1).ok
    clock.t = 10.6
    assert server.admit(1).ok
    clock.t = 10.9
    refused = server.admit(1, count_rejected=False)
    assert not refused.ok and refused.retry_after == pytest.approx(0.1)  # the request of 10.0 leaves at 11.0
    clock.t = 11.0
    assert server.admit(1).ok
    clock.t = 11.1
    refused = server.admit(1, count_rejected=False)
    assert refused.retry_after == pytest.approx(0.5)  # now the one of 10.6


def test_a_fixed_window_refuses_until_the_clock_window_ends_and_says_so_in_its_headers() -> None:
    clock = Clock(20.25)
    server = ModelBuckets(None, 6_000, None, 1.0, clock, "minute", enforcement="fixed")  # 100 tokens a window
    assert server.admit(60).ok
    refused = server.admit(60)
    assert not refused.ok and refused.retry_after == pytest.approx(0.75) and refused.used == 60
    headers = server.headers()
    assert headers["x-ratelimit-remaining-tokens"] == "5940"  # the limit less what this window counts
    assert headers["x-ratelimit-reset-tokens"] == "750ms"  # counts nothing again when the window ends
    server.settle(60, 20, admitted_at=20.25)  # the answer used 20: given back within the window
    assert server.admit(60).ok
    clock.t = 21.1
    server.settle(60, 0, admitted_at=20.25)  # given back after its window ended: the new one does not count it
    assert server.headers()["x-ratelimit-remaining-tokens"] == "6000"
    assert server.admit(100).ok and not server.admit(1).ok


def test_a_request_larger_than_the_window_needs_an_empty_one() -> None:
    clock = Clock(30.5)
    for enforcement in ("fixed", "sliding"):
        server = ModelBuckets(None, 6_000, None, 1.0, clock, "bucket", enforcement=enforcement)
        assert server.admit(10).ok
        assert not server.admit(150).ok  # nothing below the minute's limit is refused forever, but it waits
        clock.t += 1.0
        assert server.admit(150).ok
        assert server.headers()["x-ratelimit-remaining-tokens"] == "0"  # the window's own level, never below 0


@pytest.mark.parametrize("enforcement", ["fixed", "sliding"])
def test_another_client_fills_the_window_as_it_goes(enforcement: str) -> None:
    clock = Clock(40.0)
    server = ModelBuckets(None, 6_000, None, 1.0, clock, "minute", 0.5, enforcement=enforcement)  # it uses half
    clock.t = 40.999
    assert 45 <= 6_000 - int(server.headers()["x-ratelimit-remaining-tokens"]) <= 55  # about half of 100
    assert server.admit(45).ok and not server.admit(10).ok


def test_an_unknown_enforcement_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="bucket, fixed, sliding"):
        two_a_second("leaky", Clock(0.0))


def test_a_sliding_log_gives_back_what_an_answer_did_not_use_while_its_request_is_in_it() -> None:
    clock = Clock(50.0)
    server = ModelBuckets(None, 6_000, None, 1.0, clock, "minute", enforcement="sliding")
    admitted = server.admit(80)
    clock.t = 50.4
    server.settle(80, 30, admitted_at=admitted.at)
    assert server.headers()["x-ratelimit-remaining-tokens"] == "5970"
    assert server.admit(70).ok and not server.admit(1).ok


@pytest.mark.parametrize("enforcement", ["bucket", "fixed", "sliding"])
def test_the_server_counts_an_answered_request_as_what_it_used_under_each_enforcement(
    start_sim: Any, enforcement: str
) -> None:
    sim = start_sim(latency_scale=0, tpm=60_000, window=60.0, enforcement=enforcement)
    status, headers, raw = call(sim, "POST", "/chat/completions", {**CHAT, "max_tokens": 500})
    usage = json.loads(raw)["usage"]
    assert status == 200 and usage["completion_tokens"] < 500
    assert int(headers["x-ratelimit-remaining-tokens"]) == 60_000 - usage["total_tokens"]  # the rest given back
