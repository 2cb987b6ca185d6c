"""The README's failure table: every row names tests that exist, and the rows no other file covers are here."""

from __future__ import annotations

import ast
import http.server
import json
import os
import re
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from runner.store import Store

from .conftest import ROOT, chat_line, runner_cli, write_jsonl
from .processes import poll_until


def failure_table() -> list[tuple[str, str, str, list[str]]]:
    """The rows of the README's "When something goes wrong" table: (failure, message, exit code, tests)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## When something goes wrong", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[2].isdigit():
            rows.append((cells[0], cells[1], cells[2], re.findall(r"`(test_\w+)`", cells[3])))
    return rows


def test_every_row_of_the_failure_table_names_tests_that_exist() -> None:
    defined = {
        node.name
        for file in (ROOT / "tests").glob("test_*.py")
        for node in ast.walk(ast.parse(file.read_text()))
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    }
    rows = failure_table()
    assert len(rows) >= 20
    for failure, _, code, tests in rows:
        assert code in {"0", "1", "2", "3"}, failure
        assert tests, f"no test named for {failure!r}"
        assert set(tests) <= defined, f"{failure!r} names tests that do not exist: {set(tests) - defined}"


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "RUNNER_"))}
    return {**base, "RUNNER_DB": str(tmp_path / "f.db"), **extra}


@pytest.mark.parametrize(
    ("args", "environment", "message"),
    [
        ([], {}, "OPENAI_API_KEY is not set (or pass --base-url to use another server)"),
        ([], {"OPENAI_API_KEY": "sk-abc\n"}, "OPENAI_API_KEY has a line break or a space in it"),
        (["--base-url", "127.0.0.1:8000/v1"], {"OPENAI_API_KEY": "k"}, "must start with http:// or https://"),
        ([], {"OPENAI_API_KEY": "k", "RUNNER_TIER_LIMITS": "/nowhere/limits.json"},
         "/nowhere/limits.json: no such limits file (named by RUNNER_TIER_LIMITS)"),
        (["--limits", "/nowhere/l.json"], {"OPENAI_API_KEY": "k"}, "no such limits file (named by --limits)"),
    ],
)  # fmt: skip
def test_configuration_mistakes_are_one_line_and_exit_2(
    tmp_path: Path, args: list[str], environment: dict[str, str], message: str
) -> None:
    path = write_jsonl(tmp_path / "job.jsonl", [chat_line("a")])
    ran = runner_cli("run", str(path), *args, env=env(tmp_path, **environment))
    assert ran.returncode == 2, ran.stderr
    assert message in ran.stderr and "Traceback" not in ran.stderr, ran.stderr
    assert len(ran.stderr.strip().splitlines()) == 1, ran.stderr


def test_a_run_a_live_process_works_on_is_refused(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "job.jsonl", [chat_line("a")])
    store = Store(tmp_path / "f.db")
    owner = store.runs.acquire("job", str(path))  # this test's process: alive
    ran = runner_cli("run", str(path), "--base-url", "http://127.0.0.1:9", env=env(tmp_path, OPENAI_API_KEY="k"))
    assert ran.returncode == 2, ran.stderr
    assert f"run 'job' is being worked on by {owner} (alive); wait for it or stop it" in ran.stderr
    status = runner_cli("status", env=env(tmp_path))
    assert f"a process is working on it ({owner})" in status.stdout, status.stdout
    store.close()


@pytest.mark.slow
def test_a_process_whose_run_was_taken_over_stops_sending_and_exits_3(tmp_path: Path, start_sim: Any) -> None:
    sim = start_sim(latency_scale=0.3, rpm=600, window=1.0)
    path = write_jsonl(tmp_path / "job.jsonl", [chat_line(f"r{i:03d}") for i in range(200)])
    db = tmp_path / "f.db"
    args = [sys.executable, "-m", "runner", "run", str(path), "--base-url", sim.base_url, "--rpm", "600"]
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        child = subprocess.Popen(args, env=env(tmp_path, OPENAI_API_KEY="k"), cwd=ROOT, stderr=stderr,
                                 stdout=subprocess.DEVNULL)  # fmt: skip
    poll_until(lambda: sim.call(lambda: sim.sim.stats.answered) >= 5)
    other = "other-host:4242:1:abcd1234"
    with sqlite3.connect(db, timeout=30) as conn:  # what another host's runner does when it takes the run over
        conn.execute("UPDATE runs SET owner=?", (other,))
    try:
        child.wait(timeout=60)
    finally:
        child.kill()
    err = log.read_text()
    assert child.returncode == 3, err
    assert f"another process ({other}) took this run over" in err and "Traceback" not in err, err
    sent = sim.call(lambda: sim.sim.stats.requests)
    assert sent < 200  # it stopped sending


class NoBatchAPI(http.server.BaseHTTPRequestHandler):
    """An OpenAI-compatible server without the Batch API (as many are): 404 in OpenAI's shape for every call."""

    def _refuse(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        message = f"Unknown request URL: {self.command} {self.path}."
        body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                     "code": "unknown_url"}})  # fmt: skip
        self.send_response(404)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    do_GET = do_POST = _refuse

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.slow
def test_a_server_without_the_batch_api_is_one_clear_line_and_exit_2(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NoBatchAPI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        path = write_jsonl(tmp_path / "job.jsonl", [chat_line("a"), chat_line("b")])
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        ran = runner_cli("run", str(path), "--mode", "batch", "--base-url", url, env=env(tmp_path, OPENAI_API_KEY="k"))
    finally:
        server.shutdown()
        server.server_close()
    assert ran.returncode == 2, ran.stderr
    assert "404 Unknown request URL: POST /v1/files." in ran.stderr and "Traceback" not in ran.stderr, ran.stderr
    status = json.loads(runner_cli("status", "--json", env=env(tmp_path)).stdout)
    assert status["states"]["pending"] == 2  # nothing lost: a sync run (or another server) can take them
