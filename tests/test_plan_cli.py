"""``runner plan`` as a user types it, against the simulator: a pilot, the tier read from the headers it saw, the
admin API's own limits, a stored run's pending requests, and the chart."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from runner.store import Store

from .conftest import chat_line, runner_cli, write_jsonl


def job(tmp_path: Path, n: int) -> Path:
    return write_jsonl(tmp_path / "job.jsonl", [chat_line(f"r{i}", max_tokens=100) for i in range(n)])


@pytest.mark.slow
def test_a_pilot_calibrates_the_plan_and_its_headers_name_the_tier(tmp_path: Path, start_sim: Any) -> None:
    sim = start_sim(latency_scale=0, tier="tier-2")
    db = tmp_path / "p.db"
    env = {**os.environ, "OPENAI_API_KEY": "sk-test", "RUNNER_DB": str(db)}
    path = job(tmp_path, 30)
    piloted = runner_cli("plan", str(path), "--pilot", "5", "--base-url", sim.base_url, "--json", env=env)
    assert piloted.returncode == 0, piloted.stderr
    assert "pilot: 5 answered in run job" in piloted.stderr
    report = json.loads(piloted.stdout)
    assert "5 answers of the pilot (run 'job')" in report["basis"]
    # the simulator's answers use part of the 100-token allowance: the plan expects what they used, not 100 each
    used = Store(db).history.calibration("job")
    assert report["pools"][0]["output_tokens"] == round(30 * 100 * used.output_tokens / used.allowance) < 3000
    # x-ratelimit-limit-* of the pilot's answers are tier-2's row for gpt-4.1-mini
    assert report["current_tier"] == "tier-2"
    assert any(n.startswith("tier detected: tier-2") for n in report["notes"])

    claimed = runner_cli("plan", str(path), "--tier", "tier-1", env=env)
    assert claimed.returncode == 0, claimed.stderr
    assert "tier-2's limits, not tier-1's" in claimed.stderr
    assert "tier-1 (you)" in claimed.stdout

    pending = json.loads(runner_cli("plan", "--name", "job", "--json", env=env).stdout)
    assert pending["pools"][0]["requests"] == 25  # what is still to send
    finished = runner_cli("run", str(path), "--base-url", sim.base_url, env=env)
    assert finished.returncode == 0, finished.stderr
    assert sim.sim.stats.answered == 30  # the pilot's answers count: nothing sent twice


def test_the_admin_api_gives_the_projects_own_limits(tmp_path: Path, start_sim: Any) -> None:
    sim = start_sim(latency_scale=0, tier="tier-3", admin_key="sk-admin-right")
    env = {**os.environ, "RUNNER_DB": str(tmp_path / "a.db"), "OPENAI_PROJECT_ID": "proj_sim"}
    ask = ("plan", "--requests", "100000", "--input-tokens", "800", "--output-tokens", "200", "--base-url")
    planned = runner_cli(*ask, sim.base_url, "--json", env={**env, "OPENAI_ADMIN_KEY": "sk-admin-right"})
    assert planned.returncode == 0, planned.stderr
    report = json.loads(planned.stdout)
    assert report["current_tier"] == "tier-3"
    assert "your project's own limits (admin API) for gpt-4.1-mini: planned as tier-3" in report["notes"]
    warned = runner_cli(*ask, sim.base_url, "--tier", "tier-1", env={**env, "OPENAI_ADMIN_KEY": "sk-admin-right"})
    assert "warning: they are tier-3's limits, not tier-1's" in warned.stderr
    # tier-1 is planned on the project's own (tier-3) limits: 1e8 tokens at 3,920,000 a minute, not 196,000
    you = next(line for line in warned.stdout.splitlines() if line.startswith("tier-1 (you)"))
    assert "26m TPM" in you

    refused = runner_cli(*ask, sim.base_url, env={**env, "OPENAI_ADMIN_KEY": "sk-admin-wrong"})
    assert refused.returncode == 2
    assert "the admin API refused" in refused.stderr and "Traceback" not in refused.stderr


@pytest.mark.slow
def test_the_chart_is_a_picture_file(tmp_path: Path) -> None:
    env = {**os.environ, "RUNNER_DB": str(tmp_path / "c.db")}
    ask = ("plan", "--requests", "1000000", "--input-tokens", "800", "--output-tokens", "200", "--deadline", "6h")
    png, svg = tmp_path / "plan.png", tmp_path / "plan.svg"
    drawn = runner_cli(*ask, "--chart", str(png), env=env)
    assert drawn.returncode == 0, drawn.stderr
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and png.stat().st_size > 10_000
    assert runner_cli(*ask, "--chart", str(svg), env=env).returncode == 0
    assert b"<svg" in svg.read_bytes()[:1000]
    wrong = runner_cli(*ask, "--chart", str(tmp_path / "plan.txt"), env=env)
    assert wrong.returncode == 2 and "plan.txt" in wrong.stderr
