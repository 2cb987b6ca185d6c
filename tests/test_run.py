"""Whole runs against the simulator on loopback: pacing, storms, faults, quota, kill -9, bad input, exit codes."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from runner.commands import export_results, run_job
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
    assert store.results.total_cost("job") == sim.call(lambda: sim.sim.stats.spend)


def signal_mid_run(tmp_path: Path, sim: Any, sig: int, n: int = 60) -> tuple[Path, Path, dict[str, str], int, str]:
    """Start ``runner run`` on an n-request job, send ``sig`` once 10 results are stored; returns the job, the
    database, the environment, the exit code and stderr."""
    path, db = job(tmp_path, n), tmp_path / "signal.db"
    env = {**os.environ, "OPENAI_API_KEY": "sk-signal-test", "RUNNER_DB": str(db)}
    args = [sys.executable, "-m", "runner", "run", str(path), "--base-url", sim.base_url, "--rpm", "1200"]
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
    sim = start_sim(latency_scale=0.3, rpm=1_200, window=1.0)
    path, db, env, code, _ = signal_mid_run(tmp_path, sim, signal.SIGKILL)
    assert code == -signal.SIGKILL
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM requests WHERE state='in_flight'").fetchone()[0] > 0
    resumed = runner_cli("run", str(path), "--base-url", sim.base_url, "--rpm", "1200", env=env)
    assert resumed.returncode == 0, resumed.stderr
    store = Store(db)
    one_result_each(store, "job", 60)
    assert store.requests.counts("job")["succeeded"] == 60


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


def test_a_days_requests_are_counted_across_the_databases_of_one_key(
    tmp_path: Path, limits: Limits, start_sim: Any
) -> None:
    """Two jobs on one key, each with its own database, one after the other: the second counts the first's
    requests against the daily limit through the gate file (``--gate none``: only its own database's)."""
    sim = start_sim(latency_scale=0, tier="tier-5")  # a few requests take no time to pace
    credentials = Credentials(sim.base_url, "k")
    first = run_job(
        Store(tmp_path / "a.db"), str(job(tmp_path, 10)), limits, settings(rpd=15, tier="tier-5"), credentials
    )
    assert first.exit_code == 0 and first.counts["succeeded"] == 10
    second = run_job(
        Store(tmp_path / "b.db"), str(job(tmp_path, 10)), limits, settings(rpd=15, tier="tier-5"), credentials
    )
    assert second.exit_code == 3 and second.counts["succeeded"] == 5
    assert "daily limit of 15 requests for gpt-4.1-mini reached (10 of them by other runners on the key)" in str(
        second.stopped
    )
    alone = run_job(
        Store(tmp_path / "c.db"),
        str(job(tmp_path, 10)),
        limits,
        settings(rpd=15, gate="none", tier="tier-5"),
        credentials,
    )
    assert alone.exit_code == 0 and alone.counts["succeeded"] == 10
    assert sim.call(lambda: sim.sim.stats.requests) == 25


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_lets_what_is_in_flight_finish_and_the_resume_pays_nothing_twice(
    tmp_path: Path, start_sim: Any, sig: int
) -> None:
    sim = start_sim(latency_scale=0.2, rpm=1_200, window=1.0)
    path, db, env, code, err = signal_mid_run(tmp_path, sim, sig)
    assert code == 3, err
    assert "re-run the same command to resume" in err and "Traceback" not in err
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM requests WHERE state='in_flight'").fetchone()[0] == 0
        assert conn.execute("SELECT owner FROM runs").fetchone()[0] is None  # released, not left locked
    resumed = runner_cli("run", str(path), "--base-url", sim.base_url, "--rpm", "1200", env=env)
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
