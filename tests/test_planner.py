"""The planner against cases worked out by hand from tier_limits.json (headroom 2% unless said)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from runner.gate import START_COST
from runner.limits import Limits, load_limits
from runner.money import usd
from runner.planner import DAY, BatchTime, Plan, SyncTime, TierPlan, decide, plan
from runner.workload import Workload, from_file, synthetic

from .conftest import ROOT, chat_line, write_jsonl

HOUR = 3600.0


@pytest.fixture
def million(limits: Limits) -> Workload:
    """The issue's job: 1,000,000 requests of 800 input and 200 output tokens on gpt-4.1-mini."""
    return synthetic(limits, "gpt-4.1-mini", 1_000_000, 800, 200)


def row(p: Plan, tier: str) -> TierPlan:
    return next(r for r in p.rows if r.tier == tier)


def sync_at(p: Plan, tier: str) -> SyncTime:
    found = row(p, tier).sync
    assert found is not None
    return found


def batch_at(p: Plan, tier: str) -> BatchTime:
    found = row(p, tier).batch
    assert found is not None
    return found


def test_a_million_requests_at_every_tier(limits: Limits, million: Workload) -> None:
    p = plan(million, limits, current="tier-2")
    # $0.40 x 800M + $1.60 x 200M; half in batch; fast $0.70 / $2.80
    assert (usd(p.costs.sync), usd(p.costs.batch), usd(p.costs.fast or 0)) == (640, 320, 1120)
    answer = 0.6 + 200 / 90  # first token + 200 tokens at 90/s
    # tier-1: RPD 10,000 -> 99 whole days, then the last 10,000 requests at the TPM rate (1,000 tokens each,
    # 196,000 tokens/min after headroom): 10M / 196,000 min
    t1 = sync_at(p, "tier-1")
    assert t1.binding == "RPD"
    assert t1.seconds == pytest.approx(99 * DAY + 10_000_000 / 196_000 * 60 + START_COST + answer)
    # tier-2: 1e9 tokens at 1,960,000 a minute = 510.2 min: TPM-bound (RPM alone: 204 min)
    t2 = sync_at(p, "tier-2")
    assert (t2.binding, round(t2.seconds - START_COST - answer)) == ("TPM", round(1e9 / 1_960_000 * 60))
    # tier-5: 1e6 requests at 29,400 a minute = 34.0 min: RPM-bound (TPM alone: 6.8 min)
    t5 = sync_at(p, "tier-5")
    assert (t5.binding, round(t5.seconds - START_COST - answer)) == ("RPM", round(1e6 / 29_400 * 60))
    # batch waves under the queue limit (prompt + output allowance counted): 1e9 tokens / 2M, 20M, 40M, 1G, 15G
    waves = [batch_at(p, t).waves for t in ("tier-1", "tier-2", "tier-3", "tier-4", "tier-5")]
    assert waves == [500, 50, 25, 1, 1]
    assert batch_at(p, "tier-3").binding == "batch queue" and batch_at(p, "tier-4").binding == "24 h window"
    tiers = {t["tier"]: t for t in p.as_json()["tiers"]}
    # monthly usage limits: tier-1 $100 covers neither; tier-2 $500 the batch cost only; tier-3 $1,000 both
    assert (tiers["tier-1"]["sync"]["within_monthly_limit"], tiers["tier-1"]["batch"]["within_monthly_limit"]) == (
        False, False)  # fmt: skip
    assert (tiers["tier-2"]["sync"]["within_monthly_limit"], tiers["tier-2"]["batch"]["within_monthly_limit"]) == (
        False, True)  # fmt: skip
    assert tiers["tier-3"]["sync"]["within_monthly_limit"]
    assert p.best == ("tier-2", "batch")  # no deadline: the cheapest within a monthly limit, at the lowest tier
    assert p.upgrade.startswith("tier-2 -> tier-3 ($100 paid, 7+ days since the first payment): sync 8.5h -> 4.3h")
    assert "batch 50 -> 25 waves" in p.upgrade and "monthly limit $500 -> $1,000 (covers the $640.00" in p.upgrade


def test_the_cheapest_plan_that_meets_the_deadline(limits: Limits, million: Workload) -> None:
    six_hours = plan(million, limits, deadline=6 * HOUR)
    assert six_hours.best == ("tier-3", "sync")  # 4.3 h; tier-2 takes 8.5 h; no batch is promised within 6 h
    assert row(six_hours, "tier-2").sync_meets(6 * HOUR) is False
    two_days = plan(million, limits, deadline=48 * HOUR)
    assert two_days.best == ("tier-4", "batch")  # one wave within 24 h, half the price
    seen = plan(million, limits, deadline=6 * HOUR, turnarounds=[1200.0, 1800.0, 3600.0])
    assert batch_at(seen, "tier-4").typical == 1800.0 and row(seen, "tier-4").batch_meets(6 * HOUR) == "likely"
    assert seen.best == ("tier-3", "sync")  # "likely" is not promised: the plan marks what is


