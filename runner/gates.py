"""The gates of a run, one per model (and per long-context row of a model): what the sync executor paces with.

``Pacing`` is the interface the executor uses; ``Gate`` is the in-process implementation. Runner processes of one
organisation share each limit through a ``SharedGate``: the gate file on one host (``runner.store.peers``, the
default) or Redis across hosts (``runner.redis_gate``). Given one, every gate tells it its use under a scope of its
own (model, long context, dimension) and takes its fair part of the runners' share.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Protocol

from runner.gate import Gate, GateStats, Sharing, Ticket
from runner.limits import ModelInfo, RateLimits
from runner.redis_gate import RedisGate, is_redis_url
from runner.settings import RunSettings
from runner.store.peers import GateFile, Peer, gate_digest, gate_file_path
from runner.transport import Credentials

__all__ = ["Gates", "Pacing", "SharedGate", "open_gate"]


class Pacing(Protocol):
    """What the executor asks of a gate (see ``runner.gate.Gate`` for the meaning of each call)."""

    notices: list[str]

    @property
    def rpm(self) -> int | None: ...

    @property
    def tpm(self) -> int | None: ...

    @property
    def request_rate(self) -> float: ...

    async def acquire(self, tokens: int) -> Ticket: ...

    def settle(self, ticket: Ticket, used: int) -> None: ...

    def observe(self, headers: Mapping[str, str], ticket: Ticket | None = None, *, refused: bool = False) -> None: ...

    def rejected(
        self,
        ticket: Ticket,
        headers: Mapping[str, str],
        dimension: str | None,
        retry_after: float | None,
        limit: int | None = None,
        used: int | None = None,
        requested: int | None = None,
    ) -> None: ...

    def slow_down(self) -> None: ...

    def statistics(self) -> GateStats: ...


Sleep = Callable[[float], Awaitable[None]]
Factory = Callable[[RateLimits, RunSettings, Callable[[], float], Sleep, Sharing | None], Pacing]


def in_process(
    limits: RateLimits, settings: RunSettings, clock: Callable[[], float], sleep: Sleep, sharing: Sharing | None
) -> Pacing:
    return Gate(
        limits.rpm,
        limits.tpm,
        headroom=settings.headroom,
        burst_seconds=settings.burst_seconds,
        explicit=settings.explicit_limits,
        sharing=sharing,
        clock=clock,
        sleep=sleep,
    )


class SharedGate(Protocol):
    """Where the runner processes on one key meet (``GateFile``, ``RedisGate``); ``async with`` it for a run."""

    notices: list[str]

    def publish(
        self, scope: str, rate: float, held: bool, events: Sequence[tuple[float, float]] | None = None
    ) -> list[Peer]:
        """Say what this process admits of ``scope`` per second, whether it wants more, and its admissions and
        refunds since its last word; the others' words (and events, where they carry them)."""
        ...

    def now(self) -> float:
        """The clock the words are stamped with."""
        ...

    def admit(
        self, costs: Sequence[tuple[str, float, float, float]], force: bool = False, waited: float = 0.0
    ) -> float:
        """Take each ``(scope, cost, rate, burst)`` from the runners' bucket of that scope, all or none (the
        process that has ``waited`` longest first): 0 when taken, else the seconds until they would be."""
        ...

    def give_back(self, scope: str, amount: float, keep: bool = False) -> None:
        """``amount`` back to the runners' bucket of ``scope`` (``keep``: above its capacity if need be)."""
        ...

    def empty(self, scopes: Sequence[str]) -> None:
        """The runners' buckets of ``scopes`` fill again from empty, and hold admissions back for a while."""
        ...

    def armed(self, scope: str) -> float:
        """For how many seconds more the runners' bucket of ``scope`` holds admissions back (0: it does not)."""
        ...

    def tell(self, what: str, source: str, amount: int) -> int:
        """Say database ``source`` holds ``amount`` of ``what`` (a day's requests, batch queue tokens); the other
        databases' sum."""
        ...

    async def __aenter__(self) -> SharedGate: ...

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...


def open_gate(settings: RunSettings, credentials: Credentials) -> tuple[GateFile | RedisGate | None, str | None]:
    """The shared gate this run paces its limits through (``settings.gate``), or None and why not."""
    if settings.gate == "none":
        return None, None
    account = " ".join(filter(None, (credentials.organization, credentials.project)))
    if is_redis_url(settings.gate):
        return RedisGate(settings.gate, gate_digest(credentials.base_url, credentials.api_key, account)), None
    path = gate_file_path(credentials.base_url, credentials.api_key, account)
    try:
        return GateFile(path), None
    except (OSError, sqlite3.Error) as exc:
        return None, f"could not open the gate file {path} ({exc}): pacing alone, as if no other runner used the key"


class Scope:
    """One gate's place in the shared gate: its dimensions' words go under ``scope`` (model, long context)."""

    def __init__(self, shared: SharedGate, scope: str) -> None:
        self.shared, self.scope = shared, scope

    def exchange(self, dimension: str, rate: float, held: bool, events: Sequence[tuple[float, float]]) -> list[Peer]:
        return self.shared.publish(f"{self.scope} {dimension}", rate, held, events)

    def now(self) -> float:
        return self.shared.now()

    def admit(
        self, costs: Sequence[tuple[str, float, float, float]], force: bool = False, waited: float = 0.0
    ) -> float:
        scoped = [(f"{self.scope} {d}", cost, rate, burst) for d, cost, rate, burst in costs]
        return self.shared.admit(scoped, force, waited)

    def give_back(self, dimension: str, amount: float, keep: bool = False) -> None:
        self.shared.give_back(f"{self.scope} {dimension}", amount, keep)

    def empty(self, dimensions: Sequence[str]) -> None:
        self.shared.empty([f"{self.scope} {d}" for d in dimensions])

    def armed(self, dimension: str) -> float:
        return self.shared.armed(f"{self.scope} {dimension}")


class Gates:
    """The run's gates by (model, long context), made on first use from the tier's limits and the user's."""

    def __init__(
        self,
        settings: RunSettings,
        factory: Factory = in_process,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        shared: SharedGate | None = None,
    ) -> None:
        self.settings, self.factory, self.clock, self.sleep = settings, factory, clock, sleep
        self.shared = shared
        self.gates: dict[tuple[str, bool], Pacing] = {}
        self.limits: dict[tuple[str, bool], RateLimits] = {}

    def gate_for(self, model: ModelInfo, prompt_tokens: int) -> tuple[Pacing, RateLimits]:
        """The gate (and limits) that pace a request of ``prompt_tokens`` to ``model``."""
        tier = self.settings.tier
        raw = model.limits_for(tier, prompt_tokens)
        key = (model.name, model.is_long(prompt_tokens))
        if key not in self.gates:
            s = self.settings
            own = raw.override(s.rpm, s.tpm, s.rpd)
            self.limits[key] = own
            scope = Scope(self.shared, f"{model.name}{' long' if key[1] else ''}") if self.shared else None
            self.gates[key] = self.factory(own, s, self.clock, self.sleep, scope)
        return self.gates[key], self.limits[key]

    @property
    def request_rate(self) -> float:
        """Requests per second all gates let through now."""
        return sum(g.request_rate for g in self.gates.values())

    @property
    def notices(self) -> list[str]:
        shared = self.shared.notices if self.shared else []
        return shared + [n for g in self.gates.values() for n in g.notices]

    def first(self) -> Pacing | None:
        return next(iter(self.gates.values()), None)
