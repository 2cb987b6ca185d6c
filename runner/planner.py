"""How long a job takes and what it costs at each tier, synchronously or through the Batch API; and, for
``--mode auto``, which of them (or what split) meets a deadline cheapest.

Sync: the pools of a workload are admitted one after another (admission is first come, first served), each at
the rate its binding limit allows, less the headroom: RPM (requests) or TPM (prompt + output allowance, as counted
at admission). A daily limit (RPD, TPD) that a day at that rate would pass binds instead: whole days of the daily
allowance, then the rest. Add what the gate's cautious start loses and one answer's time.

Batch: the batch queue limit (enqueued tokens per model: prompt + output allowance, as packing counts them) cuts a
pool into waves, one after another; pools (models, long-context rows) queue side by side. Each wave may take the
whole 24 h completion window (what OpenAI promises); the batches this database has seen say what is typical.

Costs: standard, batch and fast (priority) prices, with cached input at its own rate where a prompt cache would
serve it (``Workload``); all in picodollars.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runner.gate import START_COST
from runner.limits import Limits, ModelInfo, Prices, RateLimits
from runner.money import usd
from runner.workload import Pool, Workload

__all__ = ["BatchTime", "Costs", "Decision", "Plan", "SyncTime", "TierPlan", "decide", "plan"]

DAY = 86_400.0
WINDOW = 24 * 3600.0  # the Batch API's completion window


@dataclass(frozen=True)
class SyncTime:
    seconds: float
    binding: str  # RPM, TPM, RPD or TPD


@dataclass(frozen=True)
class BatchTime:
    waves: int
    binding: str  # "batch queue" (several waves), "24 h window" or "no queue limit listed" (tier_limits.json)
    typical: float | None  # waves x the median turnaround of the batches seen (None: none seen)
    slowest: float | None  # waves x the slowest turnaround seen
    bound: float  # waves x the 24 h window: what OpenAI promises
    too_large: bool  # some request is larger than the queue limit: it can never be enqueued


@dataclass(frozen=True)
class Costs:
    sync: int
    batch: int
    fast: int | None  # None: no fast (priority) price for a model of the job
    sync_uncached: int  # what sync would cost with no cached input
    cached_tokens: int
    prompt_tokens: int


@dataclass(frozen=True)
class TierPlan:
    tier: str
    requirement: str  # what it takes to reach the tier
    monthly_limit: int  # picodollars
    sync: SyncTime | None  # None: a model of the job has no limits at this tier
    batch: BatchTime | None

    def sync_meets(self, deadline: float | None) -> bool | None:
        if deadline is None or self.sync is None:
            return None
        return self.sync.seconds <= deadline

    def batch_meets(self, deadline: float | None) -> str | None:
        """yes (within the promised window), likely (within what the batches seen took), no; None: no deadline."""
        if deadline is None or self.batch is None:
            return None
        if self.batch.bound <= deadline:
            return "yes"
        if self.batch.slowest is not None and self.batch.slowest <= deadline:
            return "likely"
        return "no"


@dataclass(frozen=True)
class Plan:
    workload: Workload
    costs: Costs
    rows: tuple[TierPlan, ...]
    deadline: float | None  # seconds from now
    current: str | None  # the tier the user is at (--tier or detected)
    best: tuple[str, str] | None  # (tier, sync|batch): the cheapest that meets the deadline and the monthly limit
    upgrade: str  # what moving up one tier from ``current`` would buy, in one line
    turnarounds: int  # how many batches the batch times rest on

    def as_json(self) -> dict[str, Any]:
        c = self.costs
        return {
            "requests": self.workload.requests,
            "pools": [
                {"model": p.model, "long_context": p.long_context, "requests": p.requests,
                 "prompt_tokens": p.prompt_tokens, "cached_tokens": p.cached_tokens, "output_tokens": p.output_tokens,
                 "output_allowance": p.allowance}
                for p in self.workload.pools
            ],
            "basis": self.workload.basis,
            "deadline_seconds": self.deadline,
            "current_tier": self.current,
            "cost_usd": {
                "sync": str(usd(c.sync)),
                "batch": str(usd(c.batch)),
                "fast": None if c.fast is None else str(usd(c.fast)),
                "sync_without_cache": str(usd(c.sync_uncached)),
                "cache_saves_sync": str(usd(c.sync_uncached - c.sync)),
            },
            "cached_input_share": c.cached_tokens / c.prompt_tokens if c.prompt_tokens else 0.0,
            "batch_history": self.turnarounds,
            "tiers": [
                {
                    "tier": r.tier,
                    "requirement": r.requirement,
                    "monthly_usage_limit_usd": str(usd(r.monthly_limit)),
                    "sync": None if r.sync is None else {
                        "seconds": round(r.sync.seconds, 1),
                        "binding": r.sync.binding,
                        "meets_deadline": r.sync_meets(self.deadline),
                        "within_monthly_limit": c.sync <= r.monthly_limit,
                    },
                    "batch": None if r.batch is None else {
                        "waves": r.batch.waves,
                        "binding": r.batch.binding,
                        "typical_seconds": r.batch.typical,
                        "slowest_seconds": r.batch.slowest,
                        "bound_seconds": r.batch.bound,
                        "requests_too_large": r.batch.too_large,
                        "meets_deadline": r.batch_meets(self.deadline),
                        "within_monthly_limit": c.batch <= r.monthly_limit,
                    },
                }
                for r in self.rows
            ],
            "best": None if self.best is None else {"tier": self.best[0], "mode": self.best[1]},
            "upgrade": self.upgrade,
        }  # fmt: skip


def plan(
    workload: Workload,
    limits: Limits,
    *,
    headroom: float = 0.02,
    deadline: float | None = None,
    current: str | None = None,
    turnarounds: list[float] | None = None,
    count_output: bool = True,
    stated: Stated | None = None,
) -> Plan:
    """The plan of ``workload`` at every tier of ``limits``. ``deadline``: seconds from now; ``turnarounds``: how
    long the batches seen took (seconds), for the typical batch time; ``stated``: the project's own limits by
    model, used for the ``current`` tier in place of the table's."""
    seen = sorted(turnarounds or [])
    costs = job_costs(workload, limits)
    rows = tuple(
        TierPlan(
            tier.name,
            tier.requirement(),
            tier.monthly_usage_limit,
            sync_time(workload, limits, tier.name, headroom, stated if tier.name == current else None),
            batch_time(workload, limits, tier.name, seen, count_output, stated if tier.name == current else None),
        )
        for tier in limits.tiers.values()
    )
    best = _cheapest(rows, costs, deadline)
    return Plan(workload, costs, rows, deadline, current, best, _upgrade(rows, costs, current), len(seen))


