"""The pacing model over many cells, this tree against an earlier commit, in one run: where a change to the gate
helps and where it costs.

``tests/pacing_model.py`` runs the real gate against the simulator's buckets on virtual time, so a cell takes a
second or two and a change can be judged over dozens of cells and several seeds before it lands (the benches
against real processes take minutes a cell). Each cell: ``--clients`` processes on one gate file (one: alone), each
with 150 requests (400 alone), started 10 s apart, requests 0-20 ms late on their way; a window (60, 5, 1 s) x the
headers (per-minute units, a clock minute's count, none) x how the server counts a request (tiktoken, characters /
4 of short words and of prose, refunded at the answer or never, 1.5x). Printed: the share of the limit the server
counted (mean of the seeds) and the share of requests refused, for ``--base`` and for this tree, and a mark where
they differ by more than half a point of the limit or 0.3 points of refusals. Under 60 s windows a run is about
as long as the window, so the server's first minute (its bucket full at the start) can show as more than 100%.

    python bench/model_cells.py [--base 35a380a] [--clients 2] [--seeds 1,2,3] [--windows 60,5,1]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READINGS = ("minute", "window", "none")
COUNTINGS = (
    ("tiktoken", "words"),
    ("chars", "words"),
    ("chars", "prose"),
    ("x1.5", "words"),
    ("chars-no-refund", "words"),
    ("chars-no-refund", "prose"),
)
PROSE = (191, 1207)  # tokens and characters of a request: the bench's English prose
WORDS = (371, 900)  # short words (the model's default)


def cells(windows: list[float]) -> list[tuple[float, str, str, str]]:
    return [(w, r, c, t) for w, r, (c, t) in itertools.product(windows, READINGS, COUNTINGS)]


def work(clients: int, seeds: list[int], windows: list[float]) -> None:
    """In a child whose ``sys.path`` starts at the tree to measure: one JSON line per cell."""
    from tests.pacing_model import simulate

    each = 400 if clients == 1 else 150
    for window, reading, counting, text in cells(windows):
        prompt, chars = PROSE if text == "prose" else WORDS
        runs = [
            simulate(
                reading=reading,
                window=window,
                counting=counting,
                prompt=(prompt, prompt),
                chars=chars,
                jitter=0.02,
                seed=seed,
                clients=clients,
                requests=each,
                stagger=10.0,
                shared=clients > 1,
            )
            for seed in seeds
        ]
        share = statistics.fmean(r.counted_share for r in runs)
        refused = statistics.fmean(r.rejected for r in runs)
        print(json.dumps([window, reading, counting, text, share, refused]), flush=True)


def measure(tree: Path, args: argparse.Namespace) -> subprocess.Popen[str]:
    command = [sys.executable, __file__, "--work", "--clients", str(args.clients), "--seeds", args.seeds]
    command += ["--windows", args.windows]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.Popen(command, cwd=tree, env=env, stdout=subprocess.PIPE, text=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="HEAD~1", help="the commit to compare with")
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--windows", default="60,5,1")
    parser.add_argument("--work", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    windows = [float(w) for w in args.windows.split(",")]
    if args.work:
        work(args.clients, seeds, windows)
        return
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "archive", args.base, "runner", "tests"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        children = [measure(Path(tmp), args), measure(ROOT, args)]  # side by side, one core each
        outputs = [child.communicate()[0] for child in children]
    if any(child.returncode for child in children):
        sys.exit("a measurement failed (its traceback is above)")
    base, now = ([json.loads(line) for line in out.splitlines()] for out in outputs)
    print(f"{args.clients} process(es) on one gate file, seeds {args.seeds}: share of the limit / refused")
    print(f"{'window headers counting text':<42} {args.base:>16} {'this tree':>16}")
    for b, n in zip(base, now, strict=True):
        window, reading, counting, text = b[:4]
        moved = n[4] - b[4] > 0.005 or b[5] - n[5] > 0.003
        lost = b[4] - n[4] > 0.005 or n[5] - b[5] > 0.003
        mark = "worse" if lost and not moved else "better" if moved and not lost else "mixed" if moved else ""
        label = f"{window:4g}s {reading:<7} {counting:<16} {text:<6}"
        print(f"{label:<42} {b[4]:7.1%} {b[5]:6.2%}  {n[4]:7.1%} {n[5]:6.2%}  {mark}")


if __name__ == "__main__":
    main()
