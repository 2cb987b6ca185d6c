"""A notebook's worth of runner, as a plain Python file: plan a job, run a few hundred requests against the
built-in simulator (no API key), read the answers into rows, change a few requests and run again: only those are
paid for, the rest of the answers are reused.

    python examples/notebook.py [--requests 300] [--tier tier-1] [--db notebook.db]

Against OpenAI, leave out the simulator and ``base_url``: the key comes from ``OPENAI_API_KEY``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import runner
from runner.sim import SimConfig, SimThread


def questions(count: int, changed: int = 0) -> list[dict[str, object]]:
    """``count`` chat requests; the first ``changed`` reworded (as after fixing a prompt)."""
    lines: list[dict[str, object]] = []
    for i in range(count):
        ask = "In one word" if i < changed else "One word"
        text = f"{ask}: the country of city number {i}?"
        body = {"model": "gpt-4.1-mini", "messages": [{"role": "user", "content": text}], "max_tokens": 10}
        lines.append({"custom_id": f"city-{i}", "body": body})
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--tier", default="tier-1", help="the usage tier the simulator plays and the run paces to")
    parser.add_argument("--db", default=None, help="the database (default: a temporary one)")
    args = parser.parse_args()
    db = Path(args.db or Path(tempfile.mkdtemp()) / "notebook.db")

    with SimThread(SimConfig(tier=args.tier, latency_scale=0.05)) as sim:
        # 1. what it would take, at every tier
        estimate = runner.plan(requests=args.requests, input_tokens=20, output_tokens=10, db=db)
        cost = estimate.as_json()["cost_usd"]
        print(f"plan: {estimate.workload.requests} requests, ${cost['sync']} sync, ${cost['batch']} batch")

        # 2. run them (silent; say what happens through on_event)
        report = runner.run(questions(args.requests), name="cities", db=db, base_url=sim.base_url, api_key="sim",
                            tier=args.tier)  # fmt: skip
        print(f"run: {report.counts['succeeded']} answered, spent ${report.spent}")

        # 3. answers into rows
        table = [(r.custom_id, r.text, r.cost) for r in runner.results("cities", db=db)]
        print(f"rows: {len(table)}, first {table[0]}")

        # 4. reword ten requests and run again: only those ten are sent
        said: list[str] = []
        again = runner.run(questions(args.requests, changed=10), name="cities-v2", db=db, base_url=sim.base_url,
                           api_key="sim", tier=args.tier, on_event=said.append)  # fmt: skip
        sent = sim.call(lambda: sim.sim.stats.requests)
        print(f"again: {again.counts['succeeded']} answered, {sent - args.requests} sent, spent ${again.spent}")
        print("\n".join(said))


if __name__ == "__main__":
    main()
