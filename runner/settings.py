"""How a run is to be worked: limits the user set, budgets, timing. Both modes read them; the CLI builds them."""

from __future__ import annotations

from dataclasses import dataclass, field

from runner.retry import RetryPolicy

__all__ = ["BatchSettings", "Lane", "RunSettings"]


@dataclass
class RunSettings:
    tier: str = "tier-1"
    rpm: int | None = None  # instead of the tier's limits
    tpm: int | None = None
    rpd: int | None = None
    batch_queue_tokens: int | None = None  # instead of the tier's batch queue limit
    headroom: float = 0.02  # share of each limit left unused
    burst_seconds: float = 1.0  # the most of a limit's rate released at once (the gate may learn less)
    gate: str = "host"  # host: share each limit with this host's other runner processes on the key; none: alone
    concurrency: int | None = None  # most requests in flight; None: rate x latency (Little's law)
    max_spend: int | None = None  # picodollars
    deadline: float | None = None  # wall clock (time.time) by which to stop
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    request_timeout: float = 600.0
    lease_seconds: float = 900.0
    takeover_seconds: float = 900.0  # another host's owner is taken over after this long without a heartbeat
    heartbeat_seconds: float = 5.0
    flush_seconds: float = 0.05
    grace_seconds: float = 5.0  # after a stop (signal, budget, deadline...): how long what is in flight may finish
    unreachable_seconds: float = 30.0  # no answer at all for this long (and several tries): stop, resumably
    retry_failed: bool = False  # reopen every failed request, not only those whose failure time may cure
    reuse: bool = True  # answer a request already answered in this database (same endpoint and body) from the store
    seed: int | None = None

    @property
    def explicit_limits(self) -> bool:
        return any(v is not None for v in (self.rpm, self.tpm, self.rpd))


@dataclass
class BatchSettings:
    poll_min: float = 10.0  # seconds between the first polls of a batch
    poll_max: float = 300.0  # backoff cap
    max_resubmits: int = 3  # times a request may go back to pending from a batch before it fails
    count_output: bool = True  # count max output tokens in the queue estimate (OpenAI does not say; be safe)
    queue_wait: float = 60.0  # after token_limit_exceeded, wait this long (or for a batch to finish)
    calls_per_second: float = 20.0  # control-plane calls (upload, create, poll, download), politely paced


@dataclass(frozen=True)
class Lane:
    """Which pending requests an executor works on: in a split run (``--mode auto``) the batch lane holds the ids
    up to ``upto`` and the sync lane those above ``above``; ``most`` caps the requests sent in one pass (a pilot)."""

    above: int = 0
    upto: int | None = None
    most: int | None = None