# -- time -------------------------------------------------------------------------------------------------------


Stated = Mapping[str, RateLimits]  # a project's own limits by model (the admin API), for the tier it is at


def _row(limits: Limits, pool: Pool, tier: str, stated: Stated | None = None) -> RateLimits | None:
    if stated and not pool.long_context and pool.model in stated:
        return stated[pool.model]
    model = limits.model(pool.model)
    table = model.long_context_limits if pool.long_context else model.limits
    return table.get(tier)


def pool_seconds(pool: Pool, row: RateLimits, headroom: float) -> SyncTime:
    """How long ``pool`` takes under ``row`` at full pace (without the start and the last answer)."""
    share = 1 - headroom
    minute: list[tuple[float, str]] = [(0.0, "RPM")]
    if row.rpm:
        minute.append((pool.requests / (row.rpm * share) * 60, "RPM"))
    if row.tpm:
        minute.append((pool.admitted_tokens / (row.tpm * share) * 60, "TPM"))
    seconds, binding = max(minute)
    daily: list[tuple[float, str]] = []  # the share of the pool one day's allowance covers
    if row.rpd and pool.requests:
        daily.append((row.rpd / pool.requests, "RPD"))
    if row.tpd and pool.admitted_tokens:
        daily.append((row.tpd / pool.admitted_tokens, "TPD"))
    per_day, daily_binding = min(daily, default=(math.inf, ""))
    if per_day >= 1 or seconds == 0 or per_day >= DAY / seconds:  # the day's allowance is never used up
        return SyncTime(seconds, binding)
    days = math.ceil(1 / per_day) - 1
    return SyncTime(days * DAY + seconds * (1 - days * per_day), daily_binding)


