"""The sync executor on virtual time: whole runs against the simulator in process (``InProcessAPI``), on an event
loop whose clock jumps when every task waits. Minutes of pacing, retries, quota, deadlines and outages take
milliseconds, and nothing here waits on real time. The same runs over real sockets and processes are in
``test_run.py`` (signals, kill -9, the CLI)."""

from __future__ import annotations

import io
import json
import math
import random
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from runner.commands import RunOutcome, export_results, run_job
from runner.errors import DeadlineReached, Interrupted, QuotaExhausted, RunnerError, Unreachable
from runner.jobfile import ingest
from runner.limits import Limits
from runner.retry import Action, Decision, Failure, RetryPolicy
from runner.settings import RunSettings
from runner.store import Claimed, Move, Store
from runner.sync import SyncExecutor
from runner.sync.daily import DailyCount, utc_day
from runner.sync.inflight import MEASURED, RAMP_PER_SECOND, RAMP_START, InFlight
from runner.sync.replies import Answer, Refusal, classify, outcome_of, service_tier, stop_of
from runner.transport import Credentials, Reply

from .conftest import FakeTime, chat_line, write_jsonl
from .inprocess import InProcessAPI

FAST_RETRY = RetryPolicy(max_attempts=8, max_rate_limited=60, base=0.05, cap=0.5)
NOWHERE = Credentials("http://sim.invalid/v1", "k")  # never dialled: the transport is the simulator in process


def settings(**kw: Any) -> RunSettings:
    kw.setdefault("retry", FAST_RETRY)
    kw.setdefault("seed", 1)
    kw.setdefault("gate", "none")
    return RunSettings(**kw)


def job(tmp_path: Path, n: int, **line: Any) -> Path:
    return write_jsonl(
        tmp_path / "job.jsonl", [chat_line(f"req-{i:04d}", f"Question number {i}?", **line) for i in range(n)]
    )


class Virtual:
    """One virtual clock, the simulator on it, and runs of a job through both."""

    def __init__(self, limits: Limits, clock: FakeTime | None = None, **sim: Any) -> None:
        self.clock = clock or FakeTime()
        self.limits = limits
        self.api = InProcessAPI(limits=limits, clock=self.clock, **sim)

    def store(self, folder: Path, name: str = "runner.db") -> Store:
        """A database on this clock (when a retry is due, leases)."""
        return Store(folder / name, clock=self.clock)

    def run(self, store: Store, path: Path, run_settings: RunSettings, **kw: Any) -> tuple[RunOutcome, float]:
        """The job to its end or a stop; returns the outcome and the virtual seconds it took."""
        started = self.clock.now
        self.api.timeout = run_settings.request_timeout
        outcome = run_job(store, str(path), self.limits, run_settings, NOWHERE,
                          timing=self.clock.timing(virtual_loop=True), transport=self.api, signals=False,
                          **kw)  # fmt: skip
        return outcome, self.clock.now - started

    def stats(self) -> dict[str, Any]:
        return self.api.stats()


def one_result_each(store: Store, n: int) -> None:
    lines = [json.loads(x) for x in export_results(store, "job")]
    assert sorted(x["custom_id"] for x in lines) == [f"req-{i:04d}" for i in range(n)]


# -- pacing -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("window", [60.0, 5.0, 1.0])
def test_a_run_holds_the_request_limit_without_a_refusal_and_takes_no_longer(
    tmp_path: Path, limits: Limits, window: float
) -> None:
    """240 requests at 600 RPM take 24 s of the limit: the run ends within 10% of that, nothing refused, whatever
    window the server enforces the minute over; and no real time passes."""
    virtual = Virtual(limits, rpm=600, tpm=1_000_000, window=window)
    store = virtual.store(tmp_path)
    real = time.monotonic()
    outcome, seconds = virtual.run(store, job(tmp_path, 240), settings(rpm=600, tpm=1_000_000))
    stats = virtual.stats()
    assert outcome.exit_code == 0 and outcome.counts["succeeded"] == 240
    assert stats["rate_limited"] == 0 and stats["requests"] == 240
    assert 23.5 <= seconds <= 26.4, seconds
    assert time.monotonic() - real < seconds / 2
    one_result_each(store, 240)


