"""Time and peak memory to pack 1,000,000 pending requests into Batch API files.

The database is filled with realistic chat requests (about 400 bytes of body each), then each packer runs in a
fresh child process (peak RSS = ``ru_maxrss`` of that process alone):
- ``runner``: ``runner.packing.pack``, streaming rows from SQLite, 50,000 requests per file;
- ``baseline``: the usual script: fetch every pending row, ``json.loads`` each body and ``json.dumps`` each line.

    python bench/pack.py [--requests 1000000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runner.batch.packing import pack
from runner.store import RequestRow, Store


def fill(db: Path, n: int) -> None:
    store = Store(db)
    store.runs.acquire("big", None)
    rows = []
    for i in range(n):
        body = json.dumps(
            {
                "model": "gpt-4.1-mini",
                "messages": [
                    {"role": "system", "content": "Extract the invoice into JSON that follows the schema exactly."},
                    {
                        "role": "user",
                        "content": f"INVOICE {i}\nFrom: Acme Tools\nDate: 2026-03-14\n\npaper reams ..... "
                        f"{i % 997}.50 EUR\ntoner ..... 42.00 EUR\n\nTOTAL {(i % 997) + 42}.50 EUR",
                    },
                ],
                "max_tokens": 300,
                "temperature": 0,
            },
            separators=(",", ":"),
        )
        rows.append(
            RequestRow(
                f"inv-{i:07d}",
                i + 1,
                "/v1/chat/completions",
                "gpt-4.1-mini",
                body,
                hashlib.sha256(body.encode()).hexdigest(),
                95,
                300,
                1,
            )
        )
        if len(rows) == 20_000:
            with store.db.atomic():
                store.requests.add_requests("big", rows)
            rows = []
    if rows:
        with store.db.atomic():
            store.requests.add_requests("big", rows)
    store.close()


def child(kind: str, db: Path, spool: Path) -> None:
    started = time.perf_counter()
    if kind == "runner":
        store = Store(db)
        packed = pack(store, "big", spool, lambda model: None)
        files, count = len(packed), sum(p.requests for p in packed)
    else:
        import sqlite3

        conn = sqlite3.connect(db)
        rows = conn.execute(
            "SELECT custom_id, body FROM requests WHERE run='big' AND state='pending' ORDER BY id"
        ).fetchall()
        files = count = 0
        for start in range(0, len(rows), 50_000):
            with (spool / f"naive-{files}.jsonl").open("w") as f:
                for custom_id, body in rows[start : start + 50_000]:
                    f.write(
                        json.dumps(
                            {
                                "custom_id": custom_id,
                                "method": "POST",
                                "url": "/v1/chat/completions",
                                "body": json.loads(body),
                            }
                        )
                        + "\n"
                    )
                    count += 1
            files += 1
    elapsed = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": elapsed, "peak_mb": peak_mb, "files": files, "requests": count}))


def measure(kind: str, db: Path, spool: Path) -> dict[str, float]:
    spool.mkdir(exist_ok=True)
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(db), str(spool)],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--child", nargs=3, metavar=("KIND", "DB", "SPOOL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "pack.db"
        started = time.perf_counter()
        fill(db, args.requests)
        print(
            f"filled {args.requests:,} requests in {time.perf_counter() - started:.0f} s "
            f"({db.stat().st_size / 2**20:,.0f} MB database)"
        )
        naive = measure("baseline", db, Path(tmp) / "naive")
        ours = measure("runner", db, Path(tmp) / "spool")
    print(
        f"runner:   {ours['seconds']:6.1f} s, peak {ours['peak_mb']:6.0f} MB, {ours['files']:.0f} files, "
        f"{ours['requests']:,.0f} requests"
    )
    print(f"baseline: {naive['seconds']:6.1f} s, peak {naive['peak_mb']:6.0f} MB (fetch all, json round trip)")
    print(
        f"ratio runner/baseline: time {ours['seconds'] / naive['seconds']:.2f}x, "
        f"memory {ours['peak_mb'] / naive['peak_mb']:.2f}x"
    )


if __name__ == "__main__":
    main()
