"""The Redis gate: runner processes on several hosts share an organisation's limits through one Redis.

It holds what the gate file (``runner.store.peers``) holds on one host, each process's word on each limit it paces
(``scope``: model, long context, dimension): what it admits per second and whether it wants more than it gets.
Every gate reads the others' words and takes its fair part of what the runners may use together, so a process
admits on its own between readings: its share is a lease on part of the limit, renewed every ``SHARE_SECONDS``
and void ``STALE_SECONDS`` after its last renewal. No admission waits for a round trip to Redis unless a refusal
armed the runners' bucket (below). As through the gate file, each process also says its admissions and refunds
since its last word, each with its time, and up to when they are complete (a stream of uses per scope, read
since the last entry read): the others judge the server's readings with them instead of a steady rate. Times are
Redis's clock as each host reads it: its own clock plus the offset to Redis's ``TIME``, measured at every
exchange (the midpoint of the round trip).

- Keys: ``runner:{<hash of base URL, key and account>}:<scope>`` (a hash of member -> word) per model and
  dimension, a set of the scopes, and an epoch. The braces are a hash tag: all keys of one key-hash live in one
  slot, so the Lua script that reads and writes them runs on Redis Cluster too. The API key is never written.
- One clock: the script stamps words with Redis's ``TIME`` and judges freshness by it (hosts' clocks differ).
- Two round trips per ``SHARE_SECONDS`` per process (the words, then the uses; three while it has ledger
  figures to tell), whatever its rate, by a background task on redis-py's asyncio client: ``publish`` only
  records this process's word and returns the others' last heard, at once.
- The ledger (use that outlives a process: a day's requests, the batch queue's tokens) is told and heard in the
  same period, one hash per ``what`` with each database's figure (see ``runner.store.peers``).
- The runners' bucket (``runner.store.peers`` has the rules): once the server refuses a request of one of them,
  their admissions go through one token bucket per scope for ``ARM_SECONDS``, so together they never come faster
  than the server's window holds. The exchange tells whether it is armed; armed, each admission and each refund is
  one round trip (the ``BUCKET`` script, on a synchronous client: the gate asks from its own path, and a round
  trip on a LAN is a fraction of a millisecond), bounded by ``BUCKET_SECONDS``; a Redis that does not answer in
  time leaves the bucket alone for ``BUCKET_REST`` (said once). Unarmed, no admission waits for Redis.
- Faults: when Redis cannot be reached (at the start or mid-run), one notice says so and the process keeps the
  peers it last heard (at the start, one unknown peer: half of what the runners may use), so it never takes the
  whole limit because it went deaf; it retries each period and says so when Redis answers again. A Redis that
  restarts and forgets every word shows a new epoch: the words heard before are kept for ``STALE_SECONDS``
  while every process speaks again, so nobody bursts into the forgotten room.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from runner.errors import ConfigError
from runner.store.peers import (
    ARM_SECONDS,
    FORGET_SECONDS,
    KEEP_SECONDS,
    STALE_SECONDS,
    TRANSIT_SECONDS,
    TURN_SECONDS,
    USES_SECONDS,
    Peer,
)

__all__ = ["SHARE_SECONDS", "RedisGate", "is_redis_url", "redis_location", "redis_url_problem"]

SHARE_SECONDS = 0.25  # how often the process speaks and listens
SOCKET_SECONDS = 2.0  # the most a connection or a reply may take before Redis counts as lost
BUCKET_SECONDS = 0.5  # the most a runners' bucket round trip may take (it holds the admission up)
BUCKET_REST = 5.0  # after a failed one, the runners' bucket is left alone this long (admissions go on their own)
UNKNOWN = "unknown"  # the member that stands for the peers a process could not hear at the start

# KEYS: epoch, scopes set, one hash per scope spoken of, then the runners' bucket of each of those scopes. ARGV:
# member, pid, now ('' for Redis TIME), stale seconds, forget seconds, proposed epoch, then (scope, rate, held) per
# scope key. Returns epoch, now, the seconds each bucket stays armed, then for each fresh word of another member:
# scope, member, pid, rate, held, seen.
EXCHANGE = """
local now
if ARGV[3] ~= '' then now = tonumber(ARGV[3]) else
  local t = redis.call('TIME'); now = tonumber(t[1]) + tonumber(t[2]) / 1000000 end
