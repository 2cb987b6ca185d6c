"""The gate file: the runner processes of one organisation on this host, and how fast each paces which limit.

Runners on one key would otherwise know each other only as "other use" in the server's headers, and share its
limit by accident (72/28 on our simulator, one crawling for minutes on another server). So each process says here,
a few times a second, what it admits of each limit (``scope``: model, long context, dimension) and whether it
wants more than it gets; each reads the others' and takes its fair share of what the runners together may use.
With it, each writes its admissions and refunds with their times (``uses``), and reads the others' since it last
read: when their use came, which the server's readings show.

Each paces its part on its own, so their requests may still come at the same moment: under a server whose window
is as short as the burst (a second) and that counts a request as more than the gate does, two requests sent
together overflow it. Once the server refuses one of them (``empty``), the runners admit through a shared token
bucket (``buckets``, one row per scope) for ``ARM_SECONDS``: it refills at the least of the processes' views of
what they may use together (``views``) and holds the longest of their bursts, so their admissions together never
come faster than the server's window holds. Armed, each admission and each refund is one ``BEGIN IMMEDIATE``
transaction (~20 us); unarmed, none: a process hears that a peer armed it with the peers' words (``armed``).
Whoever asks first when the bucket holds a request takes it, so a process that asks a little later each time (a
slower clock tick, a smaller part) could wait for ever: the process that has waited longest has the next turn
(``waiter``, ``since``), kept while it asks again within ``TURN_SECONDS``. A starved process also learns nothing
(no answers, no readings), so a wrong belief of its own would never be tested. A refund fills the bucket up to
its capacity only (a server's refund into its full bucket is lost), except where the server gives nothing back:
there it is only the runners' bookkeeping, kept above the capacity (``beyond``) until admissions take it.
``runner.redis_gate`` keeps the same bucket in Redis, by the same rules.
Armed from the start, a second bucket as small as each process's cost 2-4% of the limit where the server's window
is longer (it loses its idle moments).

One small SQLite file (WAL) per API base URL and key, in the user's cache directory, named by a hash of the two:
the key itself is never written. A row older than ``STALE_SECONDS`` is not read, so a process killed with -9
holds nothing for longer than that; a process that opens the file deletes rows older than ``FORGET_SECONDS``.
Times are the wall clock: every process on the host reads the same one.

Some use outlives a process: the requests of a day (RPD) and the tokens of batches in the queue. Each database's
figure for such a thing (``what``) is a word of the ``ledger``, kept ``KEEP_SECONDS`` (a day and an hour: a day's
count is named by its day, a batch ends within 24 h); a process tells its database's figure and hears the sum of
the other databases' (processes on one database see each other's use in it). Words are written and read at most
every ``TELL_SECONDS`` per ``what``.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = [
    "FORGET_SECONDS",
    "KEEP_SECONDS",
    "STALE_SECONDS",
    "TELL_SECONDS",
    "TURN_SECONDS",
    "GateFile",
    "Peer",
    "gate_digest",
    "gate_file_path",
]

STALE_SECONDS = 2.0
FORGET_SECONDS = 60.0
KEEP_SECONDS = 25 * 3600.0
TELL_SECONDS = 0.25
ARM_SECONDS = 120.0  # a refusal holds the runners' admissions to their bucket for this long (see ``admit``)
TRANSIT_SECONDS = 0.05  # a request may take this long to reach the server after its admission
TURN_SECONDS = 0.25  # the process waiting longest for the runners' bucket keeps its turn while it asks this often
USES_SECONDS = 30.0  # how long a process's events stay in the file: others read them within a second

SCHEMA = """
CREATE TABLE IF NOT EXISTS peers (
    member TEXT NOT NULL,   -- host:pid:random, one per process
    pid INTEGER NOT NULL,
    scope TEXT NOT NULL,    -- model, long-context row and dimension
    rate REAL NOT NULL,     -- what the process admits now, per second (net of refunds), in its own count
    held INTEGER NOT NULL,  -- 1 when its gate holds requests back (it wants more than it gets)
    seen REAL NOT NULL,     -- wall clock of the last word
    PRIMARY KEY (member, scope)
);
CREATE TABLE IF NOT EXISTS uses (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    scope TEXT NOT NULL,
    member TEXT NOT NULL,
    at REAL NOT NULL,       -- when the process admitted (amount > 0) or had given back (amount < 0), file's clock
    amount REAL NOT NULL    -- in its own count
);
CREATE INDEX IF NOT EXISTS uses_by_scope ON uses (scope, id);
CREATE INDEX IF NOT EXISTS uses_by_member ON uses (member, at);
CREATE TABLE IF NOT EXISTS buckets (
    scope TEXT PRIMARY KEY,
    level REAL NOT NULL,    -- what the runners may still admit together now, in their own count (negative: debt)
    stamp REAL NOT NULL,    -- file's clock of the last refill
    rate REAL NOT NULL,     -- per second: what they may use together (the least of the fresh views)
    capacity REAL NOT NULL, -- what it holds: that rate times the longest of the fresh views' bursts
    armed REAL NOT NULL,    -- file's clock: until when it holds admissions back (a refusal arms it)
    sent REAL NOT NULL,     -- file's clock: the last admission
    transit REAL NOT NULL,  -- what was admitted within TRANSIT_SECONDS before it (perhaps not yet counted)
    waiter TEXT NOT NULL DEFAULT '',  -- the process that has waited longest for it ('' none)
    since REAL NOT NULL DEFAULT 0,    -- file's clock: since when it has waited
    asked REAL NOT NULL DEFAULT 0,    -- file's clock: when it last asked (its turn lapses TURN_SECONDS after)
    beyond REAL NOT NULL DEFAULT 0    -- refunds kept above the capacity (a server that gives nothing back)
);
CREATE TABLE IF NOT EXISTS views (
    scope TEXT NOT NULL,
    member TEXT NOT NULL,
    rate REAL NOT NULL,     -- per second: what the runners may use together, as this process believes
    burst REAL NOT NULL,    -- seconds of it the server's shortest window holds, as this process believes
    seen REAL NOT NULL,
    PRIMARY KEY (scope, member)
);
CREATE TABLE IF NOT EXISTS ledger (
    what TEXT NOT NULL,     -- e.g. "gpt-4.1-mini requests 2026-12-05", "gpt-4.1-mini batch queue tokens"
    source TEXT NOT NULL,   -- the database (a hash of host and path)
    amount INTEGER NOT NULL,
    seen REAL NOT NULL,
    PRIMARY KEY (what, source)
)
"""


@dataclass
class _Told:
    """This process's word on one ``what`` of the ledger."""

    source: str
    amount: int = 0
    written: int | None = None
    others: int = 0
    at: float = -math.inf


