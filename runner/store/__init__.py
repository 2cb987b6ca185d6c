"""The runner database: runs, requests, results, spend, daily usage, batches (SQLite, WAL).

Invariants, kept by this package alone (nothing else in ``runner`` writes SQL):
- A request moves only along ``states.TRANSITIONS``, by name (``Move``); each move is one ``UPDATE ... WHERE
  id=? AND state IN (sources)`` and a move that changes no row raises ``StateConflict``.
- A request has at most one row in ``results`` (its primary key is the request id): answered exactly once.
- A spend row is written in the same transaction as the result of the response that was billed.
- One live process owns a run at a time (``runs.owner`` + heartbeat). On taking a run over, requests left
  ``in_flight`` by a dead owner go back to ``pending``.
- A batch row moves only along ``batches.BATCH_MOVES``; its intents are written before the API call they announce.

``Store`` is one object with the parts' named operations: ``runs`` (ownership), ``requests`` (ingest, queue,
outcomes), ``results`` (results, spend, daily usage), ``batches`` (the batch book, packing reads).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from runner.store.base import Clock
from runner.store.batches import BATCH_MOVES, QUEUED, Batches, BatchRow, BatchState, PackedLine
from runner.store.migrations import migrations
from runner.store.requests import Claimed, Outcome, RequestRow, Requests
from runner.store.runs import Runs
from runner.store.states import FINAL, TRANSITIONS, Move, State

__all__ = [
    "BATCH_MOVES",
    "FINAL",
    "QUEUED",
    "TRANSITIONS",
    "BatchRow",
    "BatchState",
    "Claimed",
    "Move",
    "Outcome",
    "PackedLine",
    "RequestRow",
    "State",
    "Store",
    "default_db_path",
    "dumps",
]


class Store(Runs, Requests, Batches):
    """One SQLite database; ``clock`` is injectable so lease and heartbeat logic is tested without sleeping."""

    def __init__(self, path: str | Path, clock: Clock = time.time) -> None:
        self.path = str(path)
        self.clock = clock
        conn = sqlite3.connect(self.path, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        self.db = Database(conn)
        migrations.apply(self.db)
        self.conn = conn

    def __repr__(self) -> str:
        return f"<Store {self.path}>"

    def close(self) -> None:
        self.conn.close()


def default_db_path() -> str:
    return os.environ.get("RUNNER_DB", "runner.db")


def dumps(value: Any) -> str:
    """Compact JSON as stored: no spaces, text as it is."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
