"""The retry table, row by row."""

from __future__ import annotations

import random

import pytest

from runner.retry import Action, Failure, RetryPolicy, decide, decide_line, retry_after_seconds

POLICY = RetryPolicy(max_attempts=4, max_rate_limited=10, base=1.0, cap=30.0)


@pytest.mark.parametrize(
    ("failure", "attempt", "action"),
    [
        (Failure(429, "insufficient_quota", "insufficient_quota"), 1, Action.STOP_QUOTA),
        (Failure(429, "insufficient_quota", "organization_spend_limit_exceeded"), 1, Action.STOP_QUOTA),
        (Failure(429, "tokens", "rate_limit_exceeded", retry_after=1.2), 1, Action.RETRY),
        (Failure(429, "requests", "rate_limit_exceeded"), 9, Action.RETRY),
        (Failure(429, "requests", "rate_limit_exceeded"), 10, Action.FAIL),
        (Failure(429, "tokens", "rate_limit_exceeded", reserved_tokens=50_000, server_tpm=30_000), 1, Action.FAIL),
        (Failure(429, "rate_limit_error", "slow_down"), 1, Action.RETRY),
        (Failure(401, "invalid_request_error", "invalid_api_key"), 1, Action.STOP_AUTH),
        (Failure(400, "invalid_request_error", "context_length_exceeded"), 1, Action.FAIL),
        (Failure(404, "invalid_request_error", "model_not_found"), 1, Action.FAIL),
        (Failure(500, "server_error"), 1, Action.RETRY),
        (Failure(500, "server_error"), 4, Action.FAIL),
        (Failure(503, "service_unavailable_error", "server_is_overloaded"), 2, Action.RETRY),
        (Failure(kind="timeout"), 3, Action.RETRY),
        (Failure(kind="connection"), 4, Action.FAIL),
        (Failure(408), 1, Action.RETRY),
    ],
)
def test_table(failure: Failure, attempt: int, action: Action) -> None:
    assert decide(failure, attempt, POLICY, random.Random(1)).action is action


def test_rate_limit_waits_retry_after_and_pauses_everyone() -> None:
    d = decide(Failure(429, "tokens", "rate_limit_exceeded", retry_after=2.0), 1, POLICY, random.Random(1))
    assert 2.0 <= d.delay <= 2.2
    assert d.pause_gate


def test_backoff_grows_and_is_capped() -> None:
    rng = random.Random(3)
    worst = [
        max(decide(Failure(500), a, RetryPolicy(max_attempts=99, cap=30.0), rng).delay for _ in range(200))
        for a in (1, 3, 8)
    ]
    assert worst[0] <= 1.0 < worst[1] <= 4.0 < worst[2] <= 30.0


def test_503_backs_off_longer_than_500() -> None:
    rng = random.Random(5)
    mean = lambda status: sum(decide(Failure(status), 2, POLICY, rng).delay for _ in range(400)) / 400  # noqa: E731
    assert mean(503) > 1.5 * mean(500)


def test_retry_after_on_a_5xx_is_honoured_too() -> None:
    d = decide(Failure(503, "service_unavailable_error", retry_after=5.0), 1, POLICY, random.Random(1))
    assert d.action is Action.RETRY and d.delay >= 5.0


@pytest.mark.parametrize(
    ("status", "resubmits", "action", "exhausted"),
    [
        (None, 0, Action.RETRY, False),  # missing, expired, cancelled: another batch
        (None, 3, Action.FAIL, True),  # ... at most max_resubmits times
        (500, 1, Action.RETRY, False),
        (503, 2, Action.RETRY, False),
        (429, 0, Action.RETRY, False),
        (408, 0, Action.RETRY, False),
        (409, 0, Action.RETRY, False),
        (500, 3, Action.FAIL, True),
        (400, 0, Action.FAIL, False),  # the server's answer is kept as the reason
        (404, 0, Action.FAIL, False),
    ],
)
def test_batch_line_table(status: int | None, resubmits: int, action: Action, exhausted: bool) -> None:
    decision = decide_line(status, resubmits, max_resubmits=3)
    assert (decision.action, decision.exhausted) == (action, exhausted)


@pytest.mark.parametrize(
    ("headers", "message", "seconds"),
    [
        ({"retry-after-ms": "1500", "retry-after": "2"}, "", 1.5),
        ({"retry-after": "3"}, "", 3.0),
        ({"retry-after": "soon"}, "", None),
        ({"retry-after": "-1"}, "Please try again in 1.146s. Visit", 1.146),
        ({}, "Please try again in 6m0s.", 360.0),
        ({}, "no hint here", None),
    ],
)
def test_retry_after_table(headers: dict[str, str], message: str, seconds: float | None) -> None:
    assert retry_after_seconds(headers, message) == (pytest.approx(seconds) if seconds is not None else None)