@dataclass(frozen=True)
class Peer:
    """Another process's word on one scope."""

    member: str
    pid: int
    scope: str
    rate: float
    held: bool
    seen: float
    events: tuple[tuple[float, float], ...] | None = None  # its admissions (+) and refunds (-) since last heard


def gate_digest(base_url: str, api_key: str, account: str = "") -> str:
    """What names the limits of ``api_key`` at ``base_url`` (for ``account``: organisation and project, where set)
    wherever runners meet (the gate file, Redis keys): a hash, never the key."""
    return hashlib.sha256(f"{base_url.rstrip('/')}\n{api_key}\n{account}".encode()).hexdigest()[:32]


def gate_file_path(base_url: str, api_key: str, account: str = "") -> Path:
    """Where the processes using ``api_key`` at ``base_url`` on this host meet: ``$XDG_CACHE_HOME/runner/gates/
    <hash>.db``."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "runner" / "gates" / f"{gate_digest(base_url, api_key, account)}.db"


class GateFile:
    """This process's place in a gate file (``member`` names it; made up when not given). ``async with`` it for a
    run: leaving frees its part at once. A file that cannot be written (a full disk, a lock held too long) leaves
    the gate pacing alone, said once in ``notices``."""

    def __init__(self, path: Path, member: str | None = None, clock: Callable[[], float] = time.time) -> None:
        self.path, self.clock = path, clock
        self.notices: list[str] = []
        self.member = member or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.conn = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(SCHEMA)
        _add_columns(self.conn)
        with self.conn:  # what processes killed long ago left behind
            self.conn.execute("DELETE FROM peers WHERE seen<?", (self.clock() - FORGET_SECONDS,))
            self.conn.execute("DELETE FROM views WHERE seen<?", (self.clock() - FORGET_SECONDS,))
            self.conn.execute("DELETE FROM uses WHERE at<?", (self.clock() - USES_SECONDS,))
            self.conn.execute("DELETE FROM ledger WHERE seen<?", (self.clock() - KEEP_SECONDS,))
        self.told: dict[str, _Told] = {}
        self.read: dict[str, int] = {}  # per scope: the last of the others' events read
        self.telling: dict[str, set[str]] = {}  # per scope: the others that write their events

    def __repr__(self) -> str:
        return f"<GateFile {self.path.name} member={self.member}>"

    async def __aenter__(self) -> GateFile:
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        with contextlib.suppress(sqlite3.Error):  # else its rows go stale in STALE_SECONDS anyway
            for what, told in self.told.items():  # the last figures, not yet written
                if told.amount != told.written:
                    self._write(what, told)
            self.leave()
        self.close()

    def tell(self, what: str, source: str, amount: int) -> int:
        """Say ``source`` (a database) holds ``amount`` of ``what`` now; the other databases' sum, as last read."""
        now = self.clock()
        told = self.told.setdefault(what, _Told(source))
        told.amount = amount
        if now - told.at >= TELL_SECONDS:
            told.at = now
            try:
                self._write(what, told)
            except sqlite3.Error as exc:
                self._trouble(exc)
        return told.others

    def _write(self, what: str, told: _Told) -> None:
        now = self.clock()
        with self.conn:
            self.conn.execute(
                "INSERT INTO ledger (what, source, amount, seen) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (what, source) DO UPDATE SET amount=excluded.amount, seen=excluded.seen",
                (what, told.source, told.amount, now),
            )
            row = self.conn.execute(
                "SELECT coalesce(sum(amount), 0) FROM ledger WHERE what=? AND source<>? AND seen>?",
                (what, told.source, now - KEEP_SECONDS),
            ).fetchone()
        told.written, told.others = told.amount, int(row[0])

    def publish(
        self, scope: str, rate: float, held: bool, events: Sequence[tuple[float, float]] | None = None
    ) -> list[Peer]:
        """Say what this process admits of ``scope`` now (and ``events``: its admissions and refunds since its last
        word, timed by this file's clock); returns the other processes' fresh words on it, each with its events
        written since this process last read (none, said once, when the file cannot be used)."""
        try:
            return self._publish(scope, rate, held, events)
        except sqlite3.Error as exc:
            self._trouble(exc)
            return []

    def _trouble(self, exc: sqlite3.Error) -> None:
        """The file cannot be used: said once; the gate paces alone meanwhile."""
        if not self.notices:
            self.notices.append(f"could not use the gate file {self.path} ({exc}): pacing alone meanwhile")

    def _publish(self, scope: str, rate: float, held: bool, events: Sequence[tuple[float, float]] | None) -> list[Peer]:
        now = self.clock()
        with self.conn:
            self.conn.execute(
                "INSERT INTO peers (member, pid, scope, rate, held, seen) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (member, scope) DO UPDATE SET rate=excluded.rate, held=excluded.held, seen=excluded.seen",
                (self.member, os.getpid(), scope, rate, int(held), now),
            )
            if events is not None and scope not in self.read:  # a first word says: my events come with my words
                events = [(now, 0.0), *events]
            if events:
                self.conn.executemany(
                    "INSERT INTO uses (scope, member, at, amount) VALUES (?, ?, ?, ?)",
                    [(scope, self.member, at, amount) for at, amount in events],
                )
                self.conn.execute("DELETE FROM uses WHERE member=? AND at<?", (self.member, now - USES_SECONDS))
            rows = self.conn.execute(
                "SELECT member, pid, scope, rate, held, seen FROM peers WHERE scope=? AND member<>? AND seen>?",
                (scope, self.member, now - STALE_SECONDS),
            ).fetchall()
            if scope not in self.read:  # from now on: what others wrote before is already in the server's count
                self.read[scope] = self.conn.execute("SELECT coalesce(max(id), 0) FROM uses").fetchone()[0]
                told = self.conn.execute("SELECT DISTINCT member FROM uses WHERE scope=?", (scope,)).fetchall()
                self.telling[scope] = {member for (member,) in told}
            new = self.conn.execute(
                "SELECT id, member, at, amount FROM uses WHERE scope=? AND id>? AND member<>? ORDER BY id",
                (scope, self.read[scope], self.member),
            ).fetchall()
        if new:
            self.read[scope] = max(i for i, *_ in new)
        telling = self.telling.setdefault(scope, set())
        theirs: dict[str, list[tuple[float, float]]] = {}
        for _, member, at, amount in new:
            telling.add(member)
            if amount:
                theirs.setdefault(member, []).append((at, amount))
        return [  # a process that never wrote an event (an older runner) is heard by its rate alone
            Peer(m, pid, sc, r, bool(h), seen, tuple(theirs.get(m, ())) if m in telling else None)
            for m, pid, sc, r, h, seen in rows
        ]

    def now(self) -> float:
        """The clock the words are stamped with."""
        return self.clock()

    # -- the runners' bucket: when their admissions go ----------------------------------------------------------

    def admit(
        self, costs: Sequence[tuple[str, float, float, float]], force: bool = False, waited: float = 0.0
    ) -> float:
        """Take each ``(scope, cost, rate, burst)`` from the runners' bucket of that scope, all or none: 0 when
        every bucket held its cost (a cost above the capacity needs a full bucket, then goes into debt), else the
        seconds until all would. ``rate`` and ``burst`` are this process's view of what the runners may use
        together per second and of how many seconds of it the server's shortest window holds; each bucket
        refills at the least rate of the fresh views and holds it for the longest burst (one process's passing
        belief in more room does not let the others burst into it; a longer burst only makes a request that
        needs a full bucket wait longer). ``waited``: how long this process has waited for the buckets (the one
        that has waited longest has the next turn). ``force`` takes the costs whatever the levels."""
        views = {scope: (rate, burst) for scope, _, rate, burst in costs}
        since = self.clock() - waited
        amounts = [c for _, c, *_ in costs]
        try:
            return self._in_buckets(list(views), lambda bs: _admit(bs, amounts, force, self.member, since), views)
        except sqlite3.Error as exc:
            self._trouble(exc)
            return 0.0

    def give_back(self, scope: str, amount: float, keep: bool = False) -> None:
        """``amount`` back to the runners' bucket of ``scope`` (an answer used less than its request reserved;
        negative: more), up to its capacity (an armed bucket's server refused a request: its bucket is as full).
        ``keep``: the server gives nothing back, so the amount is only the runners' bookkeeping (their share is set
        on what answers use over a while): kept whole, above the capacity if need be, until admissions take it."""
        try:
            self._in_buckets([scope], lambda bs: _give_back(bs[0], amount, keep))
        except sqlite3.Error as exc:
            self._trouble(exc)

    def empty(self, scopes: Sequence[str]) -> None:
        """The server refused a request: the runners' buckets of ``scopes`` fill again from empty, and hold
        admissions back for ``ARM_SECONDS``."""
        try:
            self._in_buckets(list(scopes), _empty)
        except sqlite3.Error as exc:
            self._trouble(exc)

    def armed(self, scope: str) -> float:
        """For how many seconds more the runners' bucket of ``scope`` holds admissions back (0: it does not)."""
        try:
            row = self.conn.execute("SELECT armed FROM buckets WHERE scope=?", (scope,)).fetchone()
        except sqlite3.Error as exc:
            self._trouble(exc)
            return 0.0
        return max(0.0, row[0] - self.clock()) if row else 0.0

    def _in_buckets(
        self,
        scopes: list[str],
        change: Callable[[list[_Bucket]], float],
        views: dict[str, tuple[float, float]] | None = None,
    ) -> float:
        """Refill the buckets of ``scopes`` to now, apply ``change``, write them back: one write transaction, so
        no other process sees or changes them half-way. ``views``: this process's ``(rate, burst)`` per scope,
        written first; the buckets then pace at the fresh views' least rate and longest burst."""
        now = self.clock()
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            buckets = []
            for scope in scopes:
                row = self.conn.execute(
                    "SELECT level, stamp, rate, capacity, armed, sent, transit, waiter, since, asked, beyond "
                    "FROM buckets WHERE scope=?",
                    (scope,),
                ).fetchone()
                bucket = _Bucket(scope, *row) if row else _Bucket(scope, math.nan, now, 0.0, 0.0, -math.inf)
                bucket.refill(now)
                if views is not None:
                    self.conn.execute(
                        "INSERT OR REPLACE INTO views (scope, member, rate, burst, seen) VALUES (?, ?, ?, ?, ?)",
                        (scope, self.member, *views[scope], now),
                    )
                    rate, burst = self.conn.execute(
                        "SELECT min(rate), max(burst) FROM views WHERE scope=? AND seen>?",
                        (scope, now - STALE_SECONDS),
                    ).fetchone()
                    bucket.rate, bucket.capacity = rate, rate * burst
                    bucket.level = bucket.level if math.isnan(bucket.level) else min(bucket.level, bucket.ceiling)
                buckets.append(bucket)
            result = change(buckets)
            self.conn.executemany(
                "INSERT OR REPLACE INTO buckets "
                "(scope, level, stamp, rate, capacity, armed, sent, transit, waiter, since, asked, beyond) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (b.scope, b.level, b.stamp, b.rate, b.capacity, b.armed, b.sent, b.transit, *b.turn, b.beyond)
                    for b in buckets
                    if not math.isnan(b.level)
                ],
            )
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        return result

    def members(self) -> list[Peer]:
        """Every process's fresh word on every scope (this one's included)."""
        now = self.clock()
        with self.conn:
            rows = self.conn.execute(
                "SELECT member, pid, scope, rate, held, seen FROM peers WHERE seen>? ORDER BY scope, member",
                (now - STALE_SECONDS,),
            ).fetchall()
        return _peers(rows)

    def leave(self) -> None:
        """This process is done: its share goes to the others at once."""
        with self.conn:
            self.conn.execute("DELETE FROM peers WHERE member=?", (self.member,))

    def close(self) -> None:
        self.conn.close()