def test_long_context_requests_are_planned_on_their_own_limits(limits: Limits) -> None:
    job = synthetic(limits, "gpt-4.1-mini", 1_000, 200_000, 1_000)  # over the 128k line
    assert job.pools[0].long_context
    p = plan(job, limits)
    # long-context tier-1: 200 RPM, 400,000 TPM -> 201M tokens at 392,000 a minute; queue 5M -> 41 waves
    assert sync_at(p, "tier-1").binding == "TPM"
    assert sync_at(p, "tier-1").seconds == pytest.approx(201_000_000 / 392_000 * 60 + START_COST + 0.6 + 1000 / 90)
    assert batch_at(p, "tier-1").waves == 41


def test_a_request_larger_than_the_queue_is_flagged(limits: Limits) -> None:
    job = synthetic(limits, "gpt-4.1", 10, 100_000, 100)  # gpt-4.1 tier-1 queue: 90,000 tokens
    assert batch_at(plan(job, limits), "tier-1").too_large
    assert not batch_at(plan(job, limits), "tier-3").too_large


def test_a_tokens_per_day_limit_binds_in_whole_days(tmp_path: Path) -> None:
    data = json.loads((ROOT / "tier_limits.json").read_text())
    data["models"]["gpt-4.1-mini"]["limits"]["tier-1"]["tpd"] = 1_000_000
    (tmp_path / "l.json").write_text(json.dumps(data))
    custom = load_limits(tmp_path / "l.json")
    job = synthetic(custom, "gpt-4.1-mini", 100, 99_000, 1_000)  # 10M tokens: 10 days of 1M
    t1 = sync_at(plan(job, custom), "tier-1")
    # 9 whole days, then the last 1M tokens at 196,000 a minute
    assert t1.binding == "TPD"
    assert t1.seconds == pytest.approx(9 * DAY + 1_000_000 / 196_000 * 60 + START_COST + 0.6 + 1000 / 90)


def test_shared_prefixes_are_priced_as_cached_input(limits: Limits) -> None:
    job = synthetic(limits, "gpt-4.1-mini", 1_000, 3_000, 100, shared_prefix=2_000)
    # cached from the 2nd request on: 1,024 + 7 x 128 = 1,920 of the 2,000 shared tokens
    assert job.pools[0].cached_tokens == 999 * 1_920
    costs = plan(job, limits).costs
    # 1,081,920 x $0.40 + 1,918,080 x $0.10 + 100,000 x $1.60, per 1M
    assert usd(costs.sync) == Decimal("0.784576")
    assert usd(costs.sync_uncached) == Decimal("1.36")  # 3M x $0.40 + 100,000 x $1.60


def test_a_job_file_is_read_with_its_shared_prefix(tmp_path: Path, limits: Limits) -> None:
    system = " ".join(f"rule{i} applies." for i in range(700))  # about 2,000 tokens, the same in every request
    lines = []
    for i in range(20):
        line = chat_line(f"r{i}", f"Question {i}?", max_tokens=50)
        line["body"]["messages"].insert(0, {"role": "system", "content": system})
        lines.append(line)
    job = from_file(write_jsonl(tmp_path / "job.jsonl", lines), limits)
    (pool,) = job.pools
    assert pool.requests == 20 and pool.allowance == 1_000
    share = pool.cached_tokens / pool.prompt_tokens
    assert 0.85 < share < 0.95  # 19 of 20 prompts mostly cached, the first not at all
    assert "max output tokens" in job.basis


@pytest.mark.parametrize(
    ("deadline", "mode", "in_batch"),
    [
        (None, "batch", 1_000_000),  # no deadline: half price
        (60 * DAY, "batch", 1_000_000),  # 50 waves of 24 h fit
        (30 * HOUR, "split", 20_000),  # one wave in time (1 of 50), the rest by TPM in 8.3 h
        (6 * HOUR, "split", 294_493),  # TPM finishes 705,507 in 6 h; the rest cannot meet it, said so
    ],
)
def test_auto_mode_splits_by_the_deadline(limits: Limits, million: Workload, deadline: float | None, mode: str,
                                          in_batch: int) -> None:  # fmt: skip
    decision = decide(million, limits, "tier-2", deadline)
    assert (decision.mode, decision.batch_requests) == (mode, in_batch), decision.reason
    assert decision.batch_requests + decision.sync_requests == 1_000_000


def test_auto_mode_sends_a_small_job_synchronously_when_the_deadline_is_short(limits: Limits) -> None:
    small = synthetic(limits, "gpt-4.1-mini", 5_000, 500, 100)
    decision = decide(small, limits, "tier-1", 2 * HOUR)
    assert (decision.mode, decision.sync_requests) == ("sync", 5_000)
    assert "meets the 2.0h deadline" in decision.reason
