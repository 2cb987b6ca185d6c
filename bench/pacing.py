"""Pacing under every reading of the rate limits, against the simulator in its own process, in one run.

The job (issue 6): 400 chat requests (371-token prompts of made-up words, whose characters / 4 count less than
the tokenizer; ``--text prose``: 191-token English prose, which counts more; ``max_tokens`` 300, answers of 20-120
tokens) at 900 RPM / 90,000 TPM, latency 0.3 s + 150 tokens/s. The matrix: what the ``x-ratelimit-*`` headers report
(``--headers minute|bucket|window|none``) x the window the simulator enforces a minute's limit over (60 s, 5 s,
1 s) x another client of the organisation using 0% or 40% of the limits (``--background-load``). Each client runs
in its own process against its own simulator:

- ``runner``: ``runner run`` as a user types it;
- ``aiolimiter``: ``AsyncLimiter(rpm, 60)`` + ``AsyncLimiter(tpm, 60)``, a 429 retried after its Retry-After;
- ``oaib``: the best installable peer, if ``pip install oaib`` worked.

Each cell shows the steady-state share of the binding limit (TPM) as the server counts it while requests waited
(with background load: of what is left), the share of requests the server refused, and how many requests ended
answered. Further sections (``--sections``):

- ``counting``: how the server's TPM limit counts a request (``runner sim --counting``: tiktoken, characters/4
  refunded at the answer or never, the larger of characters/4 and the maximum output, K x tiktoken) x window,
  headers per minute (``--counting-readings`` for others), no other client;
- ``selfplay``: 2 and 4 ``runner run`` processes with their own jobs and databases on one key, started 10 s apart,
  sharing the host's gate file (``--gate host``, the default) or pacing alone (``--gate none``): the share of the
  limit all of them used together from the first request to the last, refused, and each process's wall time (the
  slowest over the quickest);
- ``stop``: another client uses 40% and stops after 60 s: the share of the whole limit used from then on;
- ``enforcement``: the window enforced by fixed clock windows or a sliding log instead of a token bucket
  (``runner sim --enforcement``), headers per minute or the window's own count (``--enforcement-readings``),
  counted by the tokenizer (``--enforcement-counting``), no other client.

Cells run ``--parallel`` at a time (each client is light; the machine has two cores).

    python bench/pacing.py [--requests 400] [--parallel 6] [--clients runner,aiolimiter,oaib]
                           [--sections matrix,counting,selfplay,stop,enforcement]
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

from bench.common import STYLES, Sampler, sim_process, write_job
from bench.shared import RPM, TPM, Play, run_play, sim_flags
from runner.sim.buckets import ENFORCEMENTS
from runner.sim.counting import COUNTINGS

READINGS = ("minute", "bucket", "window", "none")
STOP_AFTER = 60.0  # seconds: when the other client of the ``stop`` section stops
WINDOWS = (60.0, 5.0, 1.0)
LOADS = (0.0, 0.4)
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Cell:
    client: str
    reading: str
    window: float
    load: float
    counting: str = "tiktoken"
    stops: bool = False  # the other client stops after STOP_AFTER
    enforcement: str = "bucket"


@dataclass(frozen=True)
class Figures:
    share: float  # of the binding limit (of what is left, under background load)
    rejected: float
    answered: int
    seconds: float
    note: str = ""


def run_cell(cell: Cell, job: Path, requests: int, workdir: Path) -> Figures:
    flags = sim_flags(cell.window, cell.reading, cell.load, cell.counting, cell.enforcement)
    if cell.stops:
        flags += ["--background-seconds", f"{STOP_AFTER:g}"]
    with sim_process(*flags, duration=1800) as base_url, Sampler(base_url) as sampler:
        opened = time.time()
        started = time.monotonic()
        env = {**os.environ, "OPENAI_API_KEY": "sk-bench"}
        if cell.client == "runner":
            name = f"{cell.reading}-{cell.window:g}-{cell.load:g}-{cell.counting}-{cell.stops}-{cell.enforcement}"
            db = workdir / f"{cell.client}-{name}.db"
            args = [sys.executable, "-m", "runner", "run", str(job), "--db", str(db), "--base-url", base_url]
            args += ["--rpm", str(RPM), "--tpm", str(TPM), "--no-progress"]
        else:
            args = [sys.executable, str(HERE / "clients.py"), cell.client, "--base-url", base_url, "--job", str(job)]
            args += ["--rpm", str(RPM), "--tpm", str(TPM)]
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=1500, check=False)
        seconds = time.monotonic() - started
    if done.returncode == 3 and cell.client == "oaib":
        return Figures(0, 0, 0, 0, "not installed")
    steady = sampler.steady(since=opened + STOP_AFTER if cell.stops else None)
    last = sampler.samples[-1] if sampler.samples else {"answered": 0}
    answered = min(int(last["answered"]), requests)
    if cell.client != "runner":
        try:
            answered = int(json.loads(done.stdout.strip().splitlines()[-1])["answered"])
        except (ValueError, IndexError, KeyError):
            return Figures(0, 0, 0, seconds, f"failed: {done.stderr.strip()[-200:]}")
    share = steady.counted_per_minute / TPM / (1 - (0.0 if cell.stops else cell.load))
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
    parser.add_argument("--countings", default=",".join(COUNTINGS))
    parser.add_argument("--sections", default="matrix,counting,selfplay,stop")
    parser.add_argument("--text", choices=STYLES, default="words", help="the job's prompts (not stop's)")
    parser.add_argument("--play-requests", type=int, default=200, help="each self-play process's job")
    parser.add_argument("--play-windows", default="60,5", help="the windows of the selfplay section")
    parser.add_argument("--stop-requests", type=int, default=600, help="the job of the stop section")
    parser.add_argument("--enforcement-counting", default="tiktoken", help="the counting of the enforcement section")
    parser.add_argument("--enforcement-readings", default="minute,bucket", help="the enforcement section's headers")
    parser.add_argument("--counting-readings", default="minute", help="the counting section's headers")
    args = parser.parse_args()
    clients, sections = args.clients.split(","), args.sections.split(",")
    windows = [float(w) for w in args.windows.split(",")]
    cells = []
    if "matrix" in sections:
        cells += [
            Cell(client, reading, window, float(load))
            for load in args.loads.split(",")
            for reading in args.readings.split(",")
            for window in windows
            for client in clients
        ]
    if "counting" in sections:
        cells += [
            Cell(client, reading, window, 0.0, counting)
            for counting in args.countings.split(",")
            for reading in args.counting_readings.split(",")
            for window in windows
            for client in clients
            if counting != "tiktoken" or "matrix" not in sections
        ]
    if "enforcement" in sections:
        cells += [
            Cell(client, reading, window, 0.0, args.enforcement_counting, enforcement=enforcement)
            for enforcement in ENFORCEMENTS[1:]
            for reading in args.enforcement_readings.split(",")
            for window in windows
            for client in clients
        ]
    if "stop" in sections:
        cells += [Cell(client, reading, 5.0, 0.4, stops=True) for reading in READINGS for client in clients]
    play_windows = [float(w) for w in args.play_windows.split(",")]
    plays = [Play(n, w, g) for n in (2, 4) for w in play_windows for g in ("host", "none")]
    plays = plays if "selfplay" in sections else []
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        job = write_job(Path(tmp) / "pacing.jsonl", args.requests, words=180, max_tokens=300, style=args.text)
        long_job = write_job(Path(tmp) / "stop.jsonl", args.stop_requests, words=180, max_tokens=300)

        def run(c: Cell) -> Figures:
            return (
                run_cell(c, long_job, args.stop_requests, Path(tmp))
                if c.stops
                else run_cell(c, job, args.requests, Path(tmp))
            )

        with ThreadPoolExecutor(args.parallel) as pool:
            results = dict(zip(cells, pool.map(run, cells), strict=True))
        with ThreadPoolExecutor(2) as pool:  # each cell runs up to four processes
            played = dict(zip(plays, pool.map(lambda p: run_play(p, args.play_requests, Path(tmp)), plays),
                              strict=True))  # fmt: skip
    width = 26
    print(
        f"{args.requests} requests, {RPM:,} RPM / {TPM:,} TPM, latency 0.3 s + 150 tok/s; each cell: share of TPM "
        "as the server counts it, in steady state (of what is left under background load) / share of requests "
        "refused / answered"
    )

    def table(title: str, rows: list[tuple[str, list[Cell]]]) -> None:
        if not rows:
            return
        print(f"\n{title}")
        print(f"{'':<28} | " + " | ".join(f"{c:^{width}}" for c in clients))
        for label, row in rows:
            texts = []
            for cell in row:
                f = results[cell]
                total = args.stop_requests if cell.stops else args.requests
                texts.append(f.note or f"{f.share:6.1%} {f.rejected:6.2%} {f.answered:>4}/{total}")
            print(f"{label:<28} | " + " | ".join(f"{t:^{width}}" for t in texts))

    matrix = [
        c
        for c in cells
        if c.counting == "tiktoken" and not c.stops and c.enforcement == "bucket" and "matrix" in sections
    ]
    table(
        "headers x window x other use (load), counting tiktoken",
        [
            (f"{c.load:4.0%} {c.reading:<7} {c.window:5g}s", [Cell(k, c.reading, c.window, c.load) for k in clients])
            for c in matrix
            if c.client == clients[0]
        ],
    )
    table(
        "counting x window (no other client)",
        [
            (
                f"{c.counting:<15} {c.reading:<6} {c.window:4g}s",
                [Cell(k, c.reading, c.window, 0.0, c.counting) for k in clients],
            )
            for c in cells
            if c.client == clients[0] and c.counting != "tiktoken" and not c.stops and c.enforcement == "bucket"
        ],
    )
    table(
        f"enforced by fixed clock windows or a sliding log, counting {args.enforcement_counting}, no other client",
        [
            (
                f"{c.enforcement:<7} {c.reading:<7} {c.window:5g}s",
                [Cell(k, c.reading, c.window, 0.0, c.counting, enforcement=c.enforcement) for k in clients],
            )
            for c in cells
            if c.client == clients[0] and c.enforcement != "bucket"
        ],
    )
    table(
        f"another client uses 40% and stops after {STOP_AFTER:g} s (5 s window): share of the whole limit from then on",
        [
            (f"{c.reading:<7}", [Cell(k, c.reading, 5.0, 0.4, stops=True) for k in clients])
            for c in cells
            if c.client == clients[0] and c.stops
        ],
    )
    if played:
        print(f"\nrunner processes on one key, {args.play_requests} requests each, started 10 s apart (minute headers)")
        for play, f in played.items():
            walls = ", ".join(f"{s:.0f}" for s in f.seconds)
            print(
                f"{play.processes} processes, {play.window:5g}s window, gate {play.gate:<4} | together "
                f"{f.share:6.1%} of TPM, "
                f"{f.rejected:6.2%} refused | seconds each: {walls} (slowest {max(f.seconds) / min(f.seconds):.2f}x "
                f"the quickest) | exits {set(f.exits)}"
            )
    print(f"total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