def test_a_run_holds_the_token_limit_under_a_one_second_window(tmp_path: Path, limits: Limits) -> None:
    virtual = Virtual(limits, rpm=1_200, tpm=60_000, window=1.0, latency_scale=0.1)  # 1,000 tokens a second
    store = virtual.store(tmp_path)
    outcome, seconds = virtual.run(store, job(tmp_path, 200, max_tokens=40), settings(rpm=1_200, tpm=60_000))
    stats = virtual.stats()
    assert outcome.exit_code == 0 and stats["rate_limited"] == 0 and stats["requests"] == 200
    counted = stats["counted_tokens"]
    assert counted <= 1_000 * (seconds + 1.0)  # within the limit: its rate plus one window's bucket
    assert counted >= 0.9 * 1_000 * (seconds - 1.0), (counted, seconds)  # and not crawling


# -- replies that are no answer ---------------------------------------------------------------------------------


def test_a_429_storm_pauses_everyone_and_every_request_ends_answered(tmp_path: Path, limits: Limits) -> None:
    virtual = Virtual(limits, latency_scale=0)
    store = virtual.store(tmp_path)
    virtual.api.sim.script("429", times=25, retry_after=0.3)
    outcome, _ = virtual.run(store, job(tmp_path, 40), settings())
    assert outcome.exit_code == 0 and outcome.counts["succeeded"] == 40
    one_result_each(store, 40)
    assert virtual.stats()["requests"] <= 40 + 25 + 10  # paused as a whole, not a retry storm


def test_random_faults_are_retried_to_completion(tmp_path: Path, limits: Limits) -> None:
    virtual = Virtual(limits, latency_scale=0, fault_rate=0.25, seed=4, hang_seconds=1.5)
    store = virtual.store(tmp_path)
    outcome, _ = virtual.run(store, job(tmp_path, 60), settings(request_timeout=0.5))
    assert {"reset", "timeout", "500:server_error"} <= set(virtual.stats()["errors"])
    assert outcome.exit_code == 0 and outcome.counts["succeeded"] == 60
    one_result_each(store, 60)


def test_a_200_that_is_not_json_is_retried_not_a_crash(tmp_path: Path, limits: Limits) -> None:
    virtual = Virtual(limits, latency_scale=0)
    store = virtual.store(tmp_path)
    virtual.api.sim.script("garbage", times=3)
    outcome, _ = virtual.run(store, job(tmp_path, 5), settings())
    assert outcome.exit_code == 0 and outcome.counts["succeeded"] == 5
    assert virtual.stats()["requests"] == 8
    one_result_each(store, 5)


def test_requests_failed_by_transient_errors_are_retried_by_the_next_run_permanent_ones_on_request(
    tmp_path: Path, limits: Limits
) -> None:
    virtual = Virtual(limits, latency_scale=0)
    store = virtual.store(tmp_path)
    path = job(tmp_path, 10)
    virtual.api.sim.script("503", times=20)  # two attempts each: every request fails, transiently
    two = settings(retry=RetryPolicy(max_attempts=2, max_rate_limited=60, base=0.01, cap=0.05))
    first, _ = virtual.run(store, path, two)
    assert first.exit_code == 1 and first.counts["failed"] == 10
    virtual.api.sim.script("400", times=3)  # three refused as written: no retry can cure that
    err = io.StringIO()
    second, _ = virtual.run(store, path, settings(concurrency=1), say=err.write)
    assert "retrying 10 requests whose last failure time may cure" in err.getvalue()
    assert second.exit_code == 1 and second.counts == {**second.counts, "failed": 3, "succeeded": 7}
    err = io.StringIO()
    third, _ = virtual.run(store, path, settings(), say=err.write)
    assert "retrying" not in err.getvalue() and third.counts["failed"] == 3  # permanent: left as they are
    fourth, _ = virtual.run(store, path, settings(retry_failed=True))
    assert fourth.exit_code == 0 and fourth.counts["succeeded"] == 10
    one_result_each(store, 10)


def test_a_request_larger_than_the_token_limit_fails_at_once_naming_its_line(tmp_path: Path, limits: Limits) -> None:
    virtual = Virtual(limits, latency_scale=0, tpm=1_000)
    store = virtual.store(tmp_path)
    path = write_jsonl(tmp_path / "job.jsonl", [chat_line("small", max_tokens=20), chat_line("huge", max_tokens=5_000)])
    outcome, _ = virtual.run(store, path, settings(tpm=1_000))
    assert outcome.exit_code == 1 and outcome.counts["failed"] == 1 and outcome.counts["succeeded"] == 1
    (reason,) = [r for c, r in store.results.failures("job") if c == "huge"]
    assert "line 2" in reason and "1,000 tokens per minute" in reason
    assert virtual.stats()["requests"] == 1  # never sent


# -- stops that leave the run resumable -------------------------------------------------------------------------