@dataclass
class _Bucket:
    """The runners' bucket of one scope: a token bucket all the processes sharing the limit admit from, so their
    requests together never come faster than the server's shortest window holds (each paces its part on its own;
    this keeps their timing apart). A new bucket's level is NaN until its first admission fills it."""

    scope: str
    level: float
    stamp: float
    rate: float
    capacity: float
    armed: float  # until when it holds admissions back (before: it lets every admission through)
    sent: float = -math.inf  # the last admission
    transit: float = 0.0  # what was admitted within TRANSIT_SECONDS before it, perhaps not at the server yet
    waiter: str = ""  # the process that has waited longest for it ("": none)
    since: float = 0.0  # since when
    asked: float = 0.0  # when it last asked
    beyond: float = 0.0  # refunds kept above the capacity (``give_back`` with ``keep``), until admissions take them

    @property
    def ceiling(self) -> float:
        return self.capacity + self.beyond

    @property
    def turn(self) -> tuple[str, float, float]:
        return self.waiter, self.since, self.asked

    def is_turn_of(self, member: str, since: float) -> bool:
        """Whether a process waiting ``since`` (``member``) may take from this bucket now that it holds its cost:
        not while another that has waited longer keeps asking."""
        kept = self.waiter not in ("", member) and self.asked > self.stamp - TURN_SECONDS
        return not (kept and self.since < since)

    def wait_turn(self, member: str, since: float) -> None:
        """A process waiting ``since`` (``member``) could not take from this bucket: the next turn is its if it
        has waited longest, or if the one who had it stopped asking."""
        if self.is_turn_of(member, since):
            self.waiter, self.since, self.asked = member, since, self.stamp

    def refill(self, now: float) -> None:
        """Up to the capacity (and the refunds it keeps above it) at ``rate`` (a new bucket stays NaN)."""
        if not math.isnan(self.level):
            self.level = min(self.ceiling, self.level + max(0.0, now - self.stamp) * self.rate)
        self.stamp = max(self.stamp, now)


