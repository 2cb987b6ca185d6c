"""Baseline clients for the benchmarks, each run in its own process: ``python bench/clients.py CLIENT ...``.

- ``aiolimiter``: the usual hand-written client: ``AsyncLimiter(rpm, 60)`` and ``AsyncLimiter(tpm, 60)`` charged
  with prompt + max_tokens, a 429 retried after its Retry-After, every request until it is answered.
- ``oaib``: the ``oaib`` package from PyPI (the best installable peer), as its README uses it: ``Batch(rpm, tpm)``,
  ``add`` each request, ``run``. It needs ``pip install oaib``; exit code 3 when it is not installed.
- ``raw``: raw aiohttp with a fixed number of connections and no pacing at all (the transport's ceiling).

Each prints one JSON line: answered, failed (dropped) and seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiolimiter import AsyncLimiter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runner.tokens import count_prompt


def bodies(job: Path) -> list[dict[str, Any]]:
    return [json.loads(line)["body"] for line in job.read_text().splitlines() if line.strip()]


async def aiolimiter_client(base_url: str, job: Path, rpm: int, tpm: int) -> dict[str, Any]:
    requests, tokens = AsyncLimiter(rpm, 60), AsyncLimiter(tpm, 60)
    answered = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1024)) as session:

        async def one(body: dict[str, Any]) -> None:
            nonlocal answered
            cost = min(tpm, count_prompt("/v1/chat/completions", body, "o200k_base") + int(body["max_tokens"]))
            for _ in range(50):
                await requests.acquire()
                await tokens.acquire(cost)
                async with session.post(base_url + "/chat/completions", json=body) as r:
                    await r.read()
                    if r.status == 200:
                        answered += 1
                        return
                    await asyncio.sleep(float(r.headers.get("retry-after", "1")))

        await asyncio.gather(*(one(b) for b in bodies(job)))
    return {"answered": answered}


async def oaib_client(base_url: str, job: Path, rpm: int, tpm: int) -> dict[str, Any]:
    from oaib import Batch  # type: ignore[import-not-found]

    log = job.with_suffix(".oaib.log")
    batch = Batch(rpm=rpm, tpm=tpm, api_key="sk-bench", base_url=base_url, loglevel=0, logdir=str(log))
    given = bodies(job)
    for body in given:
        await batch.add("chat.completions.create", **body)
    output = await batch.run()
    return {"answered": len(output), "dropped": len(given) - len(output)}


async def raw_client(base_url: str, job: Path, connections: int, per_second: int | None) -> dict[str, Any]:
    """Raw aiohttp posts on ``connections`` connections; with ``per_second``, started at most that many a second
    (``AsyncLimiter(per_second, 1)``: the tier's rate, a second's worth at a time)."""
    gate = asyncio.Semaphore(connections)
    pace = AsyncLimiter(per_second, 1) if per_second else None
    answered = 0
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(body: dict[str, Any]) -> None:
            nonlocal answered
            if pace is not None:
                await pace.acquire()
            async with gate, session.post(base_url + "/chat/completions", data=json.dumps(body).encode()) as r:
                await r.read()
                answered += r.status == 200

        await asyncio.gather(*(one(b) for b in bodies(job)))
    return {"answered": answered}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("client", choices=["aiolimiter", "oaib", "raw"])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--job", type=Path, required=True)
    parser.add_argument("--rpm", type=int, default=900)
    parser.add_argument("--tpm", type=int, default=90_000)
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--per-second", type=int, default=None, help="raw: start at most this many a second")
    args = parser.parse_args()
    started = time.monotonic()
    if args.client == "oaib":
        try:
            import oaib  # type: ignore[import-not-found]  # noqa: F401
        except ImportError:
            print(json.dumps({"error": "oaib is not installed"}))
            sys.exit(3)
        result = asyncio.run(oaib_client(args.base_url, args.job, args.rpm, args.tpm))
    elif args.client == "raw":
        result = asyncio.run(raw_client(args.base_url, args.job, args.connections, args.per_second))
    else:
        result = asyncio.run(aiolimiter_client(args.base_url, args.job, args.rpm, args.tpm))
    print(json.dumps({**result, "seconds": time.monotonic() - started}))


if __name__ == "__main__":
    main()