def sync_time(
    workload: Workload, limits: Limits, tier: str, headroom: float, stated: Stated | None = None
) -> SyncTime | None:
    """The whole job, pool after pool; None if a model of it has no limits at ``tier``."""
    total, slowest = 0.0, SyncTime(0.0, "RPM")
    answer = 0.0
    for pool in workload.pools:
        row = _row(limits, pool, tier, stated)
        if row is None:
            return None
        took = pool_seconds(pool, row, headroom)
        total += took.seconds
        slowest = max(slowest, took, key=lambda t: t.seconds)
        answer = max(answer, _answer_seconds(limits.model(pool.model), pool, workload.seconds))
    return SyncTime(total + START_COST + answer, slowest.binding)


def _answer_seconds(model: ModelInfo, pool: Pool, measured: float | None) -> float:
    if measured is not None:
        return measured
    return model.expected_seconds(pool.output_tokens // max(pool.requests, 1))


def batch_time(
    workload: Workload,
    limits: Limits,
    tier: str,
    seen: list[float],
    count_output: bool = True,
    stated: Stated | None = None,
) -> BatchTime | None:
    """Waves under each pool's batch queue limit (pools side by side); None if a model has no limits at ``tier``."""
    waves, too_large, listed = 1, False, True
    for pool in workload.pools:
        row = _row(limits, pool, tier, stated)
        if row is None:
            return None
        queue = row.batch_queue_tokens
        if queue is None:
            listed = False
            continue
        tokens = pool.prompt_tokens + (pool.allowance if count_output else 0)
        waves = max(waves, math.ceil(tokens / queue))
        too_large = too_large or pool.largest > queue
    typical = waves * statistics.median(seen) if seen else None
    slowest = waves * seen[-1] if seen else None
    binding = "batch queue" if waves > 1 else ("24 h window" if listed else "no queue limit listed")
    return BatchTime(waves, binding, typical, slowest, waves * WINDOW, too_large)


# -- money ------------------------------------------------------------------------------------------------------


def _cost(pool: Pool, prices: Prices, cached: bool = True) -> int:
    hit = pool.cached_tokens if cached else 0
    return (pool.prompt_tokens - hit) * prices.input + hit * prices.cached_input + pool.output_tokens * prices.output


def job_costs(workload: Workload, limits: Limits) -> Costs:
    sync = batch = uncached = 0
    fast: int | None = 0
    for pool in workload.pools:
        prices = limits.model(pool.model).prices
        sync += _cost(pool, prices["standard"])
        uncached += _cost(pool, prices["standard"], cached=False)
        batch += _cost(pool, prices["batch"])
        fast = None if fast is None or "fast" not in prices else fast + _cost(pool, prices["fast"])
    cached = sum(p.cached_tokens for p in workload.pools)
    prompt = sum(p.prompt_tokens for p in workload.pools)
    return Costs(sync, batch, fast, uncached, cached, prompt)


# -- choosing ---------------------------------------------------------------------------------------------------


def _cheapest(rows: tuple[TierPlan, ...], costs: Costs, deadline: float | None) -> tuple[str, str] | None:
    """The cheapest (tier, mode) that meets the deadline within the tier's monthly limit; ties: the lower tier,
    then the faster. Batch counts as meeting the deadline only when the 24 h window does."""
    options: list[tuple[int, int, float, str, str]] = []
    for rank, row in enumerate(rows):
        if row.sync is not None and row.sync_meets(deadline) is not False and costs.sync <= row.monthly_limit:
            options.append((costs.sync, rank, row.sync.seconds, row.tier, "sync"))
        ok = row.batch is not None and not row.batch.too_large and row.batch_meets(deadline) in (None, "yes")
        if ok and row.batch is not None and costs.batch <= row.monthly_limit:
            options.append((costs.batch, rank, row.batch.bound, row.tier, "batch"))
    if not options:
        return None
    _, _, _, tier, mode = min(options)
    return tier, mode


def _upgrade(rows: tuple[TierPlan, ...], costs: Costs, current: str | None) -> str:
    names = [r.tier for r in rows]
    if current is None or current not in names:
        return ""
    at = names.index(current)
    if at + 1 == len(rows):
        return f"{current} is the highest tier: higher limits are a request to OpenAI"
    here, up = rows[at], rows[at + 1]
    parts = []
    if here.sync is not None and up.sync is not None:
        parts.append(f"sync {duration(here.sync.seconds)} -> {duration(up.sync.seconds)} ({up.sync.binding}-bound)")
    if here.batch is not None and up.batch is not None and here.batch.waves != up.batch.waves:
        parts.append(f"batch {here.batch.waves:,} -> {up.batch.waves:,} waves")
    if up.monthly_limit != here.monthly_limit:
        covers = "covers" if costs.sync <= up.monthly_limit else "still below"
        parts.append(
            f"monthly limit ${usd(here.monthly_limit):,} -> ${usd(up.monthly_limit):,} ({covers} the "
            f"${usd(costs.sync):,.2f} sync cost)"
        )
    gain = "; ".join(parts) or "nothing for this job"
    return f"{current} -> {up.tier} ({up.requirement}): {gain}"


def duration(seconds: float) -> str:
    """``42s``, ``34m``, ``8.3h``, ``99d``: one figure, the unit that reads best."""
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f}m"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f}h"
    days = seconds / DAY
    return f"{days:.1f}d" if days < 100 else f"{days:,.0f}d"


