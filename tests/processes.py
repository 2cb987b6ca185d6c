"""Several real ``runner run`` processes on one key, each with its own job and database, started some seconds apart
(as a user's second job is): the end-to-end judge of sharing a limit."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .conftest import ROOT, chat_line, write_jsonl

__all__ = ["poll_until", "run_side_by_side", "sim_stats"]


def poll_until(condition: Callable[[], object], seconds: float = 60) -> None:
    """Wait (polling) until ``condition()`` holds: another process or thread is to make it true."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def sim_stats(base_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/_sim/stats", timeout=10) as r:
        result: dict[str, Any] = json.loads(r.read())
        return result


def run_side_by_side(
    folder: Path,
    base_url: str,
    env: dict[str, str],
    *,
    processes: int = 2,
    requests: int = 40,
    stagger: float = 1.0,
    args: tuple[str, ...] = ("--rpm", "240"),
    meanwhile: Callable[[], None] | None = None,
) -> list[float]:
    """Start ``processes`` runs ``stagger`` seconds apart (real time: they are real processes), call ``meanwhile``
    once all run, and return each one's wall seconds; every one must exit 0."""
    children = []
    for i in range(processes):
        job = write_jsonl(folder / f"job{i}.jsonl", [chat_line(f"p{i}-{n}", max_tokens=5) for n in range(requests)])
        command = [sys.executable, "-m", "runner", "run", str(job), "--db", str(folder / f"run{i}.db")]
        command += ["--base-url", base_url, "--no-progress", *args]
        children.append((time.monotonic(), subprocess.Popen(command, env=env, cwd=ROOT, stderr=subprocess.PIPE)))
        if i < processes - 1:
            time.sleep(stagger)
    if meanwhile is not None:
        meanwhile()
    walls = []
    for began, child in children:
        _, err = child.communicate(timeout=180)
        assert child.returncode == 0, err.decode()
        walls.append(time.monotonic() - began)
    return walls
