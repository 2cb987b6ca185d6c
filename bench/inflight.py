"""Requests in flight at Tier 5: Little's law from the first second.

6,000 small requests against the simulator in its own process at tier-5 numbers for gpt-4.1-mini (30,000 RPM,
500 requests/s) with every answer taking 6 s: keeping the limit busy needs 500 x 6 = 3,000 requests in flight.
Compared in the same run with raw aiohttp holding 3,000 connections, paced at the tier's rate
(``AsyncLimiter(500, 1)``: what a hand-written client that respects the limit does; the issue's aim is 90% of
it), and unpaced (it spends the minute's allowance in a burst the server lets through: the transport's ceiling on
this machine, the simulator sharing its two cores, not a rate a client may hold).

Figures, from the simulator's side: the job's requests/s, from the first request received to the last answer
sent (what a user waits for; the issue's own measure), the most requests it held at once, and how many it
refused.

    python bench/inflight.py [--requests 6000] [--latency 6]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import sim_process, stats, write_job

HERE = Path(__file__).resolve().parent


def measure(args: list[str], base_url: str) -> tuple[float, int, int, float]:
    """Run a client; returns (the job's requests/s, peak in flight, refused, wall seconds)."""
    started = time.monotonic()
    done = subprocess.run(
        args, env={**os.environ, "OPENAI_API_KEY": "sk-bench"}, capture_output=True, text=True, check=False
    )
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{args[2:4]} failed ({done.returncode}): {done.stderr[-500:]}")
    final = stats(base_url)
    took = max(1e-9, float(final["last_reply_at"]) - float(final["first_request_at"]))
    return int(final["answered"]) / took, int(final["max_in_flight"]), int(final["rate_limited"]), wall


RATE = 500  # tier-5 gpt-4.1-mini: 30,000 RPM


def _raw(flags: list[str], job: Path, extra: list[str]) -> tuple[float, int, int, float]:
    with sim_process(*flags) as base_url:
        command = [sys.executable, str(HERE / "clients.py"), "raw", "--base-url", base_url, "--job", str(job),
                   "--connections", "3000", *extra]  # fmt: skip
        return measure(command, base_url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--latency", type=float, default=6.0)
    args = parser.parse_args()
    flags = ["--tier", "tier-5", "--first-token", f"{args.latency:g}", "--tokens-per-second", "0"]
    with tempfile.TemporaryDirectory() as tmp:
        job = write_job(Path(tmp) / "inflight.jsonl", args.requests)
        with sim_process(*flags) as base_url:
            db = Path(tmp) / "inflight.db"
            ours = measure(
                [
                    sys.executable,
                    "-m",
                    "runner",
                    "run",
                    str(job),
                    "--tier",
                    "tier-5",
                    "--base-url",
                    base_url,
                    "--db",
                    str(db),
                    "--no-progress",
                ],
                base_url,
            )
        raw = [
            _raw(flags, job, ["--per-second", str(RATE)]),
            _raw(flags, job, []),
        ]
    print(f"{args.requests:,} requests, tier-5 (30,000 RPM = 500/s), every answer {args.latency:g} s;")
    print("requests/s of the job: from the first request received to the last answer sent")
    print(f"runner run:                      {ours[0]:6.0f} req/s, peak {ours[1]:5,} in flight, {ours[2]} refused"
          f" ({ours[3]:.1f} s wall)")  # fmt: skip
    for name, (rate, peak, refused, wall) in zip(("paced at 500/s", "unpaced"), raw, strict=True):
        print(f"raw aiohttp, {name + ':':19s}{rate:6.0f} req/s, peak {peak:5,} in flight, {refused} refused"
              f" ({wall:.1f} s wall)   runner / it: {ours[0] / rate:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
