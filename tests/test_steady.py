"""Our client's requests, judged by steady (npm @stdy/cli, the spec-driven mock the openai SDK's own tests use):
it checks every request against OpenAI's openapi.yaml and answers 400 with the reason when one does not fit.
Its answers are random but schema-valid, so they also test that the runner copes with any valid answer shape."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from runner.batch.api import BatchAPI
from runner.commands import run_job
from runner.limits import Limits
from runner.settings import RunSettings
from runner.store import Store
from runner.transport import Credentials

from .conftest import SPEC, chat_line, write_jsonl

pytestmark = pytest.mark.slow  # each starts a server of its own in another process

STEADY = Path(__file__).resolve().parent / "npm" / "node_modules" / ".bin" / "steady"


@pytest.fixture
def steady(tmp_path: Path) -> Iterator[str]:
    """steady serving openapi.yaml on a free loopback port; its base URL (the spec's /v1 prefix is implied)."""
    if not STEADY.exists() or shutil.which("node") is None:
        pytest.skip("steady is not installed: npm ci --prefix tests/npm")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (tmp_path / "steady.log").open("wb")
    child = subprocess.Popen(
        [str(STEADY), "--port", str(port), "--host", "127.0.0.1", "-q", "--no-color", str(SPEC)], stdout=log, stderr=log
    )
    log.close()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(base + "/models", timeout=2).close()
            break
        except urllib.error.HTTPError:
            break
        except OSError:
            time.sleep(0.2)
    try:
        yield base
    finally:
        child.terminate()
        child.wait(timeout=10)


def test_steady_accepts_every_request_the_sync_runner_sends(
    tmp_path: Path, store: Store, limits: Limits, steady: str
) -> None:
    items = [chat_line(f"c{i}", f"Question {i}?") for i in range(3)]
    items.append(
        chat_line(
            "schema",
            "Extract.",
            response_format={
                "type": "json_schema",
                "json_schema": {
                    "name": "x",
                    "strict": True,
                    "schema": {
                        "type": "object",
                        "properties": {"a": {"type": "string"}},
                        "required": ["a"],
                        "additionalProperties": False,
                    },
                },
            },
        )
    )
    items.append(
        {
            "custom_id": "r1",
            "url": "/v1/responses",
            "body": {"model": "gpt-4.1-mini", "input": "Hello", "max_output_tokens": 20},
        }
    )
    items.append(
        {"custom_id": "e1", "url": "/v1/embeddings", "body": {"model": "text-embedding-3-small", "input": ["a", "b"]}}
    )
    path = write_jsonl(tmp_path / "job.jsonl", items)
    outcome = run_job(store, str(path), limits, RunSettings(seed=1), Credentials(steady, "sk-steady"))
    failures = store.results.failures("job", 10)
    assert not failures, failures  # a request steady finds invalid comes back 400 and fails
    assert outcome.exit_code == 0 and outcome.counts["succeeded"] == 6


def test_steady_accepts_every_batch_control_plane_request(tmp_path: Path, steady: str) -> None:
    spool = tmp_path / "in.jsonl"
    spool.write_text(json.dumps(chat_line("a")) + "\n")

    async def go() -> None:
        async with BatchAPI(Credentials(steady, "sk-steady")) as api:
            file_id = await api.upload(spool, "runner-x-job-00001-abc.jsonl")
            batch = await api.create(
                file_id, "/v1/chat/completions", {"runner_store": "x", "runner_run": "job", "runner_chunk": "1"}
            )
            await api.retrieve(batch.id)
            await api.find_batch({"runner_run": "job"}, newer_than=0)
            await api.find_file("runner-x-job-00001-abc.jsonl", 10)
            await api.cancel(batch.id)
            await api.download(file_id, tmp_path / "out.jsonl")
            await api.delete_file(file_id)

    anyio.run(go, backend="asyncio")  # a request steady rejects raises BatchAPIError
    assert (tmp_path / "out.jsonl").exists()


def test_a_request_the_spec_forbids_fails_with_the_reason(
    tmp_path: Path, store: Store, limits: Limits, steady: str
) -> None:
    bad = chat_line("bad")
    bad["body"]["messages"] = "not a list"
    path = write_jsonl(tmp_path / "job.jsonl", [chat_line("good"), bad])
    outcome = run_job(store, str(path), limits, RunSettings(seed=1), Credentials(steady, "sk-steady"))
    assert outcome.exit_code == 1 and outcome.counts["succeeded"] == 1
    ((custom_id, reason),) = store.results.failures("job")
    assert custom_id == "bad" and reason.startswith("400")
