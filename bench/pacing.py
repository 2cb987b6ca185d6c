"""Pacing under every reading of the rate limits, against the simulator in its own process, in one run.

The job (issue 6): 400 chat requests (~190-token prompts, ``max_tokens`` 300, answers of 20-120 tokens) at
900 RPM / 90,000 TPM, latency 0.3 s + 150 tokens/s. The matrix: what the ``x-ratelimit-*`` headers report
(``--headers minute|bucket|window|none``) x the window the simulator enforces a minute's limit over (60 s, 5 s,
1 s) x another client of the organisation using 0% or 40% of the limits (``--background-load``). Each client runs
in its own process against its own simulator:

- ``runner``: ``runner run`` as a user types it;
- ``aiolimiter``: ``AsyncLimiter(rpm, 60)`` + ``AsyncLimiter(tpm, 60)``, a 429 retried after its Retry-After;
- ``oaib``: the best installable peer, if ``pip install oaib`` worked.

Each cell shows the steady-state share of the binding limit (TPM) in real tokens while requests waited (with
background load: of what is left), the share of requests the server refused, and how many requests ended
answered. Cells run ``--parallel`` at a time (each client is light; the machine has two cores).

    python bench/pacing.py [--requests 400] [--parallel 6] [--clients runner,aiolimiter,oaib]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Sampler, sim_process, write_job

RPM, TPM = 900, 90_000
READINGS = ("minute", "bucket", "window", "none")
WINDOWS = (60.0, 5.0, 1.0)
LOADS = (0.0, 0.4)
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Cell:
    client: str
    reading: str
    window: float
    load: float


@dataclass(frozen=True)
class Figures:
    share: float  # of the binding limit (of what is left, under background load)
    rejected: float
    answered: int
    seconds: float
    note: str = ""


def run_cell(cell: Cell, job: Path, requests: int, workdir: Path) -> Figures:
    flags = [
        *("--tier", "tier-1", "--rpm", str(RPM), "--tpm", str(TPM), "--rpd", "1000000000"),
        *("--window", f"{cell.window:g}", "--headers", cell.reading),
        *("--background-load", f"{cell.load:g}", "--first-token", "0.3", "--tokens-per-second", "150"),
    ]
    with sim_process(*flags, duration=1800) as base_url, Sampler(base_url) as sampler:
        started = time.monotonic()
        env = {**os.environ, "OPENAI_API_KEY": "sk-bench"}
        if cell.client == "runner":
            db = workdir / f"{cell.client}-{cell.reading}-{cell.window:g}-{cell.load:g}.db"
            args = [sys.executable, "-m", "runner", "run", str(job), "--db", str(db), "--base-url", base_url]
            args += ["--rpm", str(RPM), "--tpm", str(TPM), "--no-progress"]
        else:
            args = [sys.executable, str(HERE / "clients.py"), cell.client, "--base-url", base_url, "--job", str(job)]
            args += ["--rpm", str(RPM), "--tpm", str(TPM)]
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=1500, check=False)
        seconds = time.monotonic() - started
    if done.returncode == 3 and cell.client == "oaib":
        return Figures(0, 0, 0, 0, "not installed")
    steady = sampler.steady()
    last = sampler.samples[-1] if sampler.samples else {"answered": 0}
    answered = min(int(last["answered"]), requests)
    if cell.client != "runner":
        try:
            answered = int(json.loads(done.stdout.strip().splitlines()[-1])["answered"])
        except (ValueError, IndexError, KeyError):
            return Figures(0, 0, 0, seconds, f"failed: {done.stderr.strip()[-200:]}")
    share = steady.tokens_per_minute / TPM / (1 - cell.load)
    rejected = steady.rejected / max(1, steady.requests)
    return Figures(share, rejected, answered, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--parallel", type=int, default=6)
    parser.add_argument("--clients", default="runner,aiolimiter,oaib")
    parser.add_argument("--readings", default=",".join(READINGS))
    parser.add_argument("--windows", default=",".join(f"{w:g}" for w in WINDOWS))
    parser.add_argument("--loads", default=",".join(f"{x:g}" for x in LOADS))
    args = parser.parse_args()
    clients = args.clients.split(",")
    cells = [
        Cell(client, reading, float(window), float(load))
        for load in args.loads.split(",")
        for reading in args.readings.split(",")
        for window in args.windows.split(",")
        for client in clients
    ]
    with tempfile.TemporaryDirectory() as tmp:
        job = write_job(Path(tmp) / "pacing.jsonl", args.requests, words=180, max_tokens=300)
        started = time.monotonic()
        with ThreadPoolExecutor(args.parallel) as pool:
            figures = pool.map(lambda c: run_cell(c, job, args.requests, Path(tmp)), cells)
            results = dict(zip(cells, figures, strict=True))
    print(
        f"{args.requests} requests, {RPM:,} RPM / {TPM:,} TPM, latency 0.3 s + 150 tok/s; each cell: share of TPM "
        "in steady state (of what is left under background load) / share of requests refused / answered"
    )
    width = 26
    print(f"{'load':>4} {'headers':<7} {'window':>6} | " + " | ".join(f"{c:^{width}}" for c in clients))
    for load in args.loads.split(","):
        for reading in args.readings.split(","):
            for window in args.windows.split(","):
                row = []
                for client in clients:
                    f = results[Cell(client, reading, float(window), float(load))]
                    text = f.note or f"{f.share:6.1%} {f.rejected:6.2%} {f.answered:>4}/{args.requests}"
                    row.append(f"{text:^{width}}")
                print(f"{float(load):4.0%} {reading:<7} {float(window):5g}s | " + " | ".join(row))
    print(f"total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
