"""What the executors and the store pass each other about one request: a claimed request to send (``Claimed``)
and what happened to it (``Outcome``, carrying the move the store makes). Plain values: the store's parts and the
executors import them without importing each other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from runner.store.states import Move, State

if TYPE_CHECKING:
    from runner.endpoints import Usage

__all__ = ["Claimed", "Outcome"]


@dataclass(frozen=True)
class Claimed:
    """A request leased to this process for sending."""

    id: int
    custom_id: str
    line: int
    endpoint: str
    model: str
    body: str
    prompt_tokens: int
    output_tokens: int
    n: int
    attempts: int


@dataclass(frozen=True)
class Outcome:
    """What happened to one request: ``move`` (ANSWER, FAIL, RETRY, RELEASE; COLLECT, REJECT for batch lines)."""

    request_id: int
    custom_id: str
    move: Move
    status_code: int | None = None
    response_id: str | None = None
    body: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    not_before: float = 0.0
    # spend, when the response was billed
    model: str | None = None
    service_tier: str = "standard"
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    cost: int | None = None
    retryable: bool = False  # a failure time may cure: the next run tries again
    seconds: float | None = None  # sync answers: from sending to the answer read

    @classmethod
    def answered(
        cls,
        request: tuple[int, str],
        move: Move,
        *,
        response_id: str | None,
        body: str,
        model: str,
        service_tier: str,
        usage: Usage,
        cost: int,
        seconds: float | None = None,
    ) -> Outcome:
        """An answer billed by its ``usage`` (``request``: its id and custom_id; ``move``: ANSWER or COLLECT)."""
        return cls(request[0], request[1], move, status_code=200, response_id=response_id, body=body, model=model,
                   service_tier=service_tier, prompt_tokens=usage.prompt_tokens, cached_tokens=usage.cached_tokens,
                   output_tokens=usage.output_tokens, cost=cost, seconds=seconds)  # fmt: skip

    @property
    def final(self) -> bool:
        return self.move.target is not State.PENDING
