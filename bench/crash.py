"""Crash-and-fault harness: kill -9 the runner again and again, under injected faults, and check that every request
still ends answered exactly once, that nothing is paid twice beyond what was in flight at a kill, that no batch is
created twice, and that the spend recorded equals the simulator's bill.

    python bench/crash.py --trials 20 --requests 150 --mode both --fault-rate 0.07 --seed 1

Each trial starts a fresh simulator (its own process, its own seed) that injects faults (500, 503, resets,
timeouts; in batch mode failed lines too), then runs ``runner run`` on a fresh database 1-4 times, each time
killed (SIGKILL) either after a random delay or at a named crash point (``runner.crash``: sending, answered,
recorded; after_upload, after_create, polling, downloading, recording) on a random pass, then once more to the
end. Then it reads the database and the simulator's books:

- lost: input requests without a final result (must be 0)
- duplicated: custom_ids with more than one result line, batches created twice for a chunk (must be 0)
- paid twice: answers the simulator billed beyond one per request; a kill can lose at most the answers in flight
  (sync: the in-flight bound x kills; batch: 0, since the server keeps batches and the next run collects them)
- spend diff: the simulator's bill minus the spend recorded; the cost of the paid-twice answers, so 0 without them

Exit 1 if any trial breaks a rule. The baseline printed beside it is the same run with no kills (its spend must
equal the bill exactly).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import sim_process, stats, write_job
from runner.commands import export_results
from runner.money import usd
from runner.store import Store

SYNC_POINTS = ("sending", "answered", "recorded")
BATCH_POINTS = ("after_upload", "after_create", "polling", "downloading", "recording")
RUN_SECONDS = 180  # the most one runner process may take (bounded: every loop here ends by itself)


@dataclass
class Trial:
    mode: str
    seed: int
    kills: list[str] = field(default_factory=list[str])  # how each kill came: "timer 0.8s" or "at answered@3"
    exit_code: int = 0
    lost: int = 0
    duplicated: int = 0
    batches_twice: int = 0
    paid_twice: int = 0
    bound: int = 0
    spend_diff: int = 0  # picodollars: the bill minus what was recorded
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        clean = self.lost == 0 and self.duplicated == 0 and self.batches_twice == 0 and self.exit_code == 0
        paid = self.paid_twice <= self.bound and (self.paid_twice > 0 or self.spend_diff == 0)
        return clean and paid and self.spend_diff >= 0


def runner_args(job: Path, base_url: str, mode: str) -> list[str]:
    return [sys.executable, "-m", "runner", "run", str(job), "--mode", mode, "--base-url", base_url,
            "--rpm", "3000", "--tpm", "2000000", "--poll-every", "0.2", "--grace", "0"]  # fmt: skip


def one_process(args: list[str], env: dict[str, str], kill_after: float | None) -> int:
    """Run one runner process; SIGKILL it after ``kill_after`` seconds if it is still going. Its exit code."""
    child = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return child.wait(timeout=kill_after if kill_after is not None else RUN_SECONDS)
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGKILL)
        return child.wait(timeout=30)
    finally:
        if child.poll() is None:  # pragma: no cover - a runner that outlived its bound
            child.kill()
            child.wait()


def batches_created_twice(base_url: str) -> int:
    """Chunks of a run for which the simulator holds more than one batch."""
    chunks: Counter[tuple[str, str, str]] = Counter()
    after = None
    while True:
        query = "?limit=100" + (f"&after={after}" if after else "")
        with urllib.request.urlopen(f"{base_url}/batches{query}", timeout=30) as r:
            page = json.loads(r.read())
        for batch in page["data"]:
            meta = batch.get("metadata") or {}
            chunks[(meta.get("runner_store", ""), meta.get("runner_run", ""), meta.get("runner_chunk", ""))] += 1
        if not page.get("has_more"):
            return sum(n - 1 for n in chunks.values() if n > 1)
        after = page["data"][-1]["id"]


def run_trial(mode: str, seed: int, requests: int, fault_rate: float, kills: int | None, folder: Path) -> Trial:
    rng = random.Random(seed)
    trial = Trial(mode, seed)
    started = time.monotonic()
    job = write_job(folder / "job.jsonl", requests, max_tokens=40)
    env = {**os.environ, "OPENAI_API_KEY": "sk-crash", "RUNNER_DB": str(folder / "crash.db")}
    sim_flags = ["--rpm", "3000", "--tpm", "2000000", "--window", "1", "--latency-scale", "0.3",
                 "--fault-rate", str(fault_rate), "--hang-seconds", "1", "--batch-seconds", "1.5",
                 "--batch-line-error-rate", str(fault_rate), "--seed", str(seed)]  # fmt: skip
    with sim_process(*sim_flags, duration=RUN_SECONDS * 8) as base_url:
        args = runner_args(job, base_url, mode)
        for _ in range(rng.randint(1, 4) if kills is None else kills):
            if rng.random() < 0.5:
                delay = rng.uniform(0.2, 3.0)
                code = one_process(args, env, delay)
                how = f"timer {delay:.1f}s"
            else:
                point = rng.choice(SYNC_POINTS if mode == "sync" else BATCH_POINTS)
                nth = rng.randint(1, 40) if mode == "sync" else rng.randint(1, 3)
                code = one_process(args, {**env, "RUNNER_CRASH_AT": f"{point}@{nth}"}, None)
                how = f"at {point}@{nth}"
            if code == -signal.SIGKILL:
                trial.kills.append(how)
            elif code == 0:
                break  # it finished before the kill came
        trial.exit_code = one_process(args, env, None)
        books = stats(base_url)
        trial.batches_twice = batches_created_twice(base_url)
    store = Store(folder / "crash.db", readonly=True)
    try:
        lines = [json.loads(x) for x in export_results(store, "job")]
        ids = Counter(x["custom_id"] for x in lines)
        trial.lost = sum(1 for i in range(requests) if f"r{i}" not in ids)
        trial.duplicated = sum(n - 1 for n in ids.values() if n > 1)
        answered = sum(1 for x in lines if x.get("response") and x["response"]["status_code"] == 200)
        recorded = sum(int(r["cost"]) for r in store.results.spend_by("job"))
    finally:
        store.close()
    trial.paid_twice = int(books["answered"]) - answered
    in_flight = int(books["max_in_flight"])  # the most the runner ever had in flight at once
    trial.bound = in_flight * len(trial.kills) if mode == "sync" else 0
    trial.spend_diff = int(books["spend_picodollars"]) - recorded
    trial.seconds = time.monotonic() - started
    return trial


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20, help="trials per mode")
    parser.add_argument("--requests", type=int, default=150)
    parser.add_argument("--mode", choices=["sync", "batch", "both"], default="both")
    parser.add_argument("--fault-rate", type=float, default=0.07)
    parser.add_argument("--seed", type=int, default=1)
    options = parser.parse_args(argv)
    modes = ["sync", "batch"] if options.mode == "both" else [options.mode]
    failed = 0
    print(f"{options.trials} trials per mode, {options.requests} requests each, {options.fault_rate:.0%} faults")
    for mode in modes:
        with tempfile.TemporaryDirectory(prefix="runner-crash-") as tmp:
            baseline = run_trial(mode, options.seed, options.requests, options.fault_rate, 0, Path(tmp))
        print(f"\n{mode}: baseline without kills: lost {baseline.lost}, paid twice {baseline.paid_twice}, "
              f"spend diff ${usd(baseline.spend_diff)} ({baseline.seconds:.1f}s)")  # fmt: skip
        failed += not baseline.ok
        trials = []
        for t in range(options.trials):
            with tempfile.TemporaryDirectory(prefix="runner-crash-") as tmp:
                trial = run_trial(mode, options.seed * 1000 + t, options.requests, options.fault_rate, None, Path(tmp))
            trials.append(trial)
            verdict = "ok" if trial.ok else "BROKEN"
            print(f"  trial {t + 1:>3} seed {trial.seed}: {len(trial.kills)} kills ({', '.join(trial.kills) or '-'}); "
                  f"lost {trial.lost}, duplicated {trial.duplicated}, batches twice {trial.batches_twice}, paid twice "
                  f"{trial.paid_twice} (bound {trial.bound}), spend diff ${usd(trial.spend_diff)}, exit "
                  f"{trial.exit_code}, {trial.seconds:.1f}s: {verdict}")  # fmt: skip
            failed += not trial.ok
        print(f"{mode}: {len(trials)} trials, {sum(len(t.kills) for t in trials)} kills "
              f"({sum(1 for t in trials for k in t.kills if k.startswith('at '))} at named points); "
              f"lost {sum(t.lost for t in trials)}, duplicated {sum(t.duplicated for t in trials)}, batches created "
              f"twice {sum(t.batches_twice for t in trials)}, paid twice {sum(t.paid_twice for t in trials)} "
              f"(bound {sum(t.bound for t in trials)}), spend diff ${usd(sum(t.spend_diff for t in trials))}; "
              f"{sum(not t.ok for t in trials)} broken")  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
