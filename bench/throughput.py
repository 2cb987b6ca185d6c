"""Completed requests per second of one runner process, persistence on, against a zero-latency simulator.

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
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import openai

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import sim_process, stats, write_job
from runner.commands import run_job
from runner.jobfile import ingest
from runner.limits import load_limits
from runner.settings import RunSettings
from runner.store import Store
from runner.transport import Credentials

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
        store = Store(Path(tmp) / "bench.db")
        owner = store.acquire("bench", str(job))
        started = time.perf_counter()
        ingest(store, "bench", job, limits)
        ingest_rate = n / (time.perf_counter() - started)
        store.release("bench", owner)
        settings = RunSettings(rpm=100_000_000, tpm=100_000_000_000, rpd=1_000_000_000)
        started = time.perf_counter()
        outcome = run_job(store, str(job), limits, settings, Credentials(base_url, "k"), name="bench", progress=False)
        runner_rate = n / (time.perf_counter() - started)
        assert outcome.counts["succeeded"] == n, outcome.counts
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
    print(f"runner run (persistence on):        {runner_rate:10,.0f} completed req/s")
    print(f"baseline openai SDK + aiohttp:      {sdk_rate:10,.0f} req/s   runner/sdk = {runner_rate / sdk_rate:.2f}x")
    print(f"baseline raw aiohttp, no storage:   {raw_rate:10,.0f} req/s   runner/raw = {runner_rate / raw_rate:.2f}x")


if __name__ == "__main__":
    main()