# -- --mode auto ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """What ``--mode auto`` runs: ``batch_requests`` of the pending requests (in order) through the Batch API,
    the rest synchronously; ``mode`` is sync, batch or split; ``reason`` is the one line printed and stored."""

    mode: str
    batch_requests: int
    sync_requests: int
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "batch_requests": self.batch_requests, "sync_requests": self.sync_requests,
                "reason": self.reason}  # fmt: skip


def decide(
    workload: Workload,
    limits: Limits,
    tier: str,
    deadline: float | None,
    headroom: float = 0.02,
    stated: Stated | None = None,
) -> Decision:
    """Cheapest first: the Batch API takes what it can finish within the deadline (the 24 h window per wave, as
    OpenAI promises), the rate limit the rest; what neither can finish in time goes to batch, said so. ``stated``:
    the limits to pace by where they are not the tier's row (--rpm / --tpm / --rpd, the admin API)."""
    n = workload.requests
    sync = sync_time(workload, limits, tier, headroom, stated)
    batch = batch_time(workload, limits, tier, [], stated=stated)
    if batch is None or sync is None:
        which = "sync" if sync is not None else "batch"
        return Decision(which, n if which == "batch" else 0, n if which == "sync" else 0,
                        f"{which}: the other mode has no limits at {tier}")  # fmt: skip
    if deadline is None:
        return Decision("batch", n, 0, f"batch: no deadline, so the Batch API at half price ({_waves(batch)})")
    if batch.bound <= deadline and not batch.too_large:
        return Decision("batch", n, 0, f"batch: {_waves(batch)} finish within the {duration(deadline)} deadline "
                                       "at half price")  # fmt: skip
    waves_in_time = int(deadline // WINDOW)
    in_batch = min(n, n * waves_in_time // batch.waves) if waves_in_time else 0
    rest = n - in_batch
    sync_rest = sync.seconds * rest / n
    if rest and sync_rest <= deadline:
        if in_batch == 0:
            return Decision("sync", 0, n, f"sync: {duration(sync.seconds)} at {tier} ({sync.binding}-bound) meets "
                                          f"the {duration(deadline)} deadline; a batch may take 24 h")  # fmt: skip
        reason = (
            f"split: {in_batch:,} requests by batch ({waves_in_time} of {batch.waves} waves in time), "
            f"{rest:,} sync ({duration(sync_rest)}, {sync.binding}-bound)"
        )
        return Decision("split", in_batch, rest, reason)
    fits = int(n * max(deadline - START_COST, 0) / sync.seconds) if sync.seconds else n
    in_sync = min(rest, fits)
    late = rest - in_sync
    mode = "split" if in_sync and in_batch + late else ("sync" if in_sync else "batch")
    return Decision(
        mode,
        in_batch + late,
        in_sync,
        f"{mode}: {in_sync:,} requests sync (what {sync.binding} at {tier} finishes in {duration(deadline)}), "
        f"{in_batch + late:,} by batch, {late:,} of which cannot meet the deadline at {tier} (a wave may take 24 h)",
    )


def _waves(batch: BatchTime) -> str:
    return f"{batch.waves:,} wave{'s' if batch.waves != 1 else ''} of up to 24 h"
