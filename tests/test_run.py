"""Whole runs against the simulator on loopback: pacing, storms, faults, quota, kill -9, bad input, exit codes."""

from __future__ import annotations

import io
import json
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from runner.commands import export_results, run_job
from runner.errors import QuotaExhausted, Unreachable
from runner.limits import Limits
from runner.retry import RetryPolicy
from runner.settings import RunSettings
from runner.store import Store
from runner.transport import Credentials

from .conftest import ROOT, chat_line, runner_cli, write_jsonl
from .processes import poll_until

FAST_RETRY = RetryPolicy(max_attempts=8, max_rate_limited=60, base=0.05, cap=0.5)


def settings(**kw: Any) -> RunSettings:
    kw.setdefault("retry", FAST_RETRY)
    kw.setdefault("seed", 1)
    return RunSettings(**kw)


def job(tmp_path: Path, n: int, **line: Any) -> Path:
    return write_jsonl(
        tmp_path / "job.jsonl", [chat_line(f"req-{i:04d}", f"Question number {i}?", **line) for i in range(n)]
    )


def one_result_each(store: Store, run: str, n: int) -> list[dict[str, Any]]:
    lines = [json.loads(x) for x in export_results(store, run)]
    assert sorted(x["custom_id"] for x in lines) == [f"req-{i:04d}" for i in range(n)]
    return lines


@pytest.mark.slow
def test_steady_pacing_gets_no_429_under_a_one_second_window(
    tmp_path: Path, store: Store, limits: Limits, start_sim: Any
) -> None:
    sim = start_sim(rpm=1_200, tpm=60_000, window=1.0, latency_scale=0.1)  # 20 req/s, 1,000 tokens/s
    path = job(tmp_path, 90, max_tokens=40)
    started = time.monotonic()
    outcome = run_job(store, str(path), limits, settings(rpm=1_200, tpm=60_000), Credentials(sim.base_url, "k"))
    elapsed = time.monotonic() - started
    stats = sim.call(sim.sim.stats.as_dict)
    assert outcome.exit_code == 0 and outcome.counts["succeeded"] == 90
    assert stats["rate_limited"] == 0, stats
    assert stats["requests"] == 90  # not one request wasted
    used = stats["prompt_tokens"] + stats["output_tokens"]
    assert used <= 1_000 * (elapsed + 1.0)  # within the limit: the rate plus one window's bucket
    assert used >= 0.6 * 1_000 * (elapsed - 1.0)  # and not crawling
    one_result_each(store, "job", 90)


@pytest.mark.slow
def test_a_429_storm_pauses_everyone_and_every_request_ends_answered(
    tmp_path: Path, store: Store, limits: Limits, start_sim: Any
) -> None:
    sim = start_sim(latency_scale=0)
    sim.call(lambda: sim.sim.script("429", times=25, retry_after=0.3))
    outcome = run_job(store, str(job(tmp_path, 40)), limits, settings(), Credentials(sim.base_url, "k"))
    assert outcome.exit_code == 0 and outcome.counts["succeeded"] == 40
    one_result_each(store, "job", 40)
    stats = sim.call(sim.sim.stats.as_dict)
    assert stats["requests"] <= 40 + 25 + 10  # paused as a whole, not a retry storm


@pytest.mark.slow
def test_random_faults_are_retried_to_completion(tmp_path: Path, store: Store, limits: Limits, start_sim: Any) -> None:
    sim = start_sim(latency_scale=0, fault_rate=0.25, seed=4, hang_seconds=1.5)
    outcome = run_job(
        store, str(job(tmp_path, 60)), limits, settings(request_timeout=0.5), Credentials(sim.base_url, "k")
    )
    stats = sim.call(sim.sim.stats.as_dict)
    assert {"reset", "timeout", "500:server_error"} <= set(stats["errors"])
    assert outcome.exit_code == 0 and outcome.counts["succeeded"] == 60
    one_result_each(store, "job", 60)


