"""The gates of a run, one per model (and per long-context row of a model): what the sync executor paces with.

``Pacing`` is the interface the executor uses; ``Gate`` is the in-process implementation. Runner processes of one
organisation on this host share each limit through the gate file (``runner.store.peers``): given one, every gate
tells it its use under a scope of its own (model, long context) and takes its fair part of the runners' share.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from runner.gate import Gate, GateStats, Sharing, Ticket
from runner.limits import ModelInfo, RateLimits
from runner.settings import RunSettings
from runner.store.peers import GateFile, gate_file_path
from runner.transport import Credentials

__all__ = ["Gates", "Pacing", "open_gate_file"]


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


def open_gate_file(settings: RunSettings, credentials: Credentials) -> tuple[GateFile | None, str | None]:
    """The gate file this run shares its limits through (``settings.gate``), or None and why not."""
    if settings.gate == "none":
        return None, None
    account = " ".join(filter(None, (credentials.organization, credentials.project)))
    path = gate_file_path(credentials.base_url, credentials.api_key, account)
    try:
        return GateFile(path), None
    except (OSError, sqlite3.Error) as exc:
        return None, f"could not open the gate file {path} ({exc}): pacing alone, as if no other runner used the key"


class Scope:
    """One gate's place in the gate file: its dimensions' words go under ``scope`` (model, long context). A gate
    file that cannot be written (a full disk, a lock held too long) leaves the gate pacing alone, said once."""

    def __init__(self, file: GateFile, scope: str) -> None:
        self.file, self.scope = file, scope
        self.problem: str | None = None

    def exchange(self, dimension: str, rate: float, held: bool) -> list[tuple[float, bool]]:
        try:
            return [(p.rate, p.held) for p in self.file.publish(f"{self.scope} {dimension}", rate, held)]
        except sqlite3.Error as exc:
            self.problem = f"could not use the gate file {self.file.path} ({exc}): pacing alone meanwhile"
            return []


class Gates:
    """The run's gates by (model, long context), made on first use from the tier's limits and the user's."""

    def __init__(
        self,
        settings: RunSettings,
        factory: Factory = in_process,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        gate_file: GateFile | None = None,
    ) -> None:
        self.settings, self.factory, self.clock, self.sleep = settings, factory, clock, sleep
        self.gate_file = gate_file
        self.gates: dict[tuple[str, bool], Pacing] = {}
        self.limits: dict[tuple[str, bool], RateLimits] = {}
        self.scopes: list[Scope] = []

    def gate_for(self, model: ModelInfo, prompt_tokens: int) -> tuple[Pacing, RateLimits]:
        """The gate (and limits) that pace a request of ``prompt_tokens`` to ``model``."""
        tier = self.settings.tier
        raw = model.limits_for(tier, prompt_tokens)
        key = (model.name, raw is not model.limits.get(tier))
        if key not in self.gates:
            s = self.settings
            own = raw.override(s.rpm, s.tpm, s.rpd)
            self.limits[key] = own
            scope = Scope(self.gate_file, f"{model.name}{' long' if key[1] else ''}") if self.gate_file else None
            if scope is not None:
                self.scopes.append(scope)
            self.gates[key] = self.factory(own, s, self.clock, self.sleep, scope)
        return self.gates[key], self.limits[key]

    @property
    def request_rate(self) -> float:
        """Requests per second all gates let through now."""
        return sum(g.request_rate for g in self.gates.values())

    @property
    def notices(self) -> list[str]:
        problems = [s.problem for s in self.scopes if s.problem]
        return problems[:1] + [n for g in self.gates.values() for n in g.notices]

    def first(self) -> Pacing | None:
        return next(iter(self.gates.values()), None)
