"""Runs and who works on them: one live process owns a run at a time (``runs.owner`` + heartbeat).

An owner is ``host:pid:start:token`` (``start``: when the process started, so a reused pid is not mistaken for it).
It is taken over only when it is gone: on the same host, when no process with that pid and start time exists
(however long it was silent: a stopped or busy process is still alive); on another host, when it has not beaten
for ``takeover_after`` seconds (long enough for a stalled process). A takeover is announced (``takeovers``), and
the process taken over learns it at its next heartbeat or claim and stops without sending anything more.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from typing import Any

from runner.errors import RunLocked
from runner.store.base import Base, Part
from runner.store.states import Move

__all__ = ["Runs", "owner_state"]


class Runs(Part):
    """``store.runs``: the runs in the database and the process that owns each."""

    takeovers: list[str]  # runs taken over from processes that were gone (said to the user once)

    def __init__(self, base: Base) -> None:
        super().__init__(base)
        self.takeovers = []

    def get(self, name: str) -> dict[str, Any] | None:
        cursor = self.conn.execute("SELECT * FROM runs WHERE name=?", (name,))
        row = cursor.fetchone()
        if row is None:
            return None
        return dict(zip([d[0] for d in cursor.description], row, strict=True))

    def names(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM runs ORDER BY created_at")]

    def acquire(self, name: str, input_path: str | None, takeover_after: float = 900.0) -> str:
        """Own run ``name`` (creating it); recover what a dead owner left in flight. Returns the owner token."""
        owner = f"{socket.gethostname()}:{os.getpid()}:{_started(os.getpid())}:{uuid.uuid4().hex[:8]}"
        now = self.clock()
        with self.transaction():
            self.conn.execute(
                "INSERT INTO runs(name, input_path, created_at) VALUES (?,?,?) ON CONFLICT(name) DO NOTHING",
                (name, input_path, now),
            )
            current, heartbeat = self.conn.execute(
                "SELECT owner, heartbeat_at FROM runs WHERE name=?", (name,)
            ).fetchone()
            if current:
                state = owner_state(current, heartbeat, now, takeover_after)
                if state == "alive":
                    raise RunLocked(f"run {name!r} is being worked on by {current} (alive); wait for it or stop it")
                silent = "" if heartbeat is None else f", silent for {now - heartbeat:,.0f}s"
                self.takeovers.append(f"took over run {name!r} from {current} ({state}{silent})")
            self.conn.execute(
                "UPDATE runs SET owner=?, heartbeat_at=?, stop_reason=NULL,"
                " input_path=coalesce(?, input_path) WHERE name=?",
                (owner, now, input_path, name),
            )
            self._move(Move.RELEASE, "run=?", (name,), "lease_owner=NULL, lease_expires=NULL")
        return owner

    def owner_of(self, name: str, takeover_after: float = 900.0) -> tuple[str | None, str]:
        """``(owner, state)`` of run ``name``: state is alive, gone (its process ended), silent (another host's
        owner that has not beaten for ``takeover_after``) or none."""
        row = self.conn.execute("SELECT owner, heartbeat_at FROM runs WHERE name=?", (name,)).fetchone()
        if row is None or not row[0]:
            return None, "none"
        return row[0], owner_state(row[0], row[1], self.clock(), takeover_after)

    def heartbeat(self, name: str, owner: str, lease_seconds: float) -> bool:
        """Say ``owner`` is alive and extend its leases; False when another process has taken the run over."""
        now = self.clock()
        with self.transaction():
            beat = self.conn.execute(
                "UPDATE runs SET heartbeat_at=? WHERE name=? AND owner=?", (now, name, owner)
            ).rowcount
            self.conn.execute(
                "UPDATE requests SET lease_expires=? WHERE run=? AND lease_owner=? AND state='in_flight'",
                (now + lease_seconds, name, owner),
            )
        return bool(beat)

    def owns(self, name: str, owner: str) -> bool:
        row = self.conn.execute("SELECT 1 FROM runs WHERE name=? AND owner=?", (name, owner)).fetchone()
        return row is not None

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


def owner_state(owner: str, heartbeat: float | None, now: float, takeover_after: float) -> str:
    """alive, gone (same host, no such process) or silent (another host, no heartbeat for ``takeover_after``)."""
    host, pid, started, *_ = [*owner.split(":"), "", "", ""]
    if host == socket.gethostname():
        try:
            os.kill(int(pid), 0)
        except (ProcessLookupError, ValueError):
            return "gone"
        except PermissionError:
            pass  # exists, owned by someone else
        if started and started != "0" and _started(int(pid)) not in (started, "0"):
            return "gone"  # the pid was reused by another process
        return "alive"
    if heartbeat is None or now - heartbeat > takeover_after:
        return "silent"
    return "alive"


def _started(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot, Linux), or "0" where that cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "0"
    return stat.rsplit(")", 1)[1].split()[19]
