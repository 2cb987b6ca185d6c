"""Answers reused: a request whose endpoint and body were answered before in the database is answered from the
store at $0, in sync and batch mode, unless ``--fresh`` (``RunSettings(reuse=False)``) asks to send it again."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

from runner.commands import export_results, run_job
from runner.limits import Limits
from runner.money import fmt_usd
from runner.settings import BatchSettings, Lane, RunSettings
from runner.store import Store
from runner.transport import Credentials

from .conftest import chat_line, runner_cli, write_jsonl

FAST_BATCHES = BatchSettings(poll_min=0.05, poll_max=0.2)
TIER5 = RunSettings(tier="tier-5")  # the simulators below play Tier 5: a few requests take no time to pace


def _job(tmp_path: Path, name: str, questions: list[str]) -> Path:
    return write_jsonl(tmp_path / f"{name}.jsonl", [chat_line(f"q{i}", q) for i, q in enumerate(questions)])


def _sent(sim: Any) -> int:
    return int(sim.call(lambda: sim.sim.stats.requests))


def _bodies(store: Store, run: str) -> dict[str, Any]:
    return {(x := json.loads(line))["custom_id"]: x["response"]["body"] for line in export_results(store, run)}


def test_a_job_run_again_is_answered_from_the_store_at_no_cost(
    tmp_path: Path, store: Store, limits: Limits, start_sim: Any
) -> None:
    sim = start_sim(latency_scale=0, tier="tier-5")
    credentials = Credentials(sim.base_url, "k")
    questions = [f"What is {i} + {i}?" for i in range(12)]
    first = run_job(store, str(_job(tmp_path, "first", questions)), limits, TIER5, credentials)
    assert first.exit_code == 0 and _sent(sim) == 12
    paid = store.results.total_cost("first")

    said = io.StringIO()
    questions[3] = "What is three plus three?"  # one instruction changed: only it is sent
    again = run_job(store, str(_job(tmp_path, "again", questions)), limits, TIER5, credentials, say=said.write)
    assert again.exit_code == 0 and again.counts["succeeded"] == 12
    assert _sent(sim) == 13
    originals = store.conn.execute(
        "SELECT sum(cost) FROM spend s JOIN requests r ON r.id = s.request_id WHERE r.run='first' AND r.custom_id<>'q3'"
    ).fetchone()[0]
    assert f"reused 11 answers, saved {fmt_usd(originals)}" in said.getvalue()
    assert 0 < store.results.total_cost("again") < paid / 5
    assert _bodies(store, "again")["q0"] == _bodies(store, "first")["q0"]  # the very answer, its id included

    fresh = run_job(
        store, str(_job(tmp_path, "fresh", questions)), limits, RunSettings(tier="tier-5", reuse=False), credentials
    )
    assert fresh.exit_code == 0 and _sent(sim) == 25
    assert fresh.counts["succeeded"] == 12 and store.results.total_cost("fresh") > 0


def test_a_reused_answer_points_at_the_request_that_paid_for_it(
    tmp_path: Path, store: Store, limits: Limits, start_sim: Any
) -> None:
    sim = start_sim(latency_scale=0, tier="tier-5")
    credentials = Credentials(sim.base_url, "k")
    for run in ("one", "two", "three"):
        run_job(store, str(_job(tmp_path, run, ["Hello?"])), limits, TIER5, credentials)
    assert _sent(sim) == 1
    rows = store.conn.execute(
        "SELECT r.run, o.run, o.custom_id FROM results r LEFT JOIN requests o ON o.id = r.reused_from ORDER BY r.run"
    ).fetchall()
    assert rows == [("one", None, None), ("three", "one", "q0"), ("two", "one", "q0")]  # "three" reused "two"'s
    assert store.results.total_cost("two") == store.results.total_cost("three") == 0


def test_a_failed_answer_is_never_reused(tmp_path: Path, store: Store, limits: Limits, start_sim: Any) -> None:
    sim = start_sim(latency_scale=0, tier="tier-5")
    credentials = Credentials(sim.base_url, "k")
    line = chat_line("bad", "Hi")
    sim.call(lambda: sim.sim.script("400"))  # refused as written: failed for good
    bad = run_job(store, str(write_jsonl(tmp_path / "bad.jsonl", [line])), limits, TIER5, credentials)
    assert bad.counts["failed"] == 1
    again = run_job(store, str(write_jsonl(tmp_path / "again.jsonl", [line])), limits, TIER5, credentials)
    assert again.counts["succeeded"] == 1 and _sent(sim) == 2  # sent again, and answered this time


def test_reused_requests_are_never_packed_into_a_batch(
    tmp_path: Path, store: Store, limits: Limits, start_sim: Any
) -> None:
    sim = start_sim(latency_scale=0, batch_seconds=0.1, tier="tier-5")
    credentials = Credentials(sim.base_url, "k")
    questions = [f"Name a colour, number {i}." for i in range(6)]
    first = run_job(store, str(_job(tmp_path, "first", questions)), limits, TIER5, credentials)
    assert first.exit_code == 0
    more = [*questions, "Name a fruit."]
    batch = run_job(store, str(_job(tmp_path, "later", more)), limits, TIER5, credentials, mode="batch",
                    batch=FAST_BATCHES)  # fmt: skip
    assert batch.exit_code == 0 and batch.counts["succeeded"] == 7
    lines = sim.call(lambda: [len(b.lines) for b in sim.sim.batches.batches.values()])
    assert lines == [1]  # only the new request went into a batch


def test_runner_run_fresh_sends_everything_again(tmp_path: Path, start_sim: Any) -> None:
    sim = start_sim(latency_scale=0, tier="tier-5")
    env = {**os.environ, "OPENAI_API_KEY": "k", "RUNNER_DB": str(tmp_path / "r.db")}
    job = _job(tmp_path, "job", ["One?", "Two?"])
    args = ["run", str(job), "--base-url", sim.base_url, "--no-progress"]
    assert runner_cli(*args, env=env).returncode == 0
    again = runner_cli(*args, "--name", "again", env=env)
    assert again.returncode == 0 and "reused 2 answers" in again.stderr and _sent(sim) == 2
    fresh = runner_cli(*args, "--name", "fresh", "--fresh", env=env)
    assert fresh.returncode == 0 and "reused" not in fresh.stderr and _sent(sim) == 4


def test_runner_plan_counts_answers_it_would_reuse_as_free(tmp_path: Path, start_sim: Any) -> None:
    sim = start_sim(latency_scale=0, tier="tier-5")
    env = {**os.environ, "OPENAI_API_KEY": "k", "RUNNER_DB": str(tmp_path / "r.db")}
    assert runner_cli("run", str(_job(tmp_path, "job", ["One?", "Two?", "Three?"])), "--base-url", sim.base_url,
                      "--no-progress", env=env).returncode == 0  # fmt: skip
    planned = runner_cli("plan", str(_job(tmp_path, "more", ["One?", "Two?", "Three?", "Four?"])), "--json", env=env)
    assert planned.returncode == 0, planned.stderr
    assert json.loads(planned.stdout)["requests"] == 1
    assert "3 requests were answered before in this database" in planned.stdout  # among the notes
    done = runner_cli("plan", str(_job(tmp_path, "same", ["One?", "Two?"])), env=env)
    assert done.returncode == 2 and "all 2 requests were answered before" in done.stderr


def test_lines_alike_in_one_run_are_each_sent(tmp_path: Path, store: Store, limits: Limits, start_sim: Any) -> None:
    """Samples of one prompt: within a run nothing is reused, on the first pass as on a resume."""
    sim = start_sim(latency_scale=0, tier="tier-5")
    credentials = Credentials(sim.base_url, "k")
    path = _job(tmp_path, "samples", ["Tell me a joke."] * 6)
    first = run_job(store, str(path), limits, TIER5, credentials, lane=Lane(most=2))
    assert first.counts["succeeded"] == 2
    rest = run_job(store, str(path), limits, TIER5, credentials)
    assert rest.counts["succeeded"] == 6 and _sent(sim) == 6
