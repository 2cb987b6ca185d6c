"""Completed requests per second of one runner process, persistence on, against a zero-latency simulator.

The runner is measured as a user runs it, ``runner run job.jsonl`` in a new process: end to end (start-up, ingest,
run, exit) and in steady state (the simulator's answers per second from 1 s after the first request to the last).

Baselines in the same run, same simulator, same requests, no persistence:
- ``sdk``: the openai SDK's AsyncOpenAI with DefaultAioHttpClient, max_retries=0, 256 concurrent (what a careful
  hand-written script does);
- ``aiohttp``: raw aiohttp posts, 256 concurrent (the transport's ceiling on this machine).

    python bench/throughput.py [--requests 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

import aiohttp
import openai

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Sampler, sim_process, stats, write_job
from runner.jobfile import ingest
from runner.limits import load_limits
from runner.store import Store

UNLIMITED = ["--rpm", "100000000", "--tpm", "100000000000", "--rpd", "1000000000", "--latency-scale", "0"]


async def sdk_baseline(base_url: str, bodies: list[dict[str, object]]) -> float:
    client = openai.AsyncOpenAI(
        base_url=base_url, api_key="k", max_retries=0, http_client=openai.DefaultAioHttpClient()
    )
    gate = asyncio.Semaphore(256)

    async def one(body: dict[str, object]) -> None:
        async with gate:
            await client.chat.completions.create(**body)  # type: ignore[call-overload]

    started = time.perf_counter()
    await asyncio.gather(*(one(b) for b in bodies))
    elapsed = time.perf_counter() - started
    await client.close()
    return len(bodies) / elapsed


async def aiohttp_baseline(base_url: str, bodies: list[dict[str, object]]) -> float:
    gate = asyncio.Semaphore(256)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:

        async def one(body: dict[str, object]) -> None:
            async with (
                gate,
                session.post(
                    base_url + "/chat/completions",
                    data=json.dumps(body).encode(),
                    headers={"Content-Type": "application/json"},
                ) as r,
            ):
                json.loads(await r.read())

        started = time.perf_counter()
        await asyncio.gather(*(one(b) for b in bodies))
        return len(bodies) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    n = args.requests
    limits = load_limits()
    with tempfile.TemporaryDirectory() as tmp, sim_process(*UNLIMITED) as base_url:
        job = write_job(Path(tmp) / "bench.jsonl", n)
        bodies = [json.loads(line)["body"] for line in job.read_text().splitlines()]
        store = Store(Path(tmp) / "ingest.db")
        owner = store.runs.acquire("bench", str(job))
        started = time.perf_counter()
        ingest(store, "bench", job, limits)
        ingest_rate = n / (time.perf_counter() - started)
        store.runs.release("bench", owner)
        store.close()
        db = Path(tmp) / "bench.db"
        env = {**os.environ, "OPENAI_API_KEY": "sk-bench"}
        command = [sys.executable, "-m", "runner", "run", str(job), "--name", "bench", "--db", str(db),
                   "--base-url", base_url, "--no-progress", "--rpm", "100000000", "--tpm", "100000000000",
                   "--rpd", "1000000000"]  # fmt: skip
        with Sampler(base_url, every=0.25) as sampler:
            started = time.perf_counter()
            subprocess.run(command, env=env, check=True, capture_output=True)
            end_to_end = n / (time.perf_counter() - started)
        steady = sampler.steady(warmup=1.0).requests_per_minute / 60
        with closing(Store(db)) as store:
            assert store.requests.counts("bench")["succeeded"] == n
            assert store.conn.execute("SELECT count(*) FROM spend").fetchone()[0] == n
        sdk_rate = asyncio.run(sdk_baseline(base_url, bodies[: n // 4]))
        raw_rate = asyncio.run(aiohttp_baseline(base_url, bodies[: n // 4]))
        served = stats(base_url)
        assert served["rate_limited"] == 0, served
    print(
        f"requests: {n:,} (baselines: {n // 4:,}); simulator answered {served['answered']:,}, "
        f"rejected {served['rate_limited']}"
    )
    print(f"ingest (tokenise + store):          {ingest_rate:10,.0f} lines/s")
    print(f"runner run, end to end:             {end_to_end:10,.0f} completed req/s (start-up and ingest included)")
    print(f"runner run, steady state:           {steady:10,.0f} completed req/s")
    print(f"baseline openai SDK + aiohttp:      {sdk_rate:10,.0f} req/s   runner/sdk = {end_to_end / sdk_rate:.2f}x "
          f"end to end, {steady / sdk_rate:.2f}x steady")  # fmt: skip
    print(f"baseline raw aiohttp, no storage:   {raw_rate:10,.0f} req/s   runner/raw = {end_to_end / raw_rate:.2f}x "
          f"end to end, {steady / raw_rate:.2f}x steady")  # fmt: skip


if __name__ == "__main__":
    main()
