"""Helpers for the benchmarks: a simulator in its own process on a free loopback port, job files."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def sim_process(*flags: str, duration: float = 900) -> Iterator[str]:
    """``runner sim`` in a child process (its own core); yields the base URL; stops by itself after ``duration``."""
    port = free_port()
    child = subprocess.Popen(
        [sys.executable, "-m", "runner", "sim", "--port", str(port), "--duration", str(duration), *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                stats(root)
                break
            except OSError:
                time.sleep(0.1)
        yield root + "/v1"
    finally:
        child.terminate()
        child.wait(timeout=30)


def stats(root: str) -> dict[str, Any]:
    with urllib.request.urlopen(root.removesuffix("/v1") + "/_sim/stats", timeout=10) as r:
        result: dict[str, Any] = json.loads(r.read())
        return result


def write_job(path: Path, n: int, words: int = 8, max_tokens: int = 16, prefix: str = "r") -> Path:
    with path.open("w") as f:
        for i in range(n):
            text = f"Item {i}: " + " ".join(f"w{(i * 7 + k) % 997}" for k in range(words))
            f.write(
                json.dumps(
                    {
                        "custom_id": f"{prefix}{i}",
                        "body": {
                            "model": "gpt-4.1-mini",
                            "messages": [{"role": "user", "content": text}],
                            "max_tokens": max_tokens,
                        },
                    }
                )
                + "\n"
            )
    return path