local stale, forget = tonumber(ARGV[4]), tonumber(ARGV[5])
local keep = math.ceil(forget * 1000)
local n = (#KEYS - 2) / 2
local epoch = redis.call('GET', KEYS[1])
if not epoch then epoch = ARGV[6]; redis.call('SET', KEYS[1], epoch) end
redis.call('PEXPIRE', KEYS[1], keep)
local out = {epoch, string.format('%.6f', now)}
for i = 1, n do
  local armed = tonumber(redis.call('HGET', KEYS[2 + n + i], 'armed'))
  table.insert(out, string.format('%.6f', armed and math.max(0, armed - now) or 0))
end
for i = 3, 2 + n do
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

# The runners' bucket of each scope (``runner.store.peers`` has the rules). KEYS: one bucket hash per scope, then one
# hash of views (member -> "rate burst seen") per scope. ARGV: op (admit, give or empty), member, now ('' for Redis
# TIME), stale seconds, arm seconds, transit seconds, force (1 or 0), seconds the member has waited, turn seconds,
# then per scope: cost, rate, burst (admit) or amount and keep (1 or 0) (give). Returns the seconds to wait (admit:
# 0 when taken), else 0.
BUCKET = """
local now
if ARGV[3] ~= '' then now = tonumber(ARGV[3]) else
  local t = redis.call('TIME'); now = tonumber(t[1]) + tonumber(t[2]) / 1000000 end
local op, member = ARGV[1], ARGV[2]
local stale, arm, transit, force = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7] == '1'
local since, turn = now - tonumber(ARGV[8]), tonumber(ARGV[9])
local n = #KEYS / 2
local buckets = {}
for i = 1, n do
  local f = redis.call('HMGET', KEYS[i], 'level', 'stamp', 'rate', 'capacity', 'armed', 'sent', 'transit', 'waiter',
    'since', 'asked', 'beyond')
  local b = {level = tonumber(f[1]), stamp = tonumber(f[2]) or now, rate = tonumber(f[3]) or 0,
    capacity = tonumber(f[4]) or 0, armed = tonumber(f[5]) or 0, sent = tonumber(f[6]) or 0,
    transit = tonumber(f[7]) or 0, waiter = f[8] or '', since = tonumber(f[9]) or 0, asked = tonumber(f[10]) or 0,
    beyond = tonumber(f[11]) or 0}
  if b.level then b.level = math.min(b.capacity + b.beyond, b.level + math.max(0, now - b.stamp) * b.rate) end
  b.stamp = math.max(b.stamp, now)
  buckets[i] = b
end
local function my_turn(b)  -- not while another that has waited longer keeps asking
  local kept = b.waiter ~= '' and b.waiter ~= member and b.asked > b.stamp - turn
  return not (kept and b.since < since)
end
local wait = 0
if op == 'admit' then
  for i = 1, n do
    local b, at = buckets[i], 10 + (i - 1) * 3
    local cost, rate, burst = tonumber(ARGV[at]), tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
    redis.call('HSET', KEYS[n + i], member, ARGV[at + 1] .. ' ' .. ARGV[at + 2] .. ' ' .. string.format('%.6f', now))
    local views = redis.call('HGETALL', KEYS[n + i])
    for j = 1, #views, 2 do
      local r, u, seen = string.match(views[j + 1], '^(%S+) (%S+) (%S+)$')
      if tonumber(seen) <= now - stale then redis.call('HDEL', KEYS[n + i], views[j])
      else rate = math.min(rate, tonumber(r)); burst = math.max(burst, tonumber(u)) end
    end
    redis.call('PEXPIRE', KEYS[n + i], math.ceil(arm * 1000))
    b.rate, b.capacity, b.cost = rate, rate * burst, cost
    if not b.level then b.level = b.capacity end
    b.level = math.min(b.level, b.capacity + b.beyond)
    if now >= b.armed then b.level = b.capacity
    else
      local need = math.min(cost, b.capacity)
      local short, turn_short = 0, 1e9
      if b.rate > 0 then turn_short = need / b.rate end
      if b.level < need then short = 1e9; if b.rate > 0 then short = (need - b.level) / b.rate end end
      if short > 1e-6 then wait = math.max(wait, short)
      elseif not my_turn(b) then wait = math.max(wait, turn_short) end
    end
  end
  if wait == 0 or force then
    for i = 1, n do
      local b = buckets[i]
      b.level = b.level - b.cost
      b.beyond = math.max(0, math.min(b.beyond, b.level - b.capacity))
      if now - b.sent < transit then b.transit = b.cost + b.transit else b.transit = b.cost end
      b.sent = now
      if b.waiter == member then b.waiter = '' end
    end
    wait = 0
  else
    for i = 1, n do
      local b = buckets[i]
      if now < b.armed and my_turn(b) then b.waiter, b.since, b.asked = member, since, now end
    end
  end
elseif op == 'give' then
  for i = 1, n do
    local b = buckets[i]
    local amount, keep = tonumber(ARGV[8 + 2 * i]), ARGV[9 + 2 * i] == '1'
    if b.level and now < b.armed then
      if keep and amount > 0 then
        b.level = b.level + amount
        b.beyond = math.max(b.beyond, b.level - b.capacity)
      else
        local on_its_way = 0
        if now - b.sent < transit then on_its_way = b.transit end
        b.level = math.min(math.max(b.level, b.capacity - on_its_way), b.level + amount)
      end
    end
  end
elseif op == 'empty' then
  for i = 1, n do
    local b = buckets[i]
    b.level = math.min(b.level or 0, 0)
    b.beyond = 0
    b.armed = now + arm
  end
end
for i = 1, n do
  local b = buckets[i]
  if b.level then
    redis.call('HSET', KEYS[i], 'level', string.format('%.17g', b.level), 'stamp', string.format('%.6f', b.stamp),
      'rate', string.format('%.17g', b.rate), 'capacity', string.format('%.17g', b.capacity),
      'armed', string.format('%.6f', b.armed), 'sent', string.format('%.6f', b.sent),
      'transit', string.format('%.17g', b.transit), 'waiter', b.waiter, 'since', string.format('%.6f', b.since),
      'asked', string.format('%.6f', b.asked), 'beyond', string.format('%.17g', b.beyond))
    redis.call('PEXPIRE', KEYS[i], math.ceil((math.max(0, b.armed - now) + stale) * 1000))
  end
end
return string.format('%.9f', wait)
"""

# KEYS: one stream of uses per scope. ARGV: member, then per scope: this process's word of uses ('' for none:
# "told|at:amount,at:amount..." where told is when its uses are complete up to, Redis's clock) and the last entry
# read ('' before the first read: then only who tells and up to when is returned, not what they told, which the
# server already counts). Returns per scope: the last entry read, the number of the others' entries, then
# (member, word) each.
USES = """
local member = ARGV[1]
local out = {}
for i = 1, #KEYS do
  local word, last = ARGV[2 * i], ARGV[2 * i + 1]
  if word ~= '' then
    redis.call('XADD', KEYS[i], 'MAXLEN', '~', 2000, '*', 'm', member, 'w', word)
    redis.call('PEXPIRE', KEYS[i], math.ceil(tonumber(ARGV[#ARGV]) * 1000))
  end
  local entries
  if last == '' then entries = redis.call('XRANGE', KEYS[i], '-', '+')
  else entries = redis.call('XRANGE', KEYS[i], '(' .. last, '+') end
  local newest, found = last, {}
  for _, entry in ipairs(entries) do
    newest = entry[1]
    local who, said = entry[2][2], entry[2][4]
    if who ~= member then
      table.insert(found, who)
      if last == '' then table.insert(found, string.match(said, '^[^|]*|') or '') else table.insert(found, said) end
    end
  end
  if newest == '' then newest = '0-0' end
  table.insert(out, newest); table.insert(out, tostring(#found / 2))
  for _, x in ipairs(found) do table.insert(out, x) end
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
        self.uses_script = self.client.register_script(USES)
        self.offset = 0.0  # Redis's clock less this host's (``time.time``), measured at each exchange
        self.outbox: dict[str, list[tuple[float, float]]] = {}  # scope -> this process's uses not yet said
        self.told_at: dict[str, float] = {}  # scope -> when they are complete up to (Redis's clock)
        self.read: dict[str, str] = {}  # scope -> the last entry of the others' uses read
        self.telling: dict[str, set[str]] = {}  # scope -> the others that say their uses
        self.inbox: dict[str, dict[str, list[tuple[float, float]]]] = {}  # scope -> member -> uses not yet heard
        self.complete: dict[str, dict[str, float]] = {}  # scope -> member -> when its uses are complete up to
        self.bucket_client = redis.Redis.from_url(
            url, socket_connect_timeout=BUCKET_SECONDS, socket_timeout=BUCKET_SECONDS
        )  # the runners' bucket is asked from the gate's own (synchronous) path, and only while armed
        self.bucket_script = self.bucket_client.register_script(BUCKET)
        self.bucket_rest_until = -math.inf
        self.bucket_failed = False  # a round trip to the runners' bucket failed (said once)
        self.armed_for: dict[str, tuple[float, float]] = {}  # scope -> (seconds armed, monotonic when heard)
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
        """Record what this process admits of ``scope`` and its admissions and refunds since its last word (timed
        by ``now``; said at the next exchange); the others' last words on it, with their uses heard since."""
        self.words[scope] = (rate, held)
        if events is not None:
            box = self.outbox.setdefault(scope, [])
            box.extend(events)
            self.told_at[scope] = now = self.now()
            if self.reachable is False:  # not said while Redis is away: only what the others could still use
                box[:] = [event for event in box if event[0] >= now - USES_SECONDS]
        heard = self.heard.get(scope, {})
        if self.reachable is False and not heard:  # deaf from the start: assume one peer that wants as much
            return [Peer(UNKNOWN, 0, scope, 0.0, True, 0.0)]
        telling, inbox, complete = (
            self.telling.get(scope, set()),
            self.inbox.get(scope, {}),
            self.complete.get(scope, {}),
        )
        return [  # a peer that says its uses is complete up to its last word of them, not up to Redis's stamp
            replace(h.peer, seen=complete[m], events=tuple(inbox.pop(m, ())))
            if m in telling and m in complete
            else h.peer
            for m, h in heard.items()
        ]

    def now(self) -> float:
        """Redis's clock, as this host reads it (its own clock and the offset measured at the last exchange)."""
        return self.clock() if self.clock is not None else time.time() + self.offset

    def admit(
        self, costs: Sequence[tuple[str, float, float, float]], force: bool = False, waited: float = 0.0
    ) -> float:
        """Take each ``(scope, cost, rate, burst)`` from the runners' bucket of that scope, all or none, the one
        that has ``waited`` longest first (``runner.store.peers.GateFile.admit``): one round trip, asked only while
        a refusal has armed the bucket."""
        values = [v for _, cost, rate, burst in costs for v in (f"{cost:.17g}", f"{rate:.17g}", f"{burst:.17g}")]
        return self._bucket("admit", [scope for scope, *_ in costs], values, force, waited)

    def give_back(self, scope: str, amount: float, keep: bool = False) -> None:
        """``amount`` back to the runners' bucket of ``scope`` (``keep``: above its capacity if need be, see
        ``runner.store.peers.GateFile.give_back``)."""
        self._bucket("give", [scope], [f"{amount:.17g}", str(int(keep))])

    def empty(self, scopes: Sequence[str]) -> None:
        """The server refused a request: the runners' buckets of ``scopes`` fill again from empty, and hold
        admissions back for ``ARM_SECONDS``."""
        self._bucket("empty", list(scopes), [])
        for scope in scopes:
            self.armed_for[scope] = (ARM_SECONDS, self.monotonic())

    def armed(self, scope: str) -> float:
        """For how many seconds more the runners' bucket of ``scope`` holds admissions back, as last heard (the
        exchange reads it: no round trip)."""
        seconds, heard = self.armed_for.get(scope, (0.0, 0.0))
        return max(0.0, seconds - (self.monotonic() - heard))

    def _bucket(self, op: str, scopes: list[str], values: list[str], force: bool = False, waited: float = 0.0) -> float:
        """One round trip to the runners' buckets of ``scopes``; where Redis does not answer within
        ``BUCKET_SECONDS``, said once, and the buckets are left alone for ``BUCKET_REST`` (0: admitted)."""
        if self.monotonic() < self.bucket_rest_until:
            return 0.0
        keys = [self.key(f"bucket:{s}") for s in scopes] + [self.key(f"views:{s}") for s in scopes]
        now = "" if self.clock is None else f"{self.clock():.6f}"
        args: list[str | float] = [op, self.member, now, STALE_SECONDS, ARM_SECONDS, TRANSIT_SECONDS, int(force)]
        args += [f"{waited:.6f}", TURN_SECONDS]
        args += values
        try:
            wait = self.bucket_script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            self.bucket_rest_until = self.monotonic() + BUCKET_REST
            if not self.bucket_failed:  # said once
                self.notices.append(
                    f"the runners' bucket at the Redis gate {self.where} did not answer ({type(exc).__name__}: "
                    f"{exc}): admitting on this process's own pace for {BUCKET_REST:g} s at a time"
                )
            self.bucket_failed = True
            return 0.0
        return float(_text(wait))

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
        buckets = [self.key(f"bucket:{s}") for s in scopes]
        keys = [self.key("epoch"), self.key("scopes"), *(self.key(s) for s in scopes), *buckets]
        before = time.time()
        raw = await self.exchange_script(keys=keys, args=args)
        self.exchanges += 1
        answer = [_text(x) for x in raw]
        if self.clock is None:
            self.offset = float(answer[1]) - (before + time.time()) / 2
        await self._exchange_uses(scopes)
        await self._exchange_ledger()
        epoch, now = answer[0], self.monotonic()
        for scope, armed in zip(scopes, answer[2 : 2 + len(scopes)], strict=True):
            self.armed_for[scope] = (float(armed), now)
        restarted = self.epoch is not None and epoch != self.epoch
        self.epoch = epoch
        fresh: dict[str, dict[str, _Heard]] = {scope: {} for scope in scopes}
        for i in range(2 + len(scopes), len(answer), 6):
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

    async def _exchange_uses(self, scopes: list[str]) -> None:
        """Say this process's uses since its last word (each timed by Redis's clock) and hear the others'."""
        args: list[str | float] = [self.member]
        for scope in scopes:
            told = self.told_at.get(scope)
            events = self.outbox.pop(scope, [])
            word = "" if told is None else f"{told:.6f}|" + ",".join(f"{at:.6f}:{amount:.6g}" for at, amount in events)
            args += [word, self.read.get(scope, "")]
        args.append(USES_SECONDS)
        raw = [_text(x) for x in await self.uses_script(keys=[self.key(f"uses:{s}") for s in scopes], args=args)]
        i = 0
        for scope in scopes:
            self.read[scope], count = raw[i], int(raw[i + 1])
            i += 2
            for member, word in zip(raw[i : i + 2 * count : 2], raw[i + 1 : i + 2 * count : 2], strict=True):
                self.telling.setdefault(scope, set()).add(member)
                if word:
                    until, _, said = word.partition("|")
                    self.complete.setdefault(scope, {})[member] = float(until)
                    uses = [(float(at), float(amount)) for at, amount in (e.split(":") for e in said.split(",") if e)]
                    self.inbox.setdefault(scope, {}).setdefault(member, []).extend(uses)
            i += 2 * count

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
        self.bucket_client.close()

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
