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
outcomes), ``results`` (results, spend, daily usage), ``batches`` (the batch book, packing reads), ``history``
(what the planner learns: stated limits, batch turnarounds, output use and latency, a run's plan),
``extractions`` (the validated table of each extraction).
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from sqlite_utils import Database

from runner.errors import ConfigError
from runner.rows import RequestRow, RowValues
from runner.store.base import Base, Clock
from runner.store.batches import BATCH_MOVES, QUEUED, Batches, BatchRow, BatchState, PackedLine
from runner.store.extractions import Extractions
from runner.store.history import Calibration, History, StatedLimits
from runner.store.migrations import known as migrations_known
from runner.store.migrations import migrations
from runner.store.outcomes import Claimed, Outcome
from runner.store.requests import Requests
from runner.store.results import Results
from runner.store.runs import Runs
from runner.store.states import FINAL, TRANSITIONS, Move, State

__all__ = [
    "BATCH_MOVES",
    "FINAL",
    "QUEUED",
    "TRANSITIONS",
    "BatchRow",
    "BatchState",
    "Calibration",
    "Claimed",
    "Move",
    "Outcome",
    "PackedLine",
    "RequestRow",
    "RowValues",
    "State",
    "StatedLimits",
    "Store",
    "default_db_path",
]


class Store(Base):
    """One SQLite database, in parts over its one connection: ``runs``, ``requests``, ``results``, ``batches``,
    ``history`` and ``extractions`` (e.g. ``store.requests.claim(...)``, ``store.batches.move(...)``). ``clock`` is
    injectable so lease and heartbeat logic is tested without sleeping.

    Opening checks what a user can get wrong and says so in one line (``ConfigError``): a missing folder, a
    directory, a file that is not a runner database (or is damaged), one written by a newer runner. A new database
    is created readable by its owner only (SQLite gives its WAL the same permissions). ``readonly`` opens without
    writing anything (read commands; they work on a read-only disk too)."""

    def __init__(self, path: str | Path, clock: Clock = time.time, readonly: bool = False) -> None:
        self.path = str(path)
        self.clock = clock
        self.readonly = readonly
        conn = _connect(Path(path), readonly)
        try:
            self.db = Database(conn)
            self.conn = conn
            self._check_schema()
            if not readonly:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA foreign_keys=ON")
                migrations.apply(self.db)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise _problem(self.path, exc) from exc
        self.runs = Runs(self)
        self.results = Results(self)
        self.requests = Requests(self, self.runs, self.results)
        self.batches = Batches(self, self.results)
        self.history = History(self)
        self.extractions = Extractions(self)

    @property
    def store_id(self) -> str:
        """A random id of this database, written into each batch's metadata and told to the shared gate."""
        return str(self.conn.execute("SELECT value FROM meta WHERE key='store_id'").fetchone()[0])

    @property
    def takeovers(self) -> list[str]:
        return self.runs.takeovers

    def __repr__(self) -> str:
        return f"<Store {self.path}{' (read-only)' if self.readonly else ''}>"

    def close(self) -> None:
        self.conn.close()

    def checkpoint(self) -> None:
        """Fold the write-ahead log into the database and truncate it (after a large ingest the WAL is as big as
        what was written: without this the disk holds the job twice until SQLite gets round to it)."""
        if not self.readonly:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _check_schema(self) -> None:
        applied = [m.name for m in migrations.applied(self.db)]
        known = migrations_known()
        newer = [name for name in applied if name not in known]
        if newer:
            raise ConfigError(
                f"{self.path} was written by a newer runner (schema {newer[-1]}; this runner knows up to "
                f"{known[-1]}): upgrade runner to use it"
            )
        if self.readonly and applied and len(applied) < len(known):
            raise ConfigError(
                f"{self.path} has an older schema ({applied[-1]}; this runner needs {known[-1]}): run any writing "
                "command (runner run) once to upgrade it"
            )


def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
    if path.is_dir():
        raise ConfigError(f"{path} is a folder, not a database file: pass a file path with --db")
    if not path.parent.is_dir():
        raise ConfigError(f"{path}: the folder {path.parent} does not exist")
    if readonly:
        if not path.is_file():
            raise ConfigError(f"{path}: no such database (no run has been started with it)")
        try:
            try:
                conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            except sqlite3.OperationalError:  # a read-only disk cannot take the WAL's index: read the file as it is
                conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, timeout=30)
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            raise _problem(str(path), exc) from exc
        return conn
    if not path.exists():
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))  # private: prompts and answers
        except FileExistsError:
            pass
        except OSError as exc:
            raise ConfigError(f"{path}: cannot create the database ({exc.strerror})") from exc
    try:
        return sqlite3.connect(path, timeout=30)
    except sqlite3.OperationalError as exc:
        raise _problem(str(path), exc) from exc


def _problem(path: str, exc: sqlite3.DatabaseError) -> ConfigError:
    text = str(exc)
    if "readonly" in text or "unable to open" in text:
        return ConfigError(f"{path}: cannot write the database ({text}): is the disk read-only?")
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return ConfigError(f"{path} is not a runner database, or it is damaged ({text})")
    return ConfigError(f"{path}: {text}")


def default_db_path() -> str:
    return os.environ.get("RUNNER_DB", "runner.db")
