"""Million-request jobs: ingest, claiming, the send rate with a huge queue, and resuming a finished job.

    python bench/scale.py [--requests 1000000] [--small 20000] [--seconds 8] [--batch 200000]

Prints, each next to its same-run baseline:
- ingest of the job (parse, count tokens, store): lines/s, the peak memory of the ingesting process and of each
  parser process it starts (a big input is parsed on every core), database and WAL size;
- the cost of one claim (256 requests) with every request pending, against a job of ``--small`` requests;
- the send rate of ``runner run`` against a zero-latency simulator (limits lifted) for ``--seconds``, with the big
  queue pending and with the small one;
- a finished big job with one line appended: time from starting ``runner run`` to the simulator receiving the new
  request (the job's other requests are marked answered directly in the database, to stand for a finished run);
- batch mode end to end on ``--batch`` requests: time and the largest process's peak memory;
- packing ``--requests`` into batch files against the naive packer (``bench/pack.py``, in the same run).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from common import Sampler, sim_process, stats, write_job

UNLIMITED = ("--tier", "tier-5", "--latency-scale", "0", "--rpm", "100000000", "--tpm", "100000000000")
RUN_LIMITS = ("--tier", "tier-5", "--rpm", "100000000", "--tpm", "100000000000", "--no-progress")


def child_ingest(job: str, db: str) -> None:
    from runner.jobfile import ingest
    from runner.limits import load_limits
    from runner.store import Store

    store = Store(db)
    owner = store.runs.acquire("job", job)
    started = time.perf_counter()
    report = ingest(store, "job", job, load_limits())
    seconds = time.perf_counter() - started
    store.runs.release("job", owner)
    wal = Path(db + "-wal")
    wal_mb = wal.stat().st_size / 2**20 if wal.exists() else 0.0
    store.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    parsers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest parser process, if any
    print(json.dumps({"lines": report.added, "seconds": seconds, "peak_mb": peak, "parser_mb": parsers,
                      "wal_mb": wal_mb}))  # fmt: skip


def ingest_in_child(job: Path, db: Path) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child-ingest", str(job), str(db)], capture_output=True,
                         text=True, check=True)  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def claim_ms(db: Path, claims: int = 40, size: int = 256) -> float:
    from runner.store import Store

    store = Store(db)
    owner = store.runs.acquire("job", "bench")
    started = time.perf_counter()
    for _ in range(claims):
        assert store.requests.claim("job", owner, size)
    seconds = time.perf_counter() - started
    store.conn.execute("UPDATE requests SET state='pending', lease_owner=NULL WHERE state='in_flight'")
    store.conn.commit()
    store.runs.release("job", owner)
    store.close()
    return seconds / claims * 1000


def send_rate(job: Path, db: Path, seconds: float) -> float:
    """Requests the simulator answered per second while ``runner run`` had the queue of ``db`` to send."""
    with sim_process(*UNLIMITED) as base_url, Sampler(base_url, every=0.25) as sampler:
        env = {**os.environ, "OPENAI_API_KEY": "sk-bench"}
        args = [
            "run",
            str(job),
            "--name",
            "job",
            "--db",
            str(db),
            "--base-url",
            base_url,
            "--deadline",
            f"{seconds}s",
            *RUN_LIMITS,
        ]
        command = [sys.executable, "-m", "runner", *args]
        ran = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if ran.returncode not in (0, 3):
        raise SystemExit(f"runner run failed ({ran.returncode}): {ran.stderr[-500:]}")
    return sampler.steady(warmup=1.0).requests_per_minute / 60


def first_request_seconds(job: Path, db: Path) -> float:
    """Start ``runner run`` on a finished job with one appended line; seconds until the simulator has it."""
    from runner.store import Store

    store = Store(db)
    store.conn.execute("UPDATE requests SET state='succeeded' WHERE run='job'")  # stands for a finished run
    store.conn.commit()
    store.close()
    with job.open("a") as f:
        f.write(json.dumps({"custom_id": "appended", "body": {"model": "gpt-4.1-mini", "max_tokens": 5,
                            "messages": [{"role": "user", "content": "One more."}]}}) + "\n")  # fmt: skip
    with sim_process(*UNLIMITED) as base_url:
        seen = threading.Event()
        started = time.perf_counter()
        env = {**os.environ, "OPENAI_API_KEY": "sk-bench"}
        args = ["run", str(job), "--name", "job", "--db", str(db), "--base-url", base_url, *RUN_LIMITS]
        child = subprocess.Popen([sys.executable, "-m", "runner", *args], env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)  # fmt: skip
        took = float("nan")
        deadline = started + 120
        while time.perf_counter() < deadline and not seen.is_set():
            if stats(base_url)["requests"] > 0:
                took = time.perf_counter() - started
                seen.set()
            time.sleep(0.01)
        child.wait(timeout=120)
    return took


def batch_mode(requests: int, folder: Path) -> tuple[float, float]:
    """``runner run --mode batch`` on a job of ``requests`` lines against a simulator finishing batches in 2 s:
    (wall seconds, peak memory in MB of the largest process: the runner or one of its parser processes)."""
    job = write_job(folder / "batch.jsonl", requests)
    with sim_process("--latency-scale", "0", "--batch-seconds", "2", duration=3600) as base_url:
        env = {**os.environ, "OPENAI_API_KEY": "sk-bench"}
        args = ["run", str(job), "--mode", "batch", "--tier", "tier-5", "--db", str(folder / "batch.db"),
                "--base-url", base_url, "--no-progress", "--poll-every", "1"]  # fmt: skip
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "runner", *args], env=env, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)  # this run's own usage (its parser processes included)
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"batch mode run failed ({child.returncode})")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--batch", type=int, default=200_000, help="requests of the batch-mode run (0: none)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        big_job = write_job(folder / "big.jsonl", args.requests)
        small_job = write_job(folder / "small.jsonl", args.small)
        big_db, small_db = folder / "big.db", folder / "small.db"
        big = ingest_in_child(big_job, big_db)
        small = ingest_in_child(small_job, small_db)
        db_mb = big_db.stat().st_size / 2**20
        print(f"jobs: {args.requests:,} and {args.small:,} requests")
        for n, r in ((args.requests, big), (args.small, small)):
            parsers = f" + parser processes {r['parser_mb']:.0f} MB each" if r["parser_mb"] else ""
            print(f"ingest {n:>9,}: {r['lines'] / r['seconds']:9,.0f} lines/s  peak {r['peak_mb']:6.0f} MB{parsers}")
        print(f"database {db_mb:,.0f} MB, WAL after ingest {big['wal_mb']:,.0f} MB")
        big_claim, small_claim = claim_ms(big_db), claim_ms(small_db)
        print(f"claim of 256 with {args.requests:,} pending: {big_claim:6.2f} ms; with {args.small:,}: "
              f"{small_claim:6.2f} ms ({big_claim / small_claim:.2f}x)")  # fmt: skip
        big_rate, small_rate = send_rate(big_job, big_db, args.seconds), send_rate(small_job, small_db, args.seconds)
        print(f"send rate with {args.requests:,} pending: {big_rate:7,.0f} req/s; with {args.small:,}: "
              f"{small_rate:7,.0f} req/s ({big_rate / small_rate:.2f}x)")  # fmt: skip
        took = first_request_seconds(big_job, big_db)
        print(f"finished {args.requests:,}-line job + 1 appended line: first request sent after {took:.2f} s")
        if args.batch:
            seconds, peak = batch_mode(args.batch, folder)
            print(f"batch mode, {args.batch:,} requests end to end: {seconds:.0f} s, peak {peak:.0f} MB")
    packing = subprocess.run([sys.executable, str(Path(__file__).with_name("pack.py")), "--requests",
                              str(args.requests)], capture_output=True, text=True, check=True)  # fmt: skip
    print("packing (bench/pack.py):", *packing.stdout.strip().splitlines()[-3:], sep="\n  ")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child-ingest":
        child_ingest(sys.argv[2], sys.argv[3])
    else:
        main()