def _admit(buckets: list[_Bucket], costs: list[float], force: bool, member: str, since: float) -> float:
    wait = 0.0
    for bucket, cost in zip(buckets, costs, strict=True):
        if math.isnan(bucket.level):
            bucket.level = bucket.capacity
        if bucket.stamp >= bucket.armed:  # not armed: nothing to hold back, nothing to count
            bucket.level = bucket.capacity
            continue
        need = min(cost, bucket.capacity)
        lack = max(0.0, need - bucket.level)
        short = (lack / bucket.rate if bucket.rate > 0 else math.inf) if lack else 0.0
        if short > 1e-6:  # (a wait shorter than the clock's resolution is none)
            wait = max(wait, short)
        elif not bucket.is_turn_of(member, since):  # another has waited longer: its request first, then this one
            wait = max(wait, need / bucket.rate if bucket.rate > 0 else math.inf)
    if wait > 0 and not force:
        for bucket in buckets:
            if bucket.stamp < bucket.armed:
                bucket.wait_turn(member, since)
        return wait
    for bucket, cost in zip(buckets, costs, strict=True):
        bucket.level -= cost
        bucket.beyond = max(0.0, min(bucket.beyond, bucket.level - bucket.capacity))
        bucket.transit = cost + (bucket.transit if bucket.stamp - bucket.sent < TRANSIT_SECONDS else 0.0)
        bucket.sent = bucket.stamp
        if bucket.waiter == member:
            bucket.waiter = ""
    return 0.0


