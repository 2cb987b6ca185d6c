"""Runner processes on one key sharing a limit: host-local (the gate file), through Redis, or not at all.

Each cell starts 1, 2 or 4 ``runner run`` processes, each with its own job and database, ``--stagger`` seconds
apart, against one simulator in its own process (900 RPM / 90,000 TPM enforced over a ``--window`` of 5 s,
headers as ``--headers`` says (minute), counted as ``--counting`` says (tiktoken), latency 0.3 s + 150 tokens/s;
each request ~190 prompt tokens and ``max_tokens`` 300, so TPM binds). The gate: ``host`` (the default: the gate
file in the user's cache directory), ``redis`` (``--gate redis://...`` on a redis-server this script starts) and
``none`` (each paces alone, reading the others as other clients: the baseline). Figures per cell:

- together: the share of TPM all processes used, as the server counts it, from the first request to the last;
- refused: the share of requests the server answered 429;
- each: each process's part of the answers while all of them ran (equal is 1/N each), and the spread
  (the largest part over the smallest);
- walls: the slowest process's wall time over the quickest's.

The ``admissions`` section measures what sharing costs a gate's admissions: 4 gates in one process acquire and
settle as fast as they can for ``--seconds`` under limits too high to bind, alone, sharing through Redis (each
exchange a Lua script round trip every 0.25 s), and through the gate file, with its runners' bucket unarmed and
armed (a transaction per admission and per refund); it prints admissions per second and Redis round trips per
second.

    python bench/shared.py [--requests 150] [--processes 1,2,4] [--gates host,redis,none] [--window 5]
                           [--stagger 5] [--counting tiktoken] [--parallel 3] [--sections play,admissions]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import STYLES, Sampler, redis_process, sim_process, write_job
from runner.sim.buckets import READINGS
from runner.sim.counting import COUNTINGS

RPM, TPM = 900, 90_000


@dataclass(frozen=True)
class Play:
    processes: int
    window: float
    gate: str = "host"  # host, none, or a redis:// URL
    stagger: float = 10.0
    counting: str = "tiktoken"  # what the server's TPM limit counts (``runner sim --counting``)
    text: str = "words"  # the jobs' prompts (``bench.common.write_job``)
    reading: str = "minute"  # what the rate-limit headers report (``runner sim --headers``)


@dataclass(frozen=True)
class PlayFigures:
    share: float  # of the limit, all processes together, from the first request to the last
    rejected: float
    seconds: tuple[float, ...]  # each process's wall time
    parts: tuple[float, ...]  # each process's part of the answers while all ran
    exits: tuple[int, ...]


def sim_flags(
    window: float, reading: str = "minute", load: float = 0.0, counting: str = "tiktoken", enforcement: str = "bucket"
) -> list[str]:
    return [
        *("--tier", "tier-1", "--rpm", str(RPM), "--tpm", str(TPM), "--rpd", "1000000000"),
        *("--window", f"{window:g}", "--enforcement", enforcement, "--headers", reading, "--counting", counting),
        *("--background-load", f"{load:g}", "--first-token", "0.3", "--tokens-per-second", "150"),
    ]


def run_play(play: Play, requests: int, workdir: Path) -> PlayFigures:
    """``play.processes`` runner processes with their own jobs and databases on one simulator."""
    env = {**os.environ, "OPENAI_API_KEY": "sk-bench", "XDG_CACHE_HOME": str(workdir / "cache")}
    flags = sim_flags(play.window, play.reading, counting=play.counting)
    with sim_process(*flags, duration=1800) as base_url, Sampler(base_url) as sampler:
        children, dbs = [], []
        gate = "redis" if play.gate.startswith("redis") else play.gate
        for i in range(play.processes):
            if i:
                time.sleep(play.stagger)
            name = f"play-{play.processes}-{play.window:g}-{gate}-{play.stagger:g}-{i}"
            job = write_job(
                workdir / f"{name}.jsonl", requests, words=180, max_tokens=300, prefix=f"p{i}-", style=play.text
            )
            dbs.append(workdir / f"{name}.db")
            args = [sys.executable, "-m", "runner", "run", str(job), "--db", str(dbs[-1])]
            args += ["--base-url", base_url, "--rpm", str(RPM), "--tpm", str(TPM), "--no-progress"]
            args += ["--gate", play.gate]
            children.append((time.monotonic(), time.time(), subprocess.Popen(args, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))  # fmt: skip
        seconds, exits, ends = [], [], []
        for began, _, child in children:
            exits.append(child.wait(timeout=1500))
            seconds.append(time.monotonic() - began)
            ends.append(time.time())
    steady = sampler.steady(warmup=0.0)
    overlap = (children[-1][1], min(ends))  # wall times: the last start, the first end
    counts = [_answered_between(db, *overlap) for db in dbs]
    parts = tuple(c / max(1, sum(counts)) for c in counts)
    return PlayFigures(
        steady.counted_per_minute / TPM,
        steady.rejected / max(1, steady.requests),
        tuple(seconds),
        parts,
        tuple(exits),
    )


def _answered_between(db: Path, start: float, end: float) -> int:
    """Requests a run's database records as answered between two wall times (a benchmark reads the file directly;
    the runner itself keeps its SQL in runner/store)."""
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT count(*) FROM requests WHERE state='succeeded' AND updated_at BETWEEN ? AND ?", (start, end)
        ).fetchone()
    return int(row[0])


async def admissions(
    seconds: float, url: str | None, gates: int = 4, gate_file: Path | None = None, armed: bool = False
) -> tuple[float, float]:
    """Admissions per second of ``gates`` gates acquiring and settling flat out, sharing through Redis at ``url``,
    or the gate file at ``gate_file`` (``armed``: their runners' bucket armed, as after a refusal), or not at all;
    and Redis round trips per second."""
    from runner.gate import Gate
    from runner.gates import Scope
    from runner.redis_gate import RedisGate
    from runner.store.peers import GateFile, gate_digest

    shared: list[RedisGate] = []
    files: list[GateFile] = []
    if url:
        shared = [RedisGate(url, gate_digest("bench", "sk-bench"), f"bench-{i}") for i in range(gates)]
    elif gate_file:
        files = [GateFile(gate_file, f"bench-{i}") for i in range(gates)]
        if armed:
            files[0].empty(["gpt-4.1-mini requests", "gpt-4.1-mini tokens"])
    counts = [0] * gates

    async def work(i: int) -> None:
        scope = Scope(shared[i], "gpt-4.1-mini") if shared else Scope(files[i], "gpt-4.1-mini") if files else None
        gate = Gate(10_000_000, 10_000_000_000, sharing=scope, start_share=1.0)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for _ in range(100):
                gate.settle(await gate.acquire(500), 400)
            counts[i] += 100
            await asyncio.sleep(0)

    started = time.monotonic()
    async with asyncio.TaskGroup() as group:
        for s in shared:
            await s.__aenter__()
        for i in range(gates):
            group.create_task(work(i))
    took = time.monotonic() - started
    trips = sum(s.exchanges for s in shared)
    for s in shared:
        await s.__aexit__(None, None, None)
    for f in files:
        f.close()
    return sum(counts) / took, trips / took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=150, help="each process's job")
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--gates", default="host,redis,none")
    parser.add_argument("--window", type=float, default=5.0)
    parser.add_argument("--stagger", type=float, default=5.0)
    parser.add_argument("--counting", default="tiktoken", choices=COUNTINGS, help="what the server's TPM counts")
    parser.add_argument("--text", choices=STYLES, default="words", help="the jobs' prompts")
    parser.add_argument("--headers", choices=READINGS, default="minute", help="what the rate-limit headers report")
    parser.add_argument("--parallel", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="the admissions section's length")
    parser.add_argument("--sections", default="play,admissions")
    args = parser.parse_args()
    sections = args.sections.split(",")
    started = time.monotonic()
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        redis_url = stack.enter_context(redis_process()) if "redis" in args.gates.split(",") else ""
        plays = [
            Play(int(n), args.window, gate, args.stagger, args.counting, args.text, args.headers)
            for n in args.processes.split(",")
            for gate in (redis_url if g == "redis" else g for g in args.gates.split(","))
            if "play" in sections
        ]
        with ThreadPoolExecutor(args.parallel) as pool:
            played = dict(zip(plays, pool.map(lambda p: run_play(p, args.requests, Path(tmp)), plays), strict=True))
        if "admissions" in sections:
            url = redis_url or stack.enter_context(redis_process())
            alone, _ = asyncio.run(admissions(args.seconds, None))
            through, trips = asyncio.run(admissions(args.seconds, url))
            on_file, _ = asyncio.run(admissions(args.seconds, None, gate_file=Path(tmp) / "gate.db"))
            armed, _ = asyncio.run(admissions(args.seconds, None, gate_file=Path(tmp) / "armed.db", armed=True))
    if played:
        print(
            f"runner processes on one key, {args.requests} requests each, started {args.stagger:g} s apart; "
            f"{RPM:,} RPM / {TPM:,} TPM over a {args.window:g} s window, {args.headers} headers, counting "
            f"{args.counting} of {args.text}"
        )
        print(f"{'processes':>9} {'gate':<5} | {'together':>8} {'refused':>8} | each (while all ran)  | walls")
        for play, f in played.items():
            gate = "redis" if play.gate.startswith("redis") else play.gate
            parts = " ".join(f"{p:.0%}" for p in f.parts)
            spread = max(f.parts) / max(1e-9, min(f.parts))
            print(
                f"{play.processes:>9} {gate:<5} | {f.share:8.1%} {f.rejected:8.2%} | {parts:<14} "
                f"{spread:4.2f}x | {max(f.seconds) / min(f.seconds):.2f}x  exits {sorted(set(f.exits))}"
            )
    if "admissions" in sections:
        print(
            f"\nadmissions of 4 gates in one process, flat out for {args.seconds:g} s: alone {alone:,.0f}/s; "
            f"sharing through Redis {through:,.0f}/s ({through / alone:.2f}x), {trips:,.1f} Redis round trips/s; "
            f"through the gate file {on_file:,.0f}/s ({on_file / alone:.2f}x), its runners' bucket armed "
            f"{armed:,.0f}/s ({armed / alone:.2f}x)"
        )
    print(f"total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