def test_quota_stop_keeps_state_and_resume_finishes(tmp_path: Path, limits: Limits) -> None:
    poor = Virtual(limits, latency_scale=0, quota_usd="0.0002")
    store = poor.store(tmp_path)
    path = job(tmp_path, 50, max_tokens=100)
    outcome, _ = poor.run(store, path, settings())
    assert isinstance(outcome.stopped, QuotaExhausted) and outcome.exit_code == 3
    done = outcome.counts["succeeded"]
    assert 0 < done < 50 and outcome.counts["pending"] == 50 - done and outcome.counts["failed"] == 0
    rich = Virtual(limits, poor.clock, latency_scale=0)  # another server, on the same clock
    again, _ = rich.run(store, path, settings())
    assert again.exit_code == 0 and again.counts["succeeded"] == 50
    assert rich.stats()["answered"] == 50 - done  # nothing answered twice
    one_result_each(store, 50)


def test_an_api_that_gives_no_answer_stops_the_run_with_every_request_still_to_send(
    tmp_path: Path, limits: Limits
) -> None:
    virtual = Virtual(limits, latency_scale=0)
    store = virtual.store(tmp_path)
    virtual.api.sim.script("reset", times=10_000)  # every connection dropped
    path = job(tmp_path, 10)
    outcome, seconds = virtual.run(store, path, settings(unreachable_seconds=5, retry=RetryPolicy()))
    assert outcome.exit_code == 3 and isinstance(outcome.stopped, Unreachable), outcome.stopped
    assert "gave no answer for 5s" in str(outcome.stopped) and 5 <= seconds < 8, seconds
    assert outcome.counts["pending"] == 10  # no request burned its attempts on the outage
    virtual.api.sim.scripted.clear()
    again, _ = virtual.run(store, path, settings())
    assert again.exit_code == 0 and again.counts["succeeded"] == 10


def test_a_deadline_stops_resumably_and_the_next_run_finishes(tmp_path: Path, limits: Limits) -> None:
    virtual = Virtual(limits, latency_scale=0, rpm=120, window=1.0)  # 2 a second
    store = virtual.store(tmp_path)
    path = job(tmp_path, 30)
    outcome, seconds = virtual.run(store, path, settings(rpm=120, deadline=virtual.clock.now + 5))
    assert isinstance(outcome.stopped, DeadlineReached) and outcome.exit_code == 3
    assert 5 <= outcome.counts["succeeded"] <= 15 and 5 <= seconds < 6
    assert outcome.counts["pending"] + outcome.counts["succeeded"] == 30
    again, _ = virtual.run(store, path, settings(rpm=120))
    assert again.exit_code == 0 and again.counts["succeeded"] == 30
    assert virtual.stats()["answered"] == 30


def test_requests_per_day_are_counted_across_restarts(tmp_path: Path, limits: Limits) -> None:
    virtual = Virtual(limits, latency_scale=0)
    store = virtual.store(tmp_path)
    path = job(tmp_path, 10)
    first, _ = virtual.run(store, path, settings(rpd=6))
    assert first.exit_code == 3 and first.counts["succeeded"] == 6
    assert "daily limit of 6 requests" in str(first.stopped)
    again, _ = virtual.run(store, path, settings(rpd=6))
    assert again.exit_code == 3 and again.counts["succeeded"] == 6  # the day's count survived the restart
    assert virtual.stats()["requests"] == 6
    raised, _ = virtual.run(store, path, settings(rpd=20))
    assert raised.exit_code == 0 and raised.counts["succeeded"] == 10


def test_max_spend_is_a_hard_cap_and_a_higher_one_resumes(tmp_path: Path, limits: Limits) -> None:
    virtual = Virtual(limits, latency_scale=0, tier="tier-5")
    store = virtual.store(tmp_path)
    path, cap = job(tmp_path, 60, max_tokens=100), 10**12 // 1_000  # $0.001: room for ~6 worst cases at once
    outcome, _ = virtual.run(store, path, settings(tier="tier-5", max_spend=cap, concurrency=8))
    assert outcome.exit_code == 3 and 0 < outcome.counts["succeeded"] < 60
    assert "--max-spend" in str(outcome.stopped)
    assert store.results.total_cost("job") <= cap and virtual.api.sim.stats.spend <= cap  # the bill too
    again, _ = virtual.run(store, path, settings(tier="tier-5", max_spend=10 * cap))
    assert again.exit_code == 0 and again.counts["succeeded"] == 60


