"""The runner against llmock, an OpenAI stand-in written by others, so our client and our simulator are not the
only judges of each other. llmock reads the API differently from our simulator (a whole-minute bucket, a prompt
estimate of body bytes / 4, no refund after the answer) and grades the client's retry behaviour itself."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.commands import export_results, run_job
from runner.limits import Limits
from runner.retry import RetryPolicy
from runner.settings import RunSettings
from runner.store import Store
from runner.transport import Credentials

from .conftest import chat_line, write_jsonl

pytestmark = pytest.mark.slow  # each starts a server of its own in another process

LLMOCK = Path(sys.executable).parent / "llmock"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture
def llmock(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Start ``llmock serve`` on a free loopback port; returns its base URL (``.../v1``)."""
    if not LLMOCK.exists():
        pytest.skip("llmock is not installed")
    children: list[subprocess.Popen[bytes]] = []

    def start(*flags: str) -> str:
        port = free_port()
        log = (tmp_path / f"llmock-{port}.log").open("wb")
        child = subprocess.Popen(
            [
                str(LLMOCK),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--response-style",
                "static",
                *flags,
            ],
            stdout=log,
            stderr=log,
        )
        log.close()
        children.append(child)
        root = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                get(root + "/health")
                return root
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("llmock did not start")

    yield start
    for child in children:
        child.terminate()
        child.wait(timeout=10)


def llmock_charge(body: dict[str, Any]) -> int:
    """What llmock counts against TPM for a request (its own formula: body bytes / 4 + output budget)."""
    return max(1, len(json.dumps(body).encode()) // 4) + int(body.get("max_tokens", 0))


def test_pacing_holds_against_llmock_reading_of_the_limits(
    tmp_path: Path, store: Store, limits: Limits, llmock: Callable[..., str]
) -> None:
    root = llmock("--rpm", "1200", "--tpm", "18000")  # 300 tokens/s
    items = [chat_line(f"q{i:03d}", f"Question {i}?", max_tokens=20) for i in range(40)]
    path = write_jsonl(tmp_path / "job.jsonl", items)
    started = time.monotonic()
    outcome = run_job(
        store, str(path), limits, RunSettings(rpm=1200, tpm=18_000, seed=1), Credentials(root + "/v1", "sk-llmock")
    )
    wall = time.monotonic() - started
    assert outcome.exit_code == 0 and outcome.counts["succeeded"] == 40
    log = get(root + "/_llmock/requests")["requests"]
    assert [r["status"] for r in log].count(429) == 0
    assert len(log) == 40
    # llmock charges more per request than our estimate and never refunds; the gate follows its headers, so the
    # tokens llmock counted stay within its rate over the run, plus about two seconds of it: the gate's one-second
    # bucket, the slack (a quarter of it) allowed between the server's deficit and the gate's, and the answers in
    # flight when a header arrives. With the feedback switched off this run sent ~5.7x the rate (measured). The
    # run's span is the client's: llmock's own times bunch up when it falls behind on a loaded machine.
    charged = sum(llmock_charge(r["body"]) for r in log)
    assert charged <= 300 * (wall + 2.0), (charged, wall, log[-1]["started_at"] - log[0]["started_at"])
    assert charged >= 300 * (log[-1]["started_at"] - log[0]["started_at"]) * 0.8  # and it did not crawl


def test_llmock_grades_our_retry_behaviour_as_resilient(
    tmp_path: Path, store: Store, limits: Limits, llmock: Callable[..., str]
) -> None:
    root = llmock()
    scenario = {
        "behaviors": [
            {"type": "fail", "status": 429, "retry_after": 0.5, "times": 3},
            {"type": "fail", "status": 500, "times": 2},
            {"type": "fail", "status": 503, "times": 1},
            {"type": "fail", "status": 400, "times": 1},
        ]
    }
    request = urllib.request.Request(
        root + "/_llmock/scenario",
        data=json.dumps(scenario).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(request, timeout=10).close()
    path = write_jsonl(tmp_path / "job.jsonl", [chat_line(f"v{i}", f"Question {i}?") for i in range(10)])
    settings = RunSettings(retry=RetryPolicy(base=0.2, cap=1.0), seed=1)
    outcome = run_job(store, str(path), limits, settings, Credentials(root + "/v1", "sk-llmock"))
    assert outcome.counts["succeeded"] == 9 and outcome.counts["failed"] == 1  # the 400 is final
    assert outcome.exit_code == 1
    verdict = get(root + "/_llmock/verdict")
    assert verdict["passed"], verdict["findings"]
    assert verdict["faults_injected"] == 7 and verdict["errors"] == 0 and verdict["warnings"] == 0


def test_batch_round_trip_through_llmock(
    tmp_path: Path, store: Store, limits: Limits, llmock: Callable[..., str]
) -> None:
    from runner.settings import BatchSettings

    root = llmock()
    path = write_jsonl(tmp_path / "job.jsonl", [chat_line(f"b{i}", f"Question {i}?") for i in range(8)])
    outcome = run_job(
        store,
        str(path),
        limits,
        RunSettings(seed=1),
        Credentials(root + "/v1", "sk-llmock"),
        mode="batch",
        batch=BatchSettings(poll_min=0.05, poll_max=0.5),
    )
    assert outcome.exit_code == 0 and outcome.counts["succeeded"] == 8
    lines = [json.loads(x) for x in export_results(store, "job")]
    assert sorted(x["custom_id"] for x in lines) == [f"b{i}" for i in range(8)]
    assert all(x["response"]["status_code"] == 200 for x in lines)
    assert {r["service_tier"] for r in store.results.spend_by()} == {"batch"}
    batches = get(root + "/v1/batches")["data"]
    assert len(batches) == 1 and batches[0]["metadata"]["runner_chunk"] == "1"
