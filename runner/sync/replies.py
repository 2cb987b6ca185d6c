"""What one reply means, as pure functions: an answer to record, or a failure with its retry decision.

``classify`` reads a reply: a 200 whose body is a JSON object is an ``Answer``; anything else is a ``Refusal``
(a failed attempt for ``runner.retry.decide``), including a 200 that is not an API answer (a proxy's page, a cut
body), which is retried as a broken connection would be. ``answered`` prices an answer as the store records it;
``outcome_of`` turns a retry decision into the store's ``Outcome``, ``stop_of`` into the reason the run stops
(quota, a refused key). Nothing here sends, records or reads a clock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from runner.errors import AuthError, QuotaExhausted, RunnerError
from runner.evidence import stated_limit
from runner.limits import ModelInfo
from runner.pricing import cost, price_table, usage_of
from runner.retry import Action, Decision, Failure, retry_after_seconds
from runner.store import Claimed, Move, Outcome
from runner.transport import Reply

__all__ = ["Answer", "Refusal", "answered", "classify", "label_of", "outcome_of", "service_tier", "stop_of"]


@dataclass(frozen=True)
class Answer:
    """A 200 with an API object: ``data`` parsed, ``text`` as it came (it is stored as is)."""

    data: dict[str, Any]
    text: str


@dataclass(frozen=True)
class Refusal:
    """A failed attempt: ``failure`` for the retry table, ``message`` for people."""

    failure: Failure
    message: str


def classify(reply: Reply, reserved_tokens: int) -> Answer | Refusal:
    """What ``reply`` means for a request that reserved ``reserved_tokens`` at the gate."""
    if reply.status == 200:
        try:
            text = reply.body.decode()
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            return Answer(data, text)
        return Refusal(Failure(kind="connection"), f"a 200 answer that is not a JSON object: {reply.body[:80]!r}")
    error: dict[str, Any] = {}
    try:
        parsed = json.loads(reply.body)
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            error = parsed["error"]
    except ValueError:
        pass
    message = str(error.get("message") or reply.body[:200].decode(errors="replace"))
    failure = Failure(
        status=reply.status,
        type=error.get("type"),
        code=error.get("code"),
        retry_after=retry_after_seconds(reply.headers, message),
        reserved_tokens=reserved_tokens,
        server_tpm=stated_limit(reply.headers, "tokens"),
    )
    return Refusal(failure, message)


def answered(request: Claimed, model: ModelInfo, reply: Reply, answer: Answer) -> Outcome:
    """The store's move for an answer: its body, usage and what it cost (the service tier it names bills it)."""
    usage = usage_of(answer.data, request.endpoint)
    tier_name, prices = price_table(model, answer.data)
    return Outcome.answered((request.id, request.custom_id), Move.ANSWER, response_id=reply.headers.get("x-request-id"),
                            body=answer.text, model=model.name, service_tier=tier_name, usage=usage,
                            cost=cost(prices, usage), seconds=reply.seconds)  # fmt: skip


def label_of(failure: Failure) -> str:
    """``429 rate_limit_exceeded``, ``timeout``: the failure in a word or two, for logs and error messages."""
    return f"{failure.status or failure.kind} {failure.code or failure.type or ''}".strip()


def outcome_of(
    request: Claimed, refusal: Refusal, decision: Decision, reply: Reply | None, now: float
) -> Outcome | None:
    """The store's move for a failed attempt: back to pending after the delay, or failed for good. None when the
    decision stops the run instead (``stop_of``)."""
    label = label_of(refusal.failure)
    if decision.action is Action.RETRY:
        return Outcome(
            request.id,
            request.custom_id,
            Move.RETRY,
            not_before=now + decision.delay,
            error_message=f"{label}: {refusal.message}"[:500],
        )
    if decision.action is Action.FAIL:
        failure = refusal.failure
        return Outcome(
            request.id,
            request.custom_id,
            Move.FAIL,
            status_code=reply.status if reply else None,
            response_id=reply.headers.get("x-request-id") if reply else None,
            body=reply.body.decode(errors="replace") if reply else None,
            error_code=failure.code or failure.type or failure.kind,
            error_message=f"{label}: {refusal.message}"[:2000],
            retryable=decision.exhausted,
        )
    return None


def stop_of(refusal: Refusal, decision: Decision) -> RunnerError:
    """Why the run stops on a decision that stops it: out of credit, or the key refused."""
    if decision.action is Action.STOP_QUOTA:
        return QuotaExhausted(f"insufficient quota: {refusal.message} Add credit or raise the limit, then re-run.")
    return AuthError(f"the API refused the key ({refusal.failure.status}): {refusal.message}")


def service_tier(body: str) -> str:
    """The service tier a stored body asks for (standard unless it says; parsed only when it might)."""
    if '"service_tier"' not in body:
        return "standard"
    tier = json.loads(body).get("service_tier")
    return str(tier) if isinstance(tier, str) else "standard"
