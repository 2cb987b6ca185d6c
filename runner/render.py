"""Text for people: the lines the CLI prints for a finished run, a status, a batch list, a spend report."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from runner.money import fmt_usd
from runner.planner import Costs, Plan, TierPlan, duration
from runner.reports import Batches, Owner, Spend, Status

if TYPE_CHECKING:  # the extraction package imports the executors: not for every command's start-up
    from runner.extract.job import ExtractReport
    from runner.store.peers import Peer

__all__ = [
    "batches_lines",
    "extract_lines",
    "gate_lines",
    "plan_lines",
    "run_summary",
    "spend_lines",
    "status_lines",
]


def run_summary(name: str, counts: dict[str, int], spend: int, notices: list[str], stopped: str | None,
                failures: list[tuple[str, str]], db: str) -> list[str]:  # fmt: skip
    """The closing lines of ``runner run``: counts, spend, notices, why it stopped or what failed."""
    total = sum(counts.values())
    waiting = counts["pending"] + counts["in_flight"] + counts["batched"]
    cancelled = f", {counts['cancelled']:,} cancelled" if counts.get("cancelled") else ""
    lines = [
        f"run {name}: {counts['succeeded']:,} succeeded, {counts['failed']:,} failed{cancelled}, {waiting:,} pending "
        f"of {total:,}; spent {fmt_usd(spend)}"
    ]
    lines += [f"note: {notice}" for notice in dict.fromkeys(notices)]
    if stopped is not None:
        lines.append(f"stopped: {stopped}")
    elif counts["failed"]:
        lines += [f"  failed {custom_id}: {reason}" for custom_id, reason in failures]
        lines.append(f"see every failure: runner results --db {db} --name {name}")
    return lines


def status_lines(report: Status) -> list[str]:
    states = ", ".join(f"{k} {v:,}" for k, v in report.states.items() if v)
    lines = [
        f"run {report.run} ({report.input}): {report.total:,} requests: {states or 'none'}",
        f"spent ${report.spent}" + _owner(report.owner),
    ]
    if report.plan:
        lines.append(f"plan (--mode auto): {report.plan['reason']}")
    if report.batches:
        lines.append("batches: " + ", ".join(f"{n} {s}" for s, n in sorted(report.batches.items())))
    for p in report.wave_plan:
        if p.waves:
            lines.append(
                f"wave plan {p.model}: {p.pending_requests:,} pending, ~{p.pending_tokens:,} tokens = "
                f"{p.waves} more wave(s) under the queue limit of {p.queue_limit or 0:,}"
            )
    lines += [f"  failed {f.custom_id}: {f.reason}" for f in report.first_failures]
    return lines


def batches_lines(report: Batches) -> list[str]:
    lines = []
    for b in report.batches:
        counts = b.counts or {}
        lines.append(
            f"chunk {b.chunk:>4} {b.model:<14} {b.requests:>7,} requests  {b.state:<9} "
            f"{(b.status or '-'):<11} done {counts.get('completed', 0):,} failed {counts.get('failed', 0):,}"
            f"  age {b.age_seconds:,}s  {b.batch_id or ''} {b.note or ''}".rstrip()
        )
    for p in report.plan:
        waves = f"{p.waves} wave(s) under the queue limit of {p.queue_limit or 0:,}" if p.waves else "no limit"
        lines.append(f"pending {p.model}: {p.pending_requests:,} requests, ~{p.pending_tokens:,} tokens: {waves}")
    if not report.batches and not report.plan:
        lines.append("no batches and nothing pending")
    return lines


def spend_lines(report: Spend) -> list[str]:
    lines = [
        f"{r.run:<24} {r.model:<16} {r.service_tier:<9} {r.responses:>9,} responses "
        f"{r.prompt_tokens:>12,} in ({r.cached_tokens:,} cached) {r.output_tokens:>11,} out ${r.cost}"
        for r in report.rows
    ]
    lines.append(f"total ${report.total}")
    return lines


def _owner(owner: Owner | None) -> str:
    if owner is None:
        return ""
    if owner.state == "alive":
        return f"; a process is working on it ({owner.process})"
    return f"; its last process ({owner.process}) is {owner.state}: the next run takes over"


def plan_lines(plan: Plan) -> list[str]:
    """``runner plan``: the job, its costs, one row per tier, the cheapest plan that meets the deadline, and what
    one tier up would buy."""
    cost, pools = plan.costs, plan.workload.pools
    models = ", ".join(f"{p.requests:,} x {p.model}{' (long context)' if p.long_context else ''}" for p in pools)
    prompt = sum(p.prompt_tokens for p in pools)
    output = sum(p.output_tokens for p in pools)
    lines = [
        f"job: {models}: {prompt:,} prompt tokens, {output:,} output tokens expected",
        f"basis: {plan.workload.basis}",
        f"cost: sync {fmt_usd(cost.sync)} · batch {fmt_usd(cost.batch)}"
        + (f" · fast {fmt_usd(cost.fast)}" if cost.fast else ""),
    ]
    if cost.cached_tokens and cost.prompt_tokens:
        lines.append(
            f"cached input: {cost.cached_tokens / cost.prompt_tokens:.0%} of prompt tokens (shared prefixes of 1,024+ "
            f"tokens) saves {fmt_usd(cost.sync_uncached - cost.sync)} in sync"
        )
    if plan.deadline is not None:
        lines.append(f"deadline: {duration(plan.deadline)}")
    lines.append(
        "batch times: up to 24 h a wave (OpenAI's window)"
        + (
            f"; typical from {plan.turnarounds:,} batches seen here"
            if plan.turnarounds
            else "; no batches seen here yet"
        )
    )
    header = f"{'tier':<14}{'sync':<18}{'batch':<34}{'monthly limit':<20}to reach"
    lines += ["", header]
    for t in plan.rows:
        you = " (you)" if t.tier == plan.current else ""
        star = {mode: "*" if plan.best == (t.tier, mode) else " " for mode in ("sync", "batch")}
        sync_cell = "no limits" if t.sync is None else (
            f"{duration(t.sync.seconds)} {t.sync.binding}{_meets(t.sync_meets(plan.deadline))}{star['sync']}"
        )  # fmt: skip
        batch_cell = "no limits" if t.batch is None else _batch_cell(t, plan.deadline) + star["batch"]
        lines.append(f"{t.tier + you:<14}{sync_cell:<18}{batch_cell:<34}{_covers(t, cost):<20}{t.requirement}")
    lines.append("")
    if any(t.batch and t.batch.binding == "no queue limit listed" for t in plan.rows):
        lines.append("? tier_limits.json lists no batch queue limit at this tier: the Batch API may not be open to it")
    if plan.best is None:
        lines.append("no tier meets the deadline within its monthly usage limit")
    else:
        tier, mode = plan.best
        lines.append(f"* cheapest{' that meets the deadline' if plan.deadline is not None else ''}: {tier}, "
                     f"{mode}, {fmt_usd(cost.sync if mode == 'sync' else cost.batch)}")  # fmt: skip
    if plan.upgrade:
        lines.append(f"one tier up: {plan.upgrade}")
    return lines


def _whole_usd(amount: int) -> str:
    """``$100`` for a round amount (limits, thresholds), cents otherwise."""
    return fmt_usd(amount).removesuffix(".00")


def _meets(meets: bool | str | None) -> str:
    return {None: "", True: " ok", False: " late", "yes": " ok", "likely": " likely", "no": " late"}[meets]


def _batch_cell(t: TierPlan, deadline: float | None) -> str:
    batch = t.batch
    if batch is None:
        return "no limits"
    unlisted = "?" if batch.binding == "no queue limit listed" else ""
    waves = f"{batch.waves:,} wave{'s' if batch.waves != 1 else ''}{unlisted}"
    typical = f", ~{duration(batch.typical)}" if batch.typical is not None else ""
    big = " (too large!)" if batch.too_large else ""
    return f"{waves}{typical}, <={duration(batch.bound)}{_meets(t.batch_meets(deadline))}{big}"


def _covers(t: TierPlan, cost: Costs) -> str:
    sync = t.sync is not None and cost.sync <= t.monthly_limit
    batch = t.batch is not None and cost.batch <= t.monthly_limit
    names = {(True, True): "both", (False, True): "batch only", (True, False): "sync only"}
    return f"{_whole_usd(t.monthly_limit)}: {names.get((sync, batch), 'neither')}"


def extract_lines(report: ExtractReport) -> list[str]:
    """The closing lines of ``runner extract``: documents by outcome, rows, spend (repairs apart), the table."""
    waiting = f", {report.waiting:,} still to answer" if report.waiting else ""
    lines = [
        f"extraction {report.name}: {report.documents:,} documents: {report.valid:,} valid, {report.repaired:,} "
        f"repaired, {report.failed:,} failed{waiting}; {report.rows:,} rows in table {report.table}",
        f"spent {fmt_usd(report.spend + report.repair_spend)} (repairs {fmt_usd(report.repair_spend)})",
    ]
    lines += [f"  failed {doc}: {reason}" for doc, reason in report.reasons]
    if report.stopped is not None:
        lines.append(f"stopped: {report.stopped}")
    return lines


def gate_lines(members: Sequence[Peer]) -> list[str]:
    """The processes sharing a key's limits: on which host, what each admits of which limit, and whether it wants
    more than it gets (its gate holds requests back)."""
    if not members:
        return ["no runner process shares limits with this key now"]
    lines = [f"{'host':<20} {'pid':>8}  {'limit':<32} {'admits':>12}  wants more"]
    for m in members:
        unit = "tokens/s" if m.scope.endswith("tokens") else "req/s"
        host = m.member.split(":", 1)[0][:20]
        lines.append(f"{host:<20} {m.pid:>8}  {m.scope:<32} {m.rate:>8,.1f} {unit:<8} {'yes' if m.held else 'no'}")
    return lines