def _give_back(bucket: _Bucket, amount: float, keep: bool) -> float:
    if not math.isnan(bucket.level) and bucket.stamp < bucket.armed:
        if keep and amount > 0:
            bucket.level += amount
            bucket.beyond = max(bucket.beyond, bucket.level - bucket.capacity)
            return 0.0
        # the server may count a refund before a request admitted just before it (a full bucket loses it there)
        transit = bucket.transit if bucket.stamp - bucket.sent < TRANSIT_SECONDS else 0.0
        ceiling = bucket.capacity - transit
        bucket.level = min(max(bucket.level, ceiling), bucket.level + amount)
    return 0.0


def _empty(buckets: list[_Bucket]) -> float:
    for bucket in buckets:
        bucket.level = 0.0 if math.isnan(bucket.level) else min(bucket.level, 0.0)
        bucket.beyond = 0.0
        bucket.armed = bucket.stamp + ARM_SECONDS
    return 0.0


def _add_columns(conn: sqlite3.Connection) -> None:
    """A gate file made by an earlier version has no turns and no kept refunds in its buckets: added (an older
    process writing the file meanwhile names its columns, and leaves them as they are)."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(buckets)")}
    for column, kind in (
        ("waiter", "TEXT NOT NULL DEFAULT ''"),
        ("since", "REAL NOT NULL DEFAULT 0"),
        ("asked", "REAL NOT NULL DEFAULT 0"),
        ("beyond", "REAL NOT NULL DEFAULT 0"),
    ):
        if column not in have:
            with contextlib.suppress(sqlite3.OperationalError):  # another process added it first
                conn.execute(f"ALTER TABLE buckets ADD COLUMN {column} {kind}")


def _peers(rows: list[tuple[str, int, str, float, int, float]]) -> list[Peer]:
    return [Peer(member, pid, scope, rate, bool(held), seen) for member, pid, scope, rate, held, seen in rows]