@pytest.mark.slow
def test_quota_stop_keeps_state_and_resume_finishes(
    tmp_path: Path, store: Store, limits: Limits, start_sim: Any
) -> None:
    poor = start_sim(latency_scale=0, quota_usd="0.0002")
    path = job(tmp_path, 50, max_tokens=100)
    outcome = run_job(store, str(path), limits, settings(), Credentials(poor.base_url, "k"))
    assert isinstance(outcome.stopped, QuotaExhausted) and outcome.exit_code == 3
    done = outcome.counts["succeeded"]
    assert 0 < done < 50 and outcome.counts["pending"] == 50 - done and outcome.counts["failed"] == 0
    rich = start_sim(latency_scale=0)
    again = run_job(store, str(path), limits, settings(), Credentials(rich.base_url, "k"))
    assert again.exit_code == 0 and again.counts["succeeded"] == 50
    assert rich.call(lambda: rich.sim.stats.answered) == 50 - done  # nothing answered twice
    one_result_each(store, "job", 50)
    assert store.conn.execute("SELECT count(*) FROM spend").fetchone()[0] == 50


def test_request_larger_than_tpm_fails_fast_with_reason(
    tmp_path: Path, store: Store, limits: Limits, start_sim: Any
) -> None:
    sim = start_sim(latency_scale=0, tpm=1_000)
    path = write_jsonl(tmp_path / "job.jsonl", [chat_line("small", max_tokens=20), chat_line("huge", max_tokens=5_000)])
    outcome = run_job(store, str(path), limits, settings(tpm=1_000), Credentials(sim.base_url, "k"))
    assert outcome.exit_code == 1 and outcome.counts["failed"] == 1 and outcome.counts["succeeded"] == 1
    (reason,) = [r for c, r in store.failures("job") if c == "huge"]
    assert "line 2" in reason and "1,000 tokens per minute" in reason
    assert sim.call(lambda: sim.sim.stats.requests) == 1  # never sent


def test_max_spend_is_a_hard_cap_and_a_higher_one_resumes(
    tmp_path: Path, store: Store, limits: Limits, start_sim: Any
) -> None:
    sim = start_sim(latency_scale=0, tier="tier-5")
    path, cap = job(tmp_path, 60, max_tokens=100), 10**12 // 1_000  # $0.001: room for ~6 worst cases at once
    hard = settings(tier="tier-5", max_spend=cap, concurrency=8)
    outcome = run_job(store, str(path), limits, hard, Credentials(sim.base_url, "k"))
    assert outcome.exit_code == 3 and 0 < outcome.counts["succeeded"] < 60
    assert "--max-spend" in str(outcome.stopped)
    assert store.total_cost("job") <= cap and sim.call(lambda: sim.sim.stats.spend) <= cap  # the bill too
    again = run_job(
        store, str(path), limits, settings(tier="tier-5", max_spend=10 * cap), Credentials(sim.base_url, "k")
    )
    assert again.exit_code == 0 and again.counts["succeeded"] == 60


@pytest.mark.slow
def test_auto_mode_splits_between_sync_and_batch_and_status_shows_the_plan(tmp_path: Path, start_sim: Any) -> None:
    sim = start_sim(latency_scale=0, batch_seconds=1.0, rpm=600)
    path, db = job(tmp_path, 150), tmp_path / "auto.db"
    env = {**os.environ, "OPENAI_API_KEY": "sk-auto", "RUNNER_DB": str(db)}
    # 150 requests at 600 RPM take ~18 s sync: what the rate limit finishes in 12 s goes sync, the rest by batch
    ran = runner_cli("run", str(path), "--base-url", sim.base_url, "--mode", "auto", "--deadline", "12s",
                     "--rpm", "600", "--poll-every", "0.2", env=env)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    decided = re.search(r"auto: split: ([\d,]+) requests sync .*, ([\d,]+) by batch", ran.stderr)
    assert decided is not None, ran.stderr
    in_sync, in_batch = (int(g.replace(",", "")) for g in decided.groups())
    assert in_sync + in_batch == 150 and 40 < in_sync < 110
    status = json.loads(runner_cli("status", "--json", env=env).stdout)
    assert status["plan"]["mode"] == "split" and status["plan"]["batch_requests"] == in_batch
    assert "plan (--mode auto): split:" in runner_cli("status", env=env).stdout
    store = Store(db)
    one_result_each(store, "job", 150)
    tiers = dict(store.conn.execute("SELECT service_tier, count(*) FROM spend GROUP BY service_tier").fetchall())
    assert tiers == {"batch": in_batch, "standard": in_sync}  # the batch part billed at batch prices
    assert store.total_cost("job") == sim.call(lambda: sim.sim.stats.spend)


