"""Runs and who works on them: one live process owns a run at a time (``runs.owner`` + heartbeat)."""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any

from runner.errors import RunLocked
from runner.store.base import Base
from runner.store.states import Move

__all__ = ["Runs"]


class Runs(Base):
    @property
    def store_id(self) -> str:
        """A random id of this database, written into each batch's metadata."""
        return str(self.conn.execute("SELECT value FROM meta WHERE key='store_id'").fetchone()[0])

    def run(self, name: str) -> dict[str, Any] | None:
        cursor = self.conn.execute("SELECT * FROM runs WHERE name=?", (name,))
        row = cursor.fetchone()
        if row is None:
            return None
        return dict(zip([d[0] for d in cursor.description], row, strict=True))

    def runs(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM runs ORDER BY created_at")]

    def acquire(self, name: str, input_path: str | None, stale_after: float = 15.0) -> str:
        """Own run ``name`` (creating it); recover what a dead owner left in flight. Returns the owner token."""
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        now = self.clock()
        with self.transaction():
            self.conn.execute(
                "INSERT INTO runs(name, input_path, created_at) VALUES (?,?,?) ON CONFLICT(name) DO NOTHING",
                (name, input_path, now),
            )
            current, heartbeat = self.conn.execute(
                "SELECT owner, heartbeat_at FROM runs WHERE name=?", (name,)
            ).fetchone()
            if current and _owner_alive(current, heartbeat, now, stale_after):
                raise RunLocked(f"run {name!r} is being worked on by {current}; wait for it or stop it")
            self.conn.execute(
                "UPDATE runs SET owner=?, heartbeat_at=?, stop_reason=NULL,"
                " input_path=coalesce(?, input_path) WHERE name=?",
                (owner, now, input_path, name),
            )
            self._move(Move.RELEASE, "run=?", (name,), "lease_owner=NULL, lease_expires=NULL")
        return owner

    def heartbeat(self, name: str, owner: str, lease_seconds: float) -> None:
        now = self.clock()
        with self.transaction():
            self.conn.execute("UPDATE runs SET heartbeat_at=? WHERE name=? AND owner=?", (now, name, owner))
            self.conn.execute(
                "UPDATE requests SET lease_expires=? WHERE run=? AND lease_owner=? AND state='in_flight'",
                (now + lease_seconds, name, owner),
            )

    def release(self, name: str, owner: str, stop_reason: str | None = None) -> int:
        """Give up the run: this owner's in-flight requests go back to pending. Returns how many did."""
        with self.transaction():
            n = self._move(
                Move.RELEASE, "run=? AND lease_owner=?", (name, owner), "lease_owner=NULL, lease_expires=NULL"
            )
            self.conn.execute(
                "UPDATE runs SET owner=NULL, stop_reason=? WHERE name=? AND owner=?", (stop_reason, name, owner)
            )
        return n

    def set_settings(self, name: str, tier: str, mode: str) -> None:
        with self.transaction():
            self.conn.execute("UPDATE runs SET tier=?, mode=? WHERE name=?", (tier, mode, name))

    def set_ingested(self, name: str, nbytes: int, sha256: str, lines: int) -> None:
        """Remember how much of the input is stored (inside the ingest's transaction, with its requests)."""
        with self.transaction():
            self.conn.execute(
                "UPDATE runs SET ingest_bytes=?, ingest_sha256=?, ingest_lines=? WHERE name=?",
                (nbytes, sha256, lines, name),
            )


def _owner_alive(owner: str, heartbeat: float | None, now: float, stale_after: float) -> bool:
    host, pid, _ = [*owner.split(":"), "", "", ""][:3]
    if heartbeat is None or now - heartbeat > stale_after:
        return False
    if host == socket.gethostname():
        try:
            os.kill(int(pid), 0)
        except (ProcessLookupError, ValueError):
            return False
        except PermissionError:
            return True
    return True
