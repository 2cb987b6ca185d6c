"""A request's states and every move between them, as one table. The store builds each move's SQL from it.

```
pending -> in_flight (claim) -> succeeded (answer) | failed (fail) | pending (retry; release: stopped or dead owner)
pending -> batched (pack) -> succeeded (collect) | failed (reject) | pending (requeue: expired, cancelled, failed)
pending -> failed (refuse: can never succeed as written)
pending -> cancelled (cancel: the user withdrew it)
failed -> pending (reopen: the next run retries a failure time may cure, or every failure with --retry-failed)
```

A move is one ``UPDATE ... WHERE id=? AND state IN (sources)``; a move that changes no row raises
``StateConflict`` (a bug or a race, never ignored). ``succeeded``, ``failed`` and ``cancelled`` are final within
a run: a final request has exactly one row in ``results`` (``cancelled`` ones have none and are never sent);
reopening a failed one deletes its result in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["FINAL", "TRANSITIONS", "Move", "State", "Transition"]


class State(StrEnum):
    PENDING = "pending"  # waiting to be sent (maybe not before ``not_before``)
    IN_FLIGHT = "in_flight"  # leased by a live process and being sent
    BATCHED = "batched"  # inside a Batch API batch
    SUCCEEDED = "succeeded"  # answered; final
    FAILED = "failed"  # failed for good, with a reason; final
    CANCELLED = "cancelled"  # withdrawn by the user before it was sent; final


FINAL = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED})


@dataclass(frozen=True)
class Transition:
    sources: frozenset[State]
    target: State


class Move(StrEnum):
    """Every way a request changes state; its row of ``TRANSITIONS`` says from where to where."""

    CLAIM = "claim"  # leased for sending
    ANSWER = "answer"  # a 200 recorded
    FAIL = "fail"  # a permanent failure recorded
    RETRY = "retry"  # a retryable failure: again later
    RELEASE = "release"  # handed back unsent (the run stopped), or left in flight by a dead owner
    REFUSE = "refuse"  # can never succeed as written: failed with the reason, never sent
    PACK = "pack"  # written into a batch file
    COLLECT = "collect"  # its batch line answered
    REJECT = "reject"  # its batch line failed for good
    REQUEUE = "requeue"  # its batch ended without an answer for it
    CANCEL = "cancel"  # withdrawn by the user
    REOPEN = "reopen"  # failed, to be tried again by a later run
    REUSE = "reuse"  # answered by the stored answer to the same request: never sent

    @property
    def sources(self) -> frozenset[State]:
        return TRANSITIONS[self].sources

    @property
    def target(self) -> State:
        return TRANSITIONS[self].target

    def where(self) -> str:
        """The SQL condition that a request may take this move: ``state IN ('pending', ...)``."""
        return "state IN (" + ",".join(f"'{s.value}'" for s in sorted(self.sources)) + ")"


def _t(sources: set[State], target: State) -> Transition:
    return Transition(frozenset(sources), target)


TRANSITIONS: dict[Move, Transition] = {
    Move.CLAIM: _t({State.PENDING}, State.IN_FLIGHT),
    Move.ANSWER: _t({State.IN_FLIGHT}, State.SUCCEEDED),
    Move.FAIL: _t({State.IN_FLIGHT}, State.FAILED),
    Move.RETRY: _t({State.IN_FLIGHT}, State.PENDING),
    Move.RELEASE: _t({State.IN_FLIGHT}, State.PENDING),
    Move.REFUSE: _t({State.PENDING}, State.FAILED),
    Move.PACK: _t({State.PENDING}, State.BATCHED),
    Move.COLLECT: _t({State.BATCHED}, State.SUCCEEDED),
    Move.REJECT: _t({State.BATCHED}, State.FAILED),
    Move.REQUEUE: _t({State.BATCHED}, State.PENDING),
    Move.CANCEL: _t({State.PENDING}, State.CANCELLED),
    Move.REOPEN: _t({State.FAILED}, State.PENDING),
    Move.REUSE: _t({State.PENDING}, State.SUCCEEDED),
}
