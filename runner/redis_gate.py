"""The Redis gate: runner processes on several hosts share an organisation's limits through one Redis.

It holds what the gate file (``runner.store.peers``) holds on one host, each process's word on each limit it paces
(``scope``: model, long context, dimension): what it admits per second and whether it wants more than it gets.
Every gate reads the others' words and takes its fair part of what the runners may use together, so a process
admits on its own between readings: its share is a lease on part of the limit, renewed every ``SHARE_SECONDS``
and void ``STALE_SECONDS`` after its last renewal. No admission waits for a round trip to Redis. Unlike the gate
file, it does not carry each process's events (when its use came): the words are stamped with Redis's clock,
not the processes', so peers here are replayed by their rates.

- Keys: ``runner:{<hash of base URL, key and account>}:<scope>`` (a hash of member -> word) per model and
  dimension, a set of the scopes, and an epoch. The braces are a hash tag: all keys of one key-hash live in one
  slot, so the Lua script that reads and writes them runs on Redis Cluster too. The API key is never written.
- One clock: the script stamps words with Redis's ``TIME`` and judges freshness by it (hosts' clocks differ).
- One round trip per ``SHARE_SECONDS`` per process (two while it has ledger figures to tell), whatever its rate,
  by a background task on redis-py's asyncio client: ``publish`` only records this process's word and returns
  the others' last heard, at once.
- The ledger (use that outlives a process: a day's requests, the batch queue's tokens) is told and heard in the
  same period, one hash per ``what`` with each database's figure (see ``runner.store.peers``).
- Faults: when Redis cannot be reached (at the start or mid-run), one notice says so and the process keeps the
  peers it last heard (at the start, one unknown peer: half of what the runners may use), so it never takes the
  whole limit because it went deaf; it retries each period and says so when Redis answers again. A Redis that
  restarts and forgets every word shows a new epoch: the words heard before are kept for ``STALE_SECONDS``
  while every process speaks again, so nobody bursts into the forgotten room.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from runner.errors import ConfigError
from runner.store.peers import FORGET_SECONDS, KEEP_SECONDS, STALE_SECONDS, Peer

__all__ = ["SHARE_SECONDS", "RedisGate", "is_redis_url", "redis_location", "redis_url_problem"]

SHARE_SECONDS = 0.25  # how often the process speaks and listens
SOCKET_SECONDS = 2.0  # the most a connection or a reply may take before Redis counts as lost
UNKNOWN = "unknown"  # the member that stands for the peers a process could not hear at the start

# KEYS: epoch, scopes set, one hash per scope spoken of. ARGV: member, pid, now ('' for Redis TIME), stale seconds,
# forget seconds, proposed epoch, then (scope, rate, held) per scope key. Returns epoch, now, then for each fresh
# word of another member: scope, member, pid, rate, held, seen.
EXCHANGE = """
local now
if ARGV[3] ~= '' then now = tonumber(ARGV[3]) else
  local t = redis.call('TIME'); now = tonumber(t[1]) + tonumber(t[2]) / 1000000 end
local stale, forget = tonumber(ARGV[4]), tonumber(ARGV[5])
local keep = math.ceil(forget * 1000)
local epoch = redis.call('GET', KEYS[1])
if not epoch then epoch = ARGV[6]; redis.call('SET', KEYS[1], epoch) end
redis.call('PEXPIRE', KEYS[1], keep)
local out = {epoch, string.format('%.6f', now)}
for i = 3, #KEYS do
  local at = 7 + (i - 3) * 3
  local scope = ARGV[at]
  redis.call('SADD', KEYS[2], scope)
  redis.call('HSET', KEYS[i], ARGV[1], ARGV[2] .. ' ' .. ARGV[at + 1] .. ' ' .. ARGV[at + 2] .. ' '
    .. string.format('%.6f', now))
  redis.call('PEXPIRE', KEYS[i], keep)
  local words = redis.call('HGETALL', KEYS[i])
  for j = 1, #words, 2 do
    local member, word = words[j], words[j + 1]
    local seen = tonumber(string.match(word, '(%S+)$'))
    if seen < now - forget then redis.call('HDEL', KEYS[i], member)
    elseif member ~= ARGV[1] and seen > now - stale then
      local pid, rate, held = string.match(word, '^(%S+) (%S+) (%S+)')
      table.insert(out, scope); table.insert(out, member); table.insert(out, pid)
      table.insert(out, rate); table.insert(out, held); table.insert(out, string.format('%.6f', seen))
    end
  end
end
redis.call('PEXPIRE', KEYS[2], keep)
return out
"""

# KEYS: one hash per ``what`` of the ledger. ARGV: source, keep seconds, now ('' for Redis TIME), then the
# source's amount per key. Returns, per key, the other sources' sum.
LEDGER = """
local now
if ARGV[3] ~= '' then now = tonumber(ARGV[3]) else
  local t = redis.call('TIME'); now = tonumber(t[1]) + tonumber(t[2]) / 1000000 end
