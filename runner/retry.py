"""What to do after a failed attempt: a pure decision table, decided on status, ``type`` and ``code``, never text.

| failure                                              | action                                              |
|------------------------------------------------------|-----------------------------------------------------|
| 429 insufficient_quota (or its spend-limit codes)    | stop the run (QuotaExhausted), keep state           |
| 429 tokens, request larger than the server's TPM     | fail: it can never be admitted                      |
| 429 rate_limit_exceeded (requests / tokens)          | retry after Retry-After (else backoff); pause gate  |
| 429 slow_down                                        | retry with backoff; gate slows down                 |
| 401, 403                                             | stop the run (AuthError), keep state                |
| 408, 409, 500, 502, 504, other 5xx                   | retry with exponential backoff and full jitter,     |
|                                                      | never sooner than a Retry-After the answer carries  |
| 503                                                  | the same with twice the backoff                     |
| timeout, connection error                            | retry with backoff                                  |
| other 4xx (400 context_length_exceeded, 404, 422...) | fail with the server's message                      |

Rate-limit retries have their own, larger budget (``max_rate_limited``): a 429 says "later", not "broken".
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Action", "Decision", "Failure", "RetryPolicy", "decide"]

QUOTA_CODES = frozenset(
    {
        "insufficient_quota",
        "credit_balance_exhausted",
        "organization_spend_limit_exceeded",
        "project_spend_limit_exceeded",
        "organization_usage_limit_exceeded",
    }
)


class Action(StrEnum):
    RETRY = "retry"  # back to pending, not before ``delay`` seconds from now
    FAIL = "fail"  # final: failed with ``reason``
    STOP_QUOTA = "stop_quota"  # stop the run: out of credit
    STOP_AUTH = "stop_auth"  # stop the run: key refused


@dataclass(frozen=True)
class Failure:
    """One failed attempt. ``status`` 0 means no HTTP answer (``kind``: timeout or connection)."""

    status: int = 0
    type: str | None = None
    code: str | None = None
    kind: str = "http"
    retry_after: float | None = None
    reserved_tokens: int = 0
    server_tpm: int | None = None


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    max_rate_limited: int = 40
    base: float = 1.0
    cap: float = 60.0


@dataclass(frozen=True)
class Decision:
    action: Action
    delay: float = 0.0
    pause_gate: bool = False
    slow_down: bool = False


def backoff(attempt: int, policy: RetryPolicy, rng: random.Random, scale: float = 1.0) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2^(attempt-1)) * scale]."""
    return rng.uniform(0, min(policy.cap, policy.base * scale * 2 ** max(0, attempt - 1)))


def decide(failure: Failure, attempt: int, policy: RetryPolicy, rng: random.Random) -> Decision:
    """The decision for ``failure`` on the ``attempt``-th try (1-based)."""
    status, code, type_ = failure.status, failure.code, failure.type
    if status == 429 and (code in QUOTA_CODES or type_ == "insufficient_quota"):
        return Decision(Action.STOP_QUOTA)
    if status in (401, 403):
        return Decision(Action.STOP_AUTH)
    if status == 429:
        if type_ == "tokens" and failure.server_tpm is not None and failure.reserved_tokens > failure.server_tpm:
            return Decision(Action.FAIL)
        if attempt >= policy.max_rate_limited:
            return Decision(Action.FAIL)
        if code == "slow_down":
            return Decision(Action.RETRY, backoff(attempt, policy, rng) + 1.0, slow_down=True)
        if failure.retry_after is not None:
            return Decision(Action.RETRY, failure.retry_after * rng.uniform(1.0, 1.1), pause_gate=True)
        return Decision(Action.RETRY, backoff(attempt, policy, rng), pause_gate=True)
    retryable = failure.kind in ("timeout", "connection") or status in (408, 409) or status >= 500
    if not retryable or attempt >= policy.max_attempts:
        return Decision(Action.FAIL)
    scale = 2.0 if status == 503 else 1.0
    delay = backoff(attempt, policy, rng, scale)
    if failure.retry_after is not None:  # a 503 may say when to come back: never earlier than that
        delay = max(delay, failure.retry_after * rng.uniform(1.0, 1.1))
    return Decision(Action.RETRY, delay)
