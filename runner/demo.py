"""``runner demo``: the bundled extraction job (jobs/demo.jsonl, shipped in the package) against an in-process
simulator.

The simulator enforces the tier's limits over one-second windows (stricter than a whole minute), with realistic
latency, so the demo shows the gate pacing a job that a naive client would get 429s on.
"""

from __future__ import annotations

from runner.commands import RunOutcome, run_job
from runner.events import to_stderr
from runner.limits import load_limits, packaged
from runner.settings import RunSettings
from runner.sim import SimConfig, SimThread
from runner.store import Store
from runner.transport import Credentials

__all__ = ["run_demo"]


def run_demo(db: str | None, tier: str, progress: bool | None) -> tuple[RunOutcome, Store]:
    limits = load_limits()
    store = Store(db or "runner-demo.db")
    with SimThread(SimConfig(tier=tier, limits=limits, window=1.0)) as sim:
        credentials = Credentials(sim.base_url, "sim-key")
        job = str(packaged("demo.jsonl"))
        outcome = run_job(
            store, job, limits, RunSettings(tier=tier), credentials, name="demo", progress=progress, say=to_stderr
        )
    return outcome, store