local keep = tonumber(ARGV[2])
local out = {}
for i = 1, #KEYS do
  redis.call('HSET', KEYS[i], ARGV[1], ARGV[3 + i] .. ' ' .. string.format('%.6f', now))
  local words = redis.call('HGETALL', KEYS[i])
  local sum = 0
  for j = 1, #words, 2 do
    local amount, seen = string.match(words[j + 1], '^(%S+) (%S+)$')
    if tonumber(seen) < now - keep then redis.call('HDEL', KEYS[i], words[j])
    elseif words[j] ~= ARGV[1] then sum = sum + tonumber(amount) end
  end
  redis.call('PEXPIRE', KEYS[i], math.ceil(keep * 1000))
  table.insert(out, tostring(sum))
end
return out
"""

# KEYS: scopes set, then one hash per scope. ARGV: member. Deletes the member's words.
LEAVE = """
for i = 2, #KEYS do redis.call('HDEL', KEYS[i], ARGV[1]) end
return 1
"""


def is_redis_url(text: str) -> bool:
    """Whether ``--gate`` names a Redis (``redis://``, ``rediss://`` with TLS, ``unix://`` for a socket)."""
    return text.startswith(("redis://", "rediss://", "unix://"))


def redis_url_problem(text: str) -> str | None:
    """What is wrong with ``text`` as a ``--gate`` Redis URL (None when nothing is)."""
    if not is_redis_url(text):
        return f"{text!r} is not host, none, or a redis://, rediss:// or unix:// URL"
    try:
        aioredis.ConnectionPool.from_url(text)
    except ValueError as exc:
        return f"{redis_location(text)}: {exc}"
    return None


def redis_location(url: str) -> str:
    """``url`` as it may be shown: without the password (or user)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass(frozen=True)
class _Heard:
    peer: Peer
    at: float  # this process's monotonic clock when it was heard
    kept: bool = False  # heard before Redis forgot it, kept for a lease


class RedisGate:
    """This process's place in the Redis gate of one key: ``async with RedisGate(url, digest): ...``.

    ``clock`` replaces Redis's ``TIME`` (tests); ``monotonic`` measures how long words heard are kept after Redis
    forgot them."""

    def __init__(
        self,
        url: str,
        digest: str,
        member: str | None = None,
        clock: Callable[[], float] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        period: float = SHARE_SECONDS,
    ) -> None:
        self.where = redis_location(url)
        self.prefix = f"runner:{{{digest}}}:"
        self.member = member or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.clock, self.monotonic, self.period = clock, monotonic, period
        self.client = aioredis.from_url(url, socket_connect_timeout=SOCKET_SECONDS, socket_timeout=SOCKET_SECONDS)
        self.exchange_script = self.client.register_script(EXCHANGE)
        self.leave_script = self.client.register_script(LEAVE)
        self.ledger_script = self.client.register_script(LEDGER)
        self.words: dict[str, tuple[float, bool]] = {}  # scope -> this process's last word
        self.ledger: dict[str, tuple[str, int]] = {}  # what -> (source, amount) this process tells
        self.others: dict[str, int] = {}  # what -> the other sources' sum, as last heard
        self.heard: dict[str, dict[str, _Heard]] = {}  # scope -> member -> the word last heard
        self.epoch: str | None = None
        self.reachable: bool | None = None  # None until the first exchange
        self.notices: list[str] = []
        self.exchanges = 0
        self._task: asyncio.Task[None] | None = None
        self._leaving = asyncio.Event()

    def __repr__(self) -> str:
        return f"<RedisGate {self.where} member={self.member}>"

    def key(self, scope: str) -> str:
        return f"{self.prefix}{scope}"

    # -- the gate's side: no round trip -----------------------------------------------------------------------------

    def publish(
        self, scope: str, rate: float, held: bool, events: Sequence[tuple[float, float]] | None = None
    ) -> list[Peer]:
        """Record what this process admits of ``scope`` (said at the next exchange); the others' last words on it.
        The events are not carried through Redis (hosts' clocks differ): peers there are heard by their rates."""
        self.words[scope] = (rate, held)
        heard = self.heard.get(scope, {})
        if self.reachable is False and not heard:  # deaf from the start: assume one peer that wants as much
            return [Peer(UNKNOWN, 0, scope, 0.0, True, 0.0)]
        return [h.peer for h in heard.values()]

    def now(self) -> float:
        return self.clock() if self.clock is not None else time.time()

    def admit(self, costs: Sequence[tuple[str, float, float, float]], force: bool = False) -> float:
        """Always at once: the runners' bucket (``runner.store.peers``) would cost a round trip per admission, so
        processes on Redis time their admissions each on its own."""
        return 0.0

    def give_back(self, scope: str, amount: float) -> None:
        """Nothing: no runners' bucket here (see ``admit``)."""

    def empty(self, scopes: Sequence[str]) -> None:
        """Nothing: no runners' bucket here (see ``admit``)."""

    def armed(self, scope: str) -> float:
        """Never: no runners' bucket here (see ``admit``)."""
        return 0.0

    def tell(self, what: str, source: str, amount: int) -> int:
        """Record that ``source`` (a database) holds ``amount`` of ``what`` (said at the next exchange); the other
        databases' sum, as last heard."""
        self.ledger[what] = (source, amount)
        return self.others.get(what, 0)

    # -- the exchange with Redis ------------------------------------------------------------------------------------

    async def exchange(self) -> None:
        """Say every word of this process and hear the others' (one script, one round trip). Raises RedisError."""
        scopes = list(self.words)
        args: list[str | int | float] = [
            self.member,
            os.getpid(),
            "" if self.clock is None else f"{self.clock():.6f}",
            STALE_SECONDS,
            FORGET_SECONDS,
            uuid.uuid4().hex,
        ]
        for scope in scopes:
            rate, held = self.words[scope]
            args += [scope, f"{rate:.6g}", int(held)]
        keys = [self.key("epoch"), self.key("scopes"), *(self.key(s) for s in scopes)]
        raw = await self.exchange_script(keys=keys, args=args)
        self.exchanges += 1
        await self._exchange_ledger()
        answer = [_text(x) for x in raw]
        epoch, now = answer[0], self.monotonic()
        restarted = self.epoch is not None and epoch != self.epoch
        self.epoch = epoch
        fresh: dict[str, dict[str, _Heard]] = {scope: {} for scope in scopes}
        for i in range(2, len(answer), 6):
            scope, member, pid, their_rate, wants, seen = answer[i : i + 6]
            peer = Peer(member, int(pid), scope, float(their_rate), wants == "1", float(seen))
            fresh[scope][member] = _Heard(peer, now)
        if restarted:
            self.notices.append(f"the Redis gate at {self.where} restarted and forgot who shares it: hearing again")
        for scope, members in fresh.items():  # after a restart, words heard before are kept for a lease
            for member, old in self.heard.get(scope, {}).items():
                lease = (restarted or old.kept) and now - old.at < STALE_SECONDS
                if member not in members and member != UNKNOWN and lease:
                    members[member] = _Heard(old.peer, old.at, kept=True)
        self.heard = fresh

    async def _exchange_ledger(self) -> None:
        for source in {source for source, _ in self.ledger.values()}:
            whats = [what for what, (s, _) in self.ledger.items() if s == source]
            now = "" if self.clock is None else f"{self.clock():.6f}"
            args: list[str | int | float] = [source, KEEP_SECONDS, now, *(self.ledger[w][1] for w in whats)]
            sums = await self.ledger_script(keys=[self.key(f"ledger:{w}") for w in whats], args=args)
            self.others.update({w: int(_text(x)) for w, x in zip(whats, sums, strict=True)})

    async def speak(self) -> None:
        """One exchange; a Redis that cannot be reached is said once (and its return once), never raised."""
        try:  # the client's socket timeouts bound it: an exchange is never cancelled half-way
            await self.exchange()
        except (RedisError, OSError) as exc:
            if self.reachable is not False:
                self.notices.append(
                    f"could not reach the Redis gate at {self.where} ({type(exc).__name__}: {exc}): pacing on "
                    "the share last heard (half the limit at the start) and the server's headers; retrying"
                )
            self.reachable = False
        else:
            if self.reachable is False:
                self.notices.append(f"the Redis gate at {self.where} answers again: sharing again")
            self.reachable = True

    async def _speak(self) -> None:
        while not self._leaving.is_set():
            await self.speak()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.period):
                    await self._leaving.wait()

    async def __aenter__(self) -> RedisGate:
        self._task = asyncio.get_running_loop().create_task(self._speak())
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        # every step is bounded: a Redis that stopped answering never keeps a finished run from exiting
        # the speaking task ends after its exchange (never cancelled in the middle of a command, which can leave
        # redis-py's connection closing forever); each command is bounded by the client's socket timeouts
        self._leaving.set()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=3 * SOCKET_SECONDS)
        with contextlib.suppress(RedisError, OSError):  # the last figures of the ledger; this process's part goes
            await self._exchange_ledger()
            await self.leave_script(keys=[self.key("scopes"), *(self.key(s) for s in self.words)], args=[self.member])
        with contextlib.suppress(RedisError, OSError):
            await self.client.aclose()

    # -- who is there -----------------------------------------------------------------------------------------------

    async def members_once(self) -> list[Peer]:
        """``members``, then the connection closed (``runner gate``); ConfigError when Redis cannot be reached."""
        try:
            return await self.members()
        except (RedisError, OSError) as exc:
            raise ConfigError(f"could not reach the Redis gate at {self.where} ({type(exc).__name__}: {exc})") from exc
        finally:
            await self.client.aclose()

    async def members(self) -> list[Peer]:
        """Every process's fresh word on every scope (this one's included), by Redis's clock."""
        scopes = sorted(_text(s) for s in await self.client.smembers(self.key("scopes")))
        seconds, micros = await self.client.time()
        now = seconds + micros / 1e6 if self.clock is None else self.clock()
        found: list[Peer] = []
        for scope in scopes:
            words = await self.client.hgetall(self.key(scope))
            for member, word in sorted((_text(m), _text(w)) for m, w in words.items()):
                pid, rate, held, seen = word.split()
                if float(seen) > now - STALE_SECONDS:
                    found.append(Peer(member, int(pid), scope, float(rate), held == "1", float(seen)))
        return found


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
