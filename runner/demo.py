"""``runner demo``: the bundled extraction job (jobs/demo.jsonl) against an in-process simulator.

The simulator enforces the tier's limits over one-second windows (stricter than a whole minute), with realistic
latency, so the demo shows the gate pacing a job that a naive client would get 429s on.
"""

from __future__ import annotations

from pathlib import Path

from runner.app import RunOutcome, run_job
from runner.errors import ConfigError
from runner.limits import load_limits
from runner.sim import SimConfig, SimThread
from runner.store import Store
from runner.sync import RunSettings
from runner.transport import Credentials

__all__ = ["demo_job", "run_demo"]


def demo_job() -> Path:
    """jobs/demo.jsonl of the checkout (the README installs runner editable from it)."""
    job = Path(__file__).resolve().parent.parent / "jobs" / "demo.jsonl"
    if not job.is_file():
        raise ConfigError(f"{job} not found: run the demo from a checkout (pip install -e .)")
    return job


def run_demo(db: str | None, tier: str, progress: bool | None) -> tuple[RunOutcome, Store]:
    limits = load_limits()
    store = Store(db or "runner-demo.db")
    with SimThread(SimConfig(tier=tier, limits=limits, window=1.0)) as sim:
        credentials = Credentials(sim.base_url, "sim-key")
        outcome = run_job(
            store, str(demo_job()), limits, RunSettings(tier=tier), credentials, "demo", progress=progress
        )
    return outcome, store
