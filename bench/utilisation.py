"""Steady-state use of the binding limit (TPM) on the simulator with sub-minute enforcement on (1 s window).

The simulator runs in its own process at tier-2 numbers for gpt-4.1-mini (5,000 RPM, 2,000,000 TPM) with
realistic latency (0.6 s to first token + 90 tokens/s). Utilisation = tokens the simulator billed per minute
while requests were still waiting to be admitted (so the limit binds), over TPM; rejected = 429 rate-limit
answers over all requests it received.

Baseline in the same run: the usual hand-written client, aiolimiter's AsyncLimiter(rpm, 60) and
AsyncLimiter(tpm, 60) charged with prompt + max_tokens, retrying a 429 after its Retry-After.

    python bench/utilisation.py [--requests 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiolimiter import AsyncLimiter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import sim_process, stats, write_job
from runner.app import run_job
from runner.limits import load_limits
from runner.store import Store
from runner.sync import RunSettings
from runner.tokens import count_prompt
from runner.transport import Credentials

RPM, TPM = 5_000, 2_000_000
SIM_FLAGS = ["--rpm", str(RPM), "--tpm", str(TPM), "--rpd", "1000000000", "--window", "1"]


class Sampler:
    """Samples the simulator's counters once a second while ``pending()`` says work is left."""

    def __init__(self, base_url: str, pending: Any) -> None:
        self.base_url, self.pending = base_url, pending
        self.samples: list[tuple[float, dict[str, Any], int]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self) -> None:
        while not self.stop.wait(1.0):
            self.samples.append((time.monotonic(), stats(self.base_url), self.pending()))

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def steady(self, warmup: float = 5.0) -> tuple[float, float, int, int]:
        """(tokens per minute, seconds, requests, 429s) between warm-up and the last sample with work pending."""
        start = self.samples[0][0]
        window = [s for s in self.samples if s[0] - start >= warmup and s[2] > 0]
        (t0, a, _), (t1, b, _) = window[0], window[-1]
        tokens = (b["prompt_tokens"] + b["output_tokens"]) - (a["prompt_tokens"] + a["output_tokens"])
        return tokens / (t1 - t0) * 60, t1 - t0, b["requests"] - a["requests"], b["rate_limited"] - a["rate_limited"]


def run_runner(base_url: str, job: Path, tmp: str, n: int) -> tuple[Sampler, float]:
    limits = load_limits()
    db = Path(tmp) / "util.db"
    store = Store(db)

    def pending() -> int:  # requests the gate has not admitted yet: while there are any, the limit binds
        with sqlite3.connect(db) as conn:
            return int(conn.execute("SELECT count(*) FROM requests WHERE state='pending'").fetchone()[0])

    settings = RunSettings(tier="tier-2", rpm=RPM, tpm=TPM, rpd=1_000_000_000)
    with Sampler(base_url, pending) as sampler:
        started = time.monotonic()
        outcome = run_job(store, str(job), limits, settings, Credentials(base_url, "k"), "util", progress=False)
        elapsed = time.monotonic() - started
    assert outcome.counts["succeeded"] == n, outcome.counts
    return sampler, elapsed


def run_baseline(base_url: str, job: Path, n: int, deadline: float) -> tuple[Sampler, float, int]:
    bodies = [json.loads(line)["body"] for line in job.read_text().splitlines()]
    done = [0]

    async def main() -> None:
        rpm, tpm = AsyncLimiter(RPM, 60), AsyncLimiter(TPM, 60)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1024)) as session:

            async def one(body: dict[str, Any]) -> None:
                cost = count_prompt("/v1/chat/completions", body, "o200k_base") + int(body["max_tokens"])
                for _ in range(20):
                    await rpm.acquire()
                    await tpm.acquire(cost)
                    async with session.post(base_url + "/chat/completions", json=body) as r:
                        await r.read()
                        if r.status == 200:
                            done[0] += 1
                            return
                        await asyncio.sleep(float(r.headers.get("retry-after", "1")))

            await asyncio.wait_for(asyncio.gather(*(one(b) for b in bodies)), timeout=deadline)

    with Sampler(base_url, lambda: n - done[0]) as sampler:
        started = time.monotonic()
        with contextlib.suppress(TimeoutError):
            asyncio.run(main())
        elapsed = time.monotonic() - started
    return sampler, elapsed, done[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    n = args.requests
    with tempfile.TemporaryDirectory() as tmp:
        job = write_job(Path(tmp) / "util.jsonl", n, words=180, max_tokens=300)
        with sim_process(*SIM_FLAGS) as base_url:
            ours, our_time = run_runner(base_url, job, tmp, n)
        with sim_process(*SIM_FLAGS) as base_url:
            theirs, their_time, their_done = run_baseline(base_url, job, n, deadline=max(120.0, 3 * our_time))
    tpm, seconds, requests, rejected = ours.steady()
    b_tpm, b_seconds, b_requests, b_rejected = theirs.steady()
    print(f"{n:,} requests, TPM {TPM:,}, RPM {RPM:,}, simulator window 1 s, latency 0.6 s + 90 tok/s")
    print(
        f"runner:    {tpm / TPM:6.1%} of TPM over {seconds:.0f} s steady; {rejected}/{requests} rejected "
        f"({rejected / max(requests, 1):.2%}); all {n:,} done in {our_time:.0f} s"
    )
    print(
        f"baseline:  {b_tpm / TPM:6.1%} of TPM over {b_seconds:.0f} s steady; {b_rejected}/{b_requests} rejected "
        f"({b_rejected / max(b_requests, 1):.2%}); {their_done:,} done in {their_time:.0f} s"
    )
    print(f"ratio runner/baseline utilisation: {tpm / b_tpm:.2f}x")


if __name__ == "__main__":
    main()