@pytest.mark.parametrize("seed", range(6))
def test_max_spend_is_never_passed_whatever_the_concurrency_and_retries(
    tmp_path: Path, limits: Limits, seed: int
) -> None:
    """Random concurrency, output allowances, faults (so retries) and caps: the recorded spend and the server's
    bill stay under the cap, the stop is resumable, and a higher cap finishes the job with nothing paid twice."""
    rng = random.Random(seed)
    virtual = Virtual(limits, tier="tier-5", latency_scale=rng.choice([0.0, 0.5]),
                      fault_rate=rng.choice([0.0, 0.3]), hang_seconds=0.2, seed=seed)  # fmt: skip
    lines = [chat_line(f"req-{i:04d}", f"Question number {i}?", max_tokens=rng.randint(20, 400)) for i in range(40)]
    path = write_jsonl(tmp_path / "job.jsonl", lines)
    cap = rng.randint(2, 15) * 10**12 // 10_000  # $0.0002 to $0.0015: a few worst cases
    concurrency = rng.choice([1, 4, 16, 64])
    store = virtual.store(tmp_path, "cap.db")
    first, _ = virtual.run(store, path, settings(tier="tier-5", max_spend=cap, concurrency=concurrency,
                                                 request_timeout=2))  # fmt: skip
    assert store.results.total_cost("job") == virtual.api.sim.stats.spend <= cap, (concurrency, cap)
    assert first.exit_code == 3 and "--max-spend" in str(first.stopped)
    again, _ = virtual.run(store, path, settings(tier="tier-5", max_spend=100 * cap, request_timeout=2))
    assert again.exit_code == 0 and again.counts["succeeded"] == 40
    assert store.results.total_cost("job") == virtual.api.sim.stats.spend
    assert virtual.stats()["answered"] == 40  # none paid twice


def test_an_interrupt_lets_what_is_in_flight_finish_and_hands_the_rest_back(tmp_path: Path, limits: Limits) -> None:
    """The executor alone, interrupted 5 s in at 10 requests a second, answers taking 2 s: what is in flight is
    answered and recorded, the rest is pending again, and nothing is left in flight."""
    virtual = Virtual(limits, rpm=600, tpm=1_000_000, first_token_seconds=2.0, tokens_per_second=0)
    store = virtual.store(tmp_path)
    path = job(tmp_path, 200)
    owner = store.runs.acquire("job", str(path))
    ingest(store, "job", str(path), limits, None)
    executor = SyncExecutor(store, "job", owner, limits, settings(rpm=600, tpm=1_000_000), NOWHERE, None,
                            virtual.clock, virtual.clock, virtual.clock.sleep, transport=virtual.api)  # fmt: skip

    async def main() -> RunnerError | None:
        async with executor, anyio.create_task_group() as tg:

            async def interrupt() -> None:
                await anyio.sleep(5.0)
                executor.interrupt("SIGTERM")

            tg.start_soon(interrupt)
            return await executor.execute()

    stopped = virtual.clock.timing(virtual_loop=True).run(main)
    store.runs.release("job", owner, "Interrupted")
    assert isinstance(stopped, Interrupted) and "re-run the same command to resume" in str(stopped)
    counts = store.requests.counts("job")
    assert counts["in_flight"] == 0 and executor.in_flight.count == 0
    assert 40 <= counts["succeeded"] <= 60 and counts["pending"] == 200 - counts["succeeded"]
    assert virtual.stats()["answered"] == counts["succeeded"]  # every answer that came was recorded


# -- the executor's parts, alone --------------------------------------------------------------------------------


def test_the_in_flight_bound_follows_littles_law_and_never_passes_what_the_user_set() -> None:
    bound = InFlight(concurrency=None, ceiling=10_000)
    assert bound.bound(rate=10.0, now=0.0) == 16  # nothing measured yet: slack alone
    bound.sent(1, now=0.0, expected_seconds=2.0)
    assert bound.bound(rate=10.0, now=0.0) == math.ceil(10 * 0.2 * 1.5) + 16  # the expectation, averaged in
    for i in range(MEASURED):
        bound.answered(seconds=4.0, now=float(i))
    assert bound.latency == 4.0
    assert bound.bound(rate=10.0, now=40.0) >= 10 * 4 * 1.5  # rate x latency x 1.5 (the oldest waited longer)
    assert InFlight(concurrency=8, ceiling=10_000).bound(rate=1_000.0, now=0.0) == 8
    few = InFlight(concurrency=None, ceiling=100)  # what the process may hold open
    few.sent(1, now=0.0, expected_seconds=10.0)
    assert few.bound(rate=1_000.0, now=50.0) == 100


