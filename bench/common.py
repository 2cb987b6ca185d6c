"""Helpers for the benchmarks: a simulator in its own process on a free loopback port, its counters sampled over
time, job files."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Steady:
    """What the simulator counted while a client had work waiting."""

    tokens_per_minute: float  # real tokens (prompt + output)
    counted_per_minute: float  # what the server's TPM limit counted (its own counting mode)
    requests_per_minute: float
    seconds: float
    requests: int  # all the simulator received over the run
    rejected: int  # rate-limit 429s over the run


class Sampler:
    """Samples a simulator's counters every ``every`` seconds, from a thread, until stopped."""

    def __init__(self, base_url: str, every: float = 0.5) -> None:
        self.base_url, self.every = base_url, every
        self.samples: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self) -> None:
        while not self.stop.wait(self.every):
            try:
                self.samples.append(stats(self.base_url))
            except OSError:
                return

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def steady(self, warmup: float = 10.0, since: float | None = None) -> Steady:
        """Rates from ``warmup`` seconds after the first request (or from ``since``, a wall time) until the client
        sent its last one (the limit binds while requests wait), and the run's totals."""
        started = [s for s in self.samples if s["requests"] > 0]
        last = self.samples[-1]
        if not started:
            return Steady(0.0, 0.0, 0.0, 0.0, 0, 0)
        t0 = started[0]["time"] + warmup if since is None else since
        arriving = [s for a, s in zip(self.samples, self.samples[1:], strict=False) if s["requests"] > a["requests"]]
        t1 = arriving[-1]["time"] if arriving else last["time"]
        window = [s for s in self.samples if t0 <= s["time"] <= t1]
        if len(window) < 2:
            window = [*started[:1], arriving[-1] if arriving else last]
        a, b = window[0], window[-1]
        seconds = max(1e-9, b["time"] - a["time"])
        tokens = (b["prompt_tokens"] + b["output_tokens"]) - (a["prompt_tokens"] + a["output_tokens"])
        return Steady(
            tokens / seconds * 60,
            (b["counted_tokens"] - a["counted_tokens"]) / seconds * 60,
            (b["answered"] - a["answered"]) / seconds * 60,
            seconds,
            int(last["requests"]),
            int(last["rate_limited"]),
        )


# common English words: prose whose characters / 4 is more than the tokenizer counts (about 1.4 tokens a word)
PROSE_TEXT = (
    "the people of this country have always wanted their government to listen before making decisions about "
    "schools roads and hospitals which everyone uses every single day although nobody agrees on how much should "
    "be spent or where the money should come from when the economy slows and families struggle"
)
PROSE = PROSE_TEXT.split()
STYLES = ("words", "prose")  # what ``write_job``'s prompts are made of


def write_job(
    path: Path, n: int, words: int = 8, max_tokens: int = 16, prefix: str = "r", style: str = "words"
) -> Path:
    """``n`` chat requests of ``words`` words each: short made-up words (``style="words"``: characters / 4 count
    less than the tokenizer) or English prose (``"prose"``: more)."""
    with path.open("w") as f:
        for i in range(n):
            if style == "prose":
                body = " ".join(PROSE[(i * 7 + k) % len(PROSE)] for k in range(words))
            else:
                body = " ".join(f"w{(i * 7 + k) % 997}" for k in range(words))
            text = f"Item {i}: {body}"
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


@contextmanager
def redis_process() -> Iterator[str]:
    """A real ``redis-server`` on a free loopback port (nothing saved); yields its URL."""
    port = free_port()
    child = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.01)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        child.kill()
        child.wait(timeout=10)