@pytest.mark.parametrize("seed", range(4))
def test_max_spend_is_never_passed_whatever_the_concurrency_and_retries(
    tmp_path: Path, limits: Limits, start_sim: Any, seed: int
) -> None:
    """Random concurrency, output allowances, faults (so retries) and caps: the recorded spend and the server's
    bill stay under the cap, the stop is resumable, and a higher cap finishes the job with nothing paid twice."""
    rng = random.Random(seed)
    sim = start_sim(tier="tier-5", latency_scale=0, fault_rate=rng.choice([0.0, 0.3]), hang_seconds=0.2, seed=seed)
    lines = [chat_line(f"req-{i:04d}", f"Question number {i}?", max_tokens=rng.randint(20, 400)) for i in range(40)]
    path = write_jsonl(tmp_path / "job.jsonl", lines)
    cap = rng.randint(2, 15) * 10**12 // 10_000  # $0.0002 to $0.0015: a few worst cases
    concurrency = rng.choice([1, 4, 16, 64])
    store = Store(tmp_path / "cap.db")
    capped = settings(tier="tier-5", max_spend=cap, concurrency=concurrency, request_timeout=2)
    first = run_job(store, str(path), limits, capped, Credentials(sim.base_url, "k"))
    bill = sim.call(lambda: sim.sim.stats.spend)
    assert store.total_cost("job") == bill <= cap, (concurrency, cap)
    assert first.exit_code == 3 and "--max-spend" in str(first.stopped)
    raised = settings(tier="tier-5", max_spend=100 * cap, request_timeout=2)
    again = run_job(store, str(path), limits, raised, Credentials(sim.base_url, "k"))
    assert again.exit_code == 0 and again.counts["succeeded"] == 40
    assert store.total_cost("job") == sim.call(lambda: sim.sim.stats.spend)
    assert sim.call(lambda: sim.sim.stats.answered) == 40  # none paid twice


def signal_mid_run(tmp_path: Path, sim: Any, sig: int, n: int = 60) -> tuple[Path, Path, dict[str, str], int, str]:
    """Start ``runner run`` on an n-request job, send ``sig`` once 10 results are stored; returns the job, the
    database, the environment, the exit code and stderr."""
    path, db = job(tmp_path, n), tmp_path / "signal.db"
    env = {**os.environ, "OPENAI_API_KEY": "sk-signal-test", "RUNNER_DB": str(db)}
    args = [sys.executable, "-m", "runner", "run", str(path), "--base-url", sim.base_url, "--rpm", "600"]
    child = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _results(db) < 10:
        time.sleep(0.1)
    assert 10 <= _results(db) < n, "the run should be stopped half way"
    child.send_signal(sig)
    _, err = child.communicate(timeout=30)
    return path, db, env, child.returncode, err


