"""What the read commands report, as types: a run's status, its batches and wave plan, spend, a cancellation.

``runner.commands`` builds them from the store, ``runner.render`` turns them into text, and ``as_json`` into the
``--json`` output (money as decimal strings of USD) at the edge; the Python API hands them out as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

__all__ = ["BatchInfo", "Batches", "Cancelled", "Failure", "Owner", "Spend", "SpendRow", "Status", "Wave"]


@dataclass(frozen=True)
class Owner:
    """The process that holds (or last held) a run, and whether it is alive, gone or silent."""

    process: str
    state: str


@dataclass(frozen=True)
class Failure:
    custom_id: str
    reason: str


@dataclass(frozen=True)
class Wave:
    """What a model still has pending, and how many batch waves that is under the queue limit (None: no limit)."""

    model: str
    pending_requests: int
    pending_tokens: int
    queue_limit: int | None
    waves: int | None


@dataclass(frozen=True)
class Status:
    """Where a run stands."""

    run: str
    input: str | None
    total: int
    states: dict[str, int]
    spent: Decimal  # USD
    working: bool  # a live process works on it
    owner: Owner | None
    last_stop: str | None
    tier: str | None
    mode: str | None
    plan: dict[str, Any] | None  # the auto mode's decision, as it was stored
    batches: dict[str, int]  # by status
    wave_plan: tuple[Wave, ...]
    first_failures: tuple[Failure, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "input": self.input,
            "total": self.total,
            "states": self.states,
            "spend_usd": str(self.spent),
            "working": self.working,
            "owner": None if self.owner is None else {"process": self.owner.process, "state": self.owner.state},
            "last_stop": self.last_stop,
            "tier": self.tier,
            "mode": self.mode,
            "plan": self.plan,
            "batches": self.batches,
            "wave_plan": [_wave(w) for w in self.wave_plan],
            "first_failures": [{"custom_id": f.custom_id, "reason": f.reason} for f in self.first_failures],
        }


@dataclass(frozen=True)
class BatchInfo:
    """One Batch API batch of a run."""

    chunk: int
    model: str
    requests: int
    state: str
    status: str | None
    batch_id: str | None
    counts: dict[str, int] | None  # the API's request_counts
    note: str | None
    age_seconds: int


@dataclass(frozen=True)
class Batches:
    run: str
    batches: tuple[BatchInfo, ...]
    plan: tuple[Wave, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "batches": [b.__dict__ for b in self.batches],
            "plan": [_wave(w) for w in self.plan],
        }


@dataclass(frozen=True)
class SpendRow:
    run: str
    model: str
    service_tier: str
    responses: int
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int
    cost: Decimal  # USD


@dataclass(frozen=True)
class Spend:
    total: Decimal  # USD
    rows: tuple[SpendRow, ...]

    def as_json(self) -> dict[str, Any]:
        rows = [{**{k: v for k, v in r.__dict__.items() if k != "cost"}, "cost_usd": str(r.cost)} for r in self.rows]
        return {"total_usd": str(self.total), "rows": rows}


@dataclass(frozen=True)
class Cancelled:
    cancelled: int  # requests withdrawn now
    batched: int  # still inside running batches (runner batches --cancel takes them back)
    pending: int  # still pending (those not named)


def _wave(w: Wave) -> dict[str, Any]:
    return {"model": w.model, "pending_requests": w.pending_requests, "pending_tokens": w.pending_tokens,
            "queue_limit": w.queue_limit, "waves": w.waves}  # fmt: skip
