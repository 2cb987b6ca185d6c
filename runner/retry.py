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

A Batch API line without an answer (``decide_line``): missing, expired, cancelled, 408, 409, 429 or 5xx go back
to pending for another batch, at most ``max_resubmits`` times; other statuses fail with the server's answer.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from runner.durations import parse_duration

__all__ = [
    "Action",
    "Decision",
    "Failure",
    "RateLimitDetail",
    "RetryPolicy",
    "decide",
    "rate_limit_detail",
    "retry_after_seconds",
]

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
    exhausted: bool = False  # FAIL because the attempts of a retryable failure ran out


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
            return Decision(Action.FAIL, exhausted=True)
        if code == "slow_down":
            return Decision(Action.RETRY, backoff(attempt, policy, rng) + 1.0, slow_down=True)
        if failure.retry_after is not None:
            return Decision(Action.RETRY, failure.retry_after * rng.uniform(1.0, 1.1), pause_gate=True)
        return Decision(Action.RETRY, backoff(attempt, policy, rng), pause_gate=True)
    retryable = failure.kind in ("timeout", "connection") or status in (408, 409) or status >= 500
    if not retryable or attempt >= policy.max_attempts:
        return Decision(Action.FAIL, exhausted=retryable)
    scale = 2.0 if status == 503 else 1.0
    delay = backoff(attempt, policy, rng, scale)
    if failure.retry_after is not None:  # a 503 may say when to come back: never earlier than that
        delay = max(delay, failure.retry_after * rng.uniform(1.0, 1.1))
    return Decision(Action.RETRY, delay)


def decide_line(status: int | None, resubmits: int, max_resubmits: int) -> Decision:
    """A batch line that did not answer 200: ``status`` None when it is missing or got no HTTP answer (expired,
    cancelled, batch failed). RETRY means back to pending for another batch; FAIL keeps the server's answer."""
    retryable = status is None or status in (408, 409, 429) or status >= 500
    if not retryable:
        return Decision(Action.FAIL)
    if resubmits < max_resubmits:
        return Decision(Action.RETRY)
    return Decision(Action.FAIL, exhausted=True)


def retry_after_seconds(headers: Mapping[str, str], message: str = "") -> float | None:
    """Retry-After as seconds: ``retry-after-ms``, else ``retry-after``, else the "try again in 1.146s" hint."""
    for key, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(key)
        if value:
            try:
                seconds = float(value) * scale
            except ValueError:
                continue
            if math.isfinite(seconds) and seconds >= 0:
                return seconds
    marker = "try again in "
    if marker in message:
        hint = message.split(marker, 1)[1].split(" ", 1)[0].rstrip(".")
        try:
            return parse_duration(hint)
        except ValueError:
            return None
    return None


@dataclass(frozen=True)
class RateLimitDetail:
    """What a rate-limit 429's message says: "Limit 90000, Used 89560, Requested 500" (some compatible servers
    write "Requested ~500"): the limit, what the server counted, and what it counted this request as."""

    limit: int
    used: int
    requested: int


_DETAIL = re.compile(r"Limit:? ([\d,]+), Used:? ([\d,]+), Requested:? ~?([\d,]+)")


def rate_limit_detail(message: str) -> RateLimitDetail | None:
    """The numbers of a rate-limit 429's message, if it has them (OpenAI's wording)."""
    match = _DETAIL.search(message)
    if match is None:
        return None
    limit, used, requested = (int(g.replace(",", "")) for g in match.groups())
    return RateLimitDetail(limit, used, requested)