def test_the_in_flight_bound_opens_connections_at_a_bounded_pace() -> None:
    bound = InFlight(concurrency=None, ceiling=1 << 20)
    bound.sent(1, now=0.0, expected_seconds=60.0)
    assert bound.bound(rate=10_000.0, now=0.0) == RAMP_START
    assert bound.bound(rate=10_000.0, now=2.0) == RAMP_START + 2 * RAMP_PER_SECOND
    bound.finished(1)
    assert bound.count == 0


def test_the_in_flight_bound_follows_what_answers_deliver_once_measured() -> None:
    """Answers that come 20 a second after 0.1 s each: the client is the bottleneck, not the gate's rate."""
    bound = InFlight(concurrency=None, ceiling=1 << 20)
    for i in range(100):
        bound.sent(i, now=i / 20, expected_seconds=0.1)
        bound.answered(seconds=0.1, now=i / 20 + 0.1)
        bound.finished(i)
    assert bound.bound(rate=10_000.0, now=5.1) == RAMP_START  # delivered: 2 x 20 x 0.1 x 1.5, at least the start


def test_the_days_count_adds_stored_unsaved_and_other_databases(tmp_path: Path) -> None:
    store = Store(tmp_path / "a.db")
    store.results.count_daily("gpt-4.1-mini", "2026-12-05", 5, 500)
    daily = DailyCount(store, shared=None)
    daily.sent("gpt-4.1-mini", "2026-12-05", 100, tell=True)
    assert daily.used("gpt-4.1-mini", "2026-12-05") == (6, 0)
    assert daily.used("gpt-4.1-mini", "2026-12-06") == (0, 0)
    daily.flush()
    assert store.results.daily("gpt-4.1-mini", "2026-12-05") == (6, 600)
    assert daily.used("gpt-4.1-mini", "2026-12-05") == (6, 0)  # read again, not counted twice
    assert utc_day(1_800_000_000.0) == "2027-01-15"


def reply(status: int, body: bytes, **headers: str) -> Reply:
    return Reply(status, CIMultiDictProxy(CIMultiDict(headers)), body, 0.5)


def test_a_reply_is_an_answer_only_when_it_is_a_200_with_a_json_object() -> None:
    answer = classify(reply(200, b'{"id": "x", "usage": {}}'), reserved_tokens=100)
    assert isinstance(answer, Answer) and answer.data["id"] == "x"
    for body in (b"<html>502 Bad Gateway</html>", b"[1, 2]", b'{"cut'):
        refusal = classify(reply(200, body), reserved_tokens=100)
        assert isinstance(refusal, Refusal) and refusal.failure.kind == "connection"
        assert "not a JSON object" in refusal.message


def test_an_error_reply_is_read_into_what_the_retry_table_decides_on() -> None:
    body = json.dumps({"error": {"message": "Rate limit reached. Please try again in 1.5s.", "type": "tokens",
                                 "code": "rate_limit_exceeded"}}).encode()  # fmt: skip
    refusal = classify(reply(429, body, **{"x-ratelimit-limit-tokens": "90000"}), reserved_tokens=321)
    assert isinstance(refusal, Refusal)
    failure = refusal.failure
    assert (failure.status, failure.type, failure.code) == (429, "tokens", "rate_limit_exceeded")
    assert failure.retry_after == 1.5 and failure.reserved_tokens == 321 and failure.server_tpm == 90_000
    plain = classify(reply(502, b"Bad gateway"), reserved_tokens=0)
    assert isinstance(plain, Refusal) and plain.message == "Bad gateway" and plain.failure.type is None


def test_a_decision_becomes_the_store_s_move_or_a_stop() -> None:
    request = Claimed(1, "a", 1, "/v1/chat/completions", "gpt-4.1-mini", "{}", 10, 20, 1, 1)
    refusal = Refusal(Failure(status=500, type="server_error"), "boom")
    retry = outcome_of(request, refusal, Decision(Action.RETRY, delay=2.0), None, now=100.0)
    assert retry is not None and retry.move is Move.RETRY and retry.not_before == 102.0
    assert retry.error_message == "500 server_error: boom"
    failed = outcome_of(request, refusal, Decision(Action.FAIL, exhausted=True), None, now=100.0)
    assert failed is not None and failed.move is Move.FAIL and failed.retryable
    quota = Decision(Action.STOP_QUOTA)
    assert outcome_of(request, refusal, quota, None, now=100.0) is None
    assert isinstance(stop_of(refusal, quota), QuotaExhausted)
    assert "refused the key (401)" in str(stop_of(Refusal(Failure(status=401), "no"), Decision(Action.STOP_AUTH)))
    assert service_tier('{"service_tier": "flex"}') == "flex" and service_tier("{}") == "standard"