def _results(db: Path) -> int:
    try:
        with sqlite3.connect(db) as conn:
            return int(conn.execute("SELECT count(*) FROM results").fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return 0


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_gives_exactly_one_result_each(tmp_path: Path, start_sim: Any) -> None:
    sim = start_sim(latency_scale=0.3, rpm=600, window=1.0)
    path, db, env, code, _ = signal_mid_run(tmp_path, sim, signal.SIGKILL)
    assert code == -signal.SIGKILL
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM requests WHERE state='in_flight'").fetchone()[0] > 0
    resumed = runner_cli("run", str(path), "--base-url", sim.base_url, "--rpm", "600", env=env)
    assert resumed.returncode == 0, resumed.stderr
    store = Store(db)
    one_result_each(store, "job", 60)
    assert store.counts("job")["succeeded"] == 60


@pytest.mark.slow
def test_secret_is_never_written(tmp_path: Path, start_sim: Any) -> None:
    secret = "sk-proj-THIS-IS-SECRET-123456"
    sim = start_sim(latency_scale=0, api_key=secret)
    db, out = tmp_path / "s.db", tmp_path / "results.jsonl"
    env = {**os.environ, "OPENAI_API_KEY": secret, "RUNNER_DB": str(db)}
    ran = runner_cli("run", str(job(tmp_path, 5)), "--base-url", sim.base_url, env=env)
    assert ran.returncode == 0, ran.stderr
    runner_cli("results", "-o", str(out), env=env)
    for file in tmp_path.iterdir():
        assert secret.encode() not in file.read_bytes(), file
    assert secret not in ran.stderr + ran.stdout


@pytest.mark.slow
def test_an_api_that_cannot_be_reached_stops_the_run_with_every_request_still_to_send(
    tmp_path: Path, store: Store, limits: Limits, start_sim: Any
) -> None:
    nobody = socket.socket()
    nobody.bind(("127.0.0.1", 0))  # a port that refuses every connection
    url = f"http://127.0.0.1:{nobody.getsockname()[1]}/v1"
    path = job(tmp_path, 10)
    outcome = run_job(store, str(path), limits, settings(unreachable_seconds=0.3), Credentials(url, "k"))
    nobody.close()
    assert outcome.exit_code == 3 and isinstance(outcome.stopped, Unreachable), outcome.stopped
    assert outcome.counts["pending"] == 10  # no request burned its attempts on the outage
    sim = start_sim(latency_scale=0)
    again = run_job(store, str(path), limits, settings(), Credentials(sim.base_url, "k"))
    assert again.exit_code == 0 and again.counts["succeeded"] == 10


@pytest.mark.slow
def test_requests_failed_by_transient_errors_are_retried_by_the_next_run_permanent_ones_on_request(
    tmp_path: Path, store: Store, limits: Limits, start_sim: Any
) -> None:
    sim = start_sim(latency_scale=0)
    path = job(tmp_path, 10)
    sim.call(lambda: sim.sim.script("503", times=20))  # two attempts each: every request fails, transiently
    two = settings(retry=RetryPolicy(max_attempts=2, max_rate_limited=60, base=0.01, cap=0.05))
    first = run_job(store, str(path), limits, two, Credentials(sim.base_url, "k"))
    assert first.exit_code == 1 and first.counts["failed"] == 10
    sim.call(lambda: sim.sim.script("400", times=3))  # three refused as written: no retry can cure that
    err = io.StringIO()
    second = run_job(store, str(path), limits, settings(concurrency=1), Credentials(sim.base_url, "k"), say=err.write)
    assert "retrying 10 requests whose last failure time may cure" in err.getvalue()
    assert second.exit_code == 1 and second.counts == {**second.counts, "failed": 3, "succeeded": 7}
    err = io.StringIO()
    third = run_job(store, str(path), limits, settings(), Credentials(sim.base_url, "k"), say=err.write)
    assert "retrying" not in err.getvalue() and third.counts["failed"] == 3  # permanent: left as they are
    fourth = run_job(store, str(path), limits, settings(retry_failed=True), Credentials(sim.base_url, "k"))
    assert fourth.exit_code == 0 and fourth.counts["succeeded"] == 10
    one_result_each(store, "job", 10)


@pytest.mark.slow
def test_refused_key_stops_with_state_kept(tmp_path: Path, start_sim: Any) -> None:
    sim = start_sim(latency_scale=0, api_key="sk-right")
    env = {**os.environ, "OPENAI_API_KEY": "sk-wrong", "RUNNER_DB": str(tmp_path / "k.db")}
    ran = runner_cli("run", str(job(tmp_path, 5)), "--base-url", sim.base_url, env=env)
    assert ran.returncode == 2 and "refused the key" in ran.stderr
    status = json.loads(runner_cli("status", "--json", env=env).stdout)
    assert status["states"]["pending"] == 5


@pytest.mark.parametrize(
    ("args", "content", "message"),
    [
        (
            [],
            '{"custom_id": "a", "body": {"model": "gpt-4.1-mini", "messages": []}}\n{oops\n',
            "job.jsonl:2: not valid JSON",
        ),
        (
            [],
            '{"custom_id": "a", "body": {"model": "gpt-9", "messages": []}}\n',
            "job.jsonl:1: request 'a': unknown model",
        ),
        ([], '{"body": {"model": "gpt-4.1-mini", "messages": []}}\n', "job.jsonl:1: missing custom_id"),
        (
            ["--tier", "tier-9"],
            '{"custom_id": "a", "body": {"model": "gpt-4.1-mini", "messages": []}}\n',
            "unknown tier 'tier-9'",
        ),
        (["--deadline", "soon"], "", "not a duration"),
    ],
)
def test_bad_input_exits_2_with_the_line(tmp_path: Path, args: list[str], content: str, message: str) -> None:
    path = tmp_path / "job.jsonl"
    path.write_text(content)
    env = {**os.environ, "OPENAI_API_KEY": "k", "RUNNER_DB": str(tmp_path / "b.db")}
    ran = runner_cli("run", str(path), "--base-url", "http://127.0.0.1:9", *args, env=env)
    assert ran.returncode == 2
    assert message in ran.stderr


def test_broken_tier_limits_exits_2_naming_the_key(tmp_path: Path) -> None:
    data = json.loads((ROOT / "tier_limits.json").read_text())
    data["models"]["gpt-4.1-mini"]["limits"]["tier-1"]["rpm"] = -5
    broken = tmp_path / "tier_limits.json"
    broken.write_text(json.dumps(data))
    path = write_jsonl(tmp_path / "job.jsonl", [chat_line("a")])
    env = {**os.environ, "OPENAI_API_KEY": "k", "RUNNER_DB": str(tmp_path / "b.db")}
    ran = runner_cli("run", str(path), "--limits", str(broken), "--base-url", "http://127.0.0.1:9", env=env)
    assert ran.returncode == 2
    assert "models.gpt-4.1-mini.limits.tier-1.rpm: expected a positive integer, got -5" in ran.stderr


def test_requests_per_day_are_counted_across_restarts(
    tmp_path: Path, store: Store, limits: Limits, start_sim: Any
) -> None:
    sim = start_sim(latency_scale=0)
    path = job(tmp_path, 10)
    first = run_job(store, str(path), limits, settings(rpd=6), Credentials(sim.base_url, "k"))
    assert first.exit_code == 3 and first.counts["succeeded"] == 6
    assert "daily limit of 6 requests" in str(first.stopped)
    again = run_job(store, str(path), limits, settings(rpd=6), Credentials(sim.base_url, "k"))
    assert again.exit_code == 3 and again.counts["succeeded"] == 6  # the day's count survived the restart
    assert sim.call(lambda: sim.sim.stats.requests) == 6
    raised = run_job(store, str(path), limits, settings(rpd=20), Credentials(sim.base_url, "k"))
    assert raised.exit_code == 0 and raised.counts["succeeded"] == 10


def test_a_days_requests_are_counted_across_the_databases_of_one_key(
    tmp_path: Path, limits: Limits, start_sim: Any
) -> None:
    """Two jobs on one key, each with its own database, one after the other: the second counts the first's
    requests against the daily limit through the gate file (``--gate none``: only its own database's)."""
    sim = start_sim(latency_scale=0)
    credentials = Credentials(sim.base_url, "k")
    first = run_job(Store(tmp_path / "a.db"), str(job(tmp_path, 10)), limits, settings(rpd=15), credentials)
    assert first.exit_code == 0 and first.counts["succeeded"] == 10
    second = run_job(Store(tmp_path / "b.db"), str(job(tmp_path, 10)), limits, settings(rpd=15), credentials)
    assert second.exit_code == 3 and second.counts["succeeded"] == 5
    assert "daily limit of 15 requests for gpt-4.1-mini reached (10 of them by other runners on the key)" in str(
        second.stopped
    )
    alone = run_job(
        Store(tmp_path / "c.db"), str(job(tmp_path, 10)), limits, settings(rpd=15, gate="none"), credentials
    )
    assert alone.exit_code == 0 and alone.counts["succeeded"] == 10
    assert sim.call(lambda: sim.sim.stats.requests) == 25


@pytest.mark.slow
def test_deadline_stops_resumably(tmp_path: Path, store: Store, limits: Limits, start_sim: Any) -> None:
    sim = start_sim(latency_scale=0, rpm=120, window=1.0)  # 2 per second
    path = job(tmp_path, 30)
    outcome = run_job(
        store, str(path), limits, settings(rpm=120, deadline=time.time() + 1.5), Credentials(sim.base_url, "k")
    )
    assert outcome.exit_code == 3 and 0 < outcome.counts["succeeded"] < 30
    assert outcome.counts["pending"] + outcome.counts["succeeded"] == 30


def test_a_200_that_is_not_json_is_retried_not_a_crash(
    tmp_path: Path, store: Store, limits: Limits, start_sim: Any
) -> None:
    sim = start_sim(latency_scale=0)
    sim.call(lambda: sim.sim.script("garbage", times=3))
    outcome = run_job(store, str(job(tmp_path, 5)), limits, settings(), Credentials(sim.base_url, "k"))
    assert outcome.exit_code == 0 and outcome.counts["succeeded"] == 5
    one_result_each(store, "job", 5)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_lets_what_is_in_flight_finish_and_the_resume_pays_nothing_twice(
    tmp_path: Path, start_sim: Any, sig: int
) -> None:
    sim = start_sim(latency_scale=0.2, rpm=600, window=1.0)
    path, db, env, code, err = signal_mid_run(tmp_path, sim, sig)
    assert code == 3, err
    assert "re-run the same command to resume" in err and "Traceback" not in err
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM requests WHERE state='in_flight'").fetchone()[0] == 0
        assert conn.execute("SELECT owner FROM runs").fetchone()[0] is None  # released, not left locked
    resumed = runner_cli("run", str(path), "--base-url", sim.base_url, "--rpm", "600", env=env)
    assert resumed.returncode == 0, resumed.stderr
    one_result_each(Store(db), "job", 60)
    assert sim.call(lambda: sim.sim.stats.answered) == 60  # every answer paid once


@pytest.mark.slow
def test_a_second_signal_stops_at_once_still_resumable(tmp_path: Path, start_sim: Any) -> None:
    sim = start_sim(latency_scale=3.0, rpm=600, window=1.0)  # answers take seconds: the grace would be long
    path, db = job(tmp_path, 60), tmp_path / "twice.db"
    env = {**os.environ, "OPENAI_API_KEY": "sk-signal-test", "RUNNER_DB": str(db)}
    args = [sys.executable, "-m", "runner", "run", str(path), "--base-url", sim.base_url, "--rpm", "600",
            "--grace", "60"]  # fmt: skip
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        child = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)
    poll_until(lambda: sim.call(lambda: sim.sim.stats.in_flight) >= 5)
    child.send_signal(signal.SIGTERM)
    poll_until(lambda: "SIGTERM: stopping; finishing what is in flight" in log.read_text())
    child.send_signal(signal.SIGINT)
    child.wait(timeout=10)  # far sooner than the 60 s grace
    err = log.read_text()
    assert child.returncode == 3 and "SIGINT: stopping at once" in err, err
    assert "Traceback" not in err
    resumed = runner_cli("run", str(path), "--base-url", sim.base_url, "--rpm", "600", env=env)
    assert resumed.returncode == 0, resumed.stderr
    one_result_each(Store(db), "job", 60)


@pytest.mark.slow
def test_verbose_logs_one_line_per_event_without_a_terminal(tmp_path: Path, start_sim: Any) -> None:
    sim = start_sim(latency_scale=0)
    sim.call(lambda: sim.sim.script("503", times=1))
    env = {**os.environ, "OPENAI_API_KEY": "k", "RUNNER_DB": str(tmp_path / "v.db")}
    ran = runner_cli("run", str(job(tmp_path, 3)), "--base-url", sim.base_url, "-v", env=env)
    assert ran.returncode == 0, ran.stderr
    lines = ran.stderr.splitlines()
    assert sum(" -> 200 " in line for line in lines) == 3
    assert any(re.search(r"req-\d{4} retry in \d+\.\ds \(503 server_is_overloaded, 1/6\)", line) for line in lines)
    assert all(re.match(r"\d\d:\d\d:\d\d ", line) for line in lines if "->" in line or "retry in" in line)
