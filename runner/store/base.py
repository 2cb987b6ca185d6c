"""What every part of the store shares: the connection, the clock, transactions, and moving requests by the table."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from sqlite_utils import Database

from runner.errors import DiskFull, StateConflict
from runner.store.states import Move

__all__ = ["Base", "Clock", "Part"]

Clock = Callable[[], float]


class Base:
    """The connection (``conn``, ``db``), the clock and the moves every part of ``Store`` works through."""

    path: str
    conn: Any  # sqlite3.Connection
    db: Database
    clock: Clock = time.time

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic write: everything inside commits together or not at all.

        A disk that is full or fails raises ``DiskFull`` (the transaction rolled back whole)."""
        try:
            with self.db.atomic():
                yield
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if "disk" not in text and "I/O" not in text:
                raise
            raise DiskFull(
                f"cannot write {self.path} ({text}): stopped; nothing was recorded half-way. Free space and re-run "
                "the same command (what was in flight is sent again)"
            ) from exc

    def _move(self, move: Move, where: str, args: tuple[Any, ...], sets: str = "", values: tuple[Any, ...] = ()) -> int:
        """Apply ``move`` to the requests matching ``where`` (and allowed by the table); returns how many moved.

        ``sets`` are extra ``column=?`` assignments with their ``values``. Call inside a transaction."""
        extra = f", {sets}" if sets else ""
        cursor = self.conn.execute(
            f"UPDATE requests SET state=?, updated_at=?{extra} WHERE {where} AND {move.where()}",
            (move.target.value, self.clock(), *values, *args),
        )
        return int(cursor.rowcount)

    def _move_all(self, move: Move, extra_where: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> bool:
        """Apply ``move`` to many requests in one statement; each row gives the ``columns``' values, the id, then the
        ``extra_where`` arguments. All or none: False (nothing moved) if one could not move, for the caller to move
        them one by one with ``_move_one``, which names it. Call inside a transaction."""
        sets = "".join(f", {c}=?" for c in columns)
        where = "id=?" + (f" AND {extra_where}" if extra_where else "")
        target, now = move.target.value, self.clock()
        self.conn.execute("SAVEPOINT move_all")
        before: int = self.conn.total_changes
        self.conn.executemany(
            f"UPDATE requests SET state=?, updated_at=?{sets} WHERE {where} AND {move.where()}",
            [(target, now, *row) for row in rows],
        )
        after: int = self.conn.total_changes
        moved = after - before == len(rows)
        if not moved:
            self.conn.execute("ROLLBACK TO move_all")
        self.conn.execute("RELEASE move_all")
        return moved

    def _move_one(
        self, move: Move, request_id: int, what: str, extra_where: str = "", args: tuple[Any, ...] = (), **sets: Any
    ) -> None:
        """Move one request or raise ``StateConflict`` naming ``what`` it is."""
        where = "id=?" + (f" AND {extra_where}" if extra_where else "")
        assignments = ", ".join(f"{k}=?" for k in sets)
        if self._move(move, where, (request_id, *args), assignments, tuple(sets.values())) != 1:
            raise StateConflict(f"{what}: cannot {move.value} (not {' or '.join(sorted(move.sources))})")


class Part:
    """One part of the store (runs, requests, results, batches, history, extractions): its queries and moves over
    the store's one connection. Parts that need another part are given it; none reaches another through ``self``."""

    def __init__(self, base: Base) -> None:
        self.base = base

    @property
    def conn(self) -> Any:  # sqlite3.Connection
        return self.base.conn

    @property
    def path(self) -> str:
        return self.base.path

    @property
    def db(self) -> Database:
        return self.base.db

    def clock(self) -> float:
        return self.base.clock()

    def transaction(self) -> AbstractContextManager[None]:
        return self.base.transaction()

    def _move(self, move: Move, where: str, args: tuple[Any, ...], sets: str = "", values: tuple[Any, ...] = ()) -> int:
        return self.base._move(move, where, args, sets, values)

    def _move_all(self, move: Move, extra_where: str, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> bool:
        return self.base._move_all(move, extra_where, columns, rows)

    def _move_one(
        self, move: Move, request_id: int, what: str, extra_where: str = "", args: tuple[Any, ...] = (), **sets: Any
    ) -> None:
        self.base._move_one(move, request_id, what, extra_where, args, **sets)
