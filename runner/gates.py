"""The gates of a run, one per model (and per long-context row of a model): what the sync executor paces with.

``Pacing`` is the interface the executor uses; ``Gate`` is the in-process implementation. A gate shared by several
processes of one organisation (a token bucket in Redis, say) plugs in by implementing ``Pacing`` and passing a
factory to ``Gates``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from runner.gate import Gate, GateStats, Ticket
from runner.limits import ModelInfo, RateLimits
from runner.settings import RunSettings

__all__ = ["Gates", "Pacing"]


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
Factory = Callable[[RateLimits, RunSettings, Callable[[], float], Sleep], Pacing]


def in_process(limits: RateLimits, settings: RunSettings, clock: Callable[[], float], sleep: Sleep) -> Pacing:
    return Gate(
        limits.rpm,
        limits.tpm,
        headroom=settings.headroom,
        burst_seconds=settings.burst_seconds,
        explicit=settings.explicit_limits,
        clock=clock,
        sleep=sleep,
    )


class Gates:
    """The run's gates by (model, long context), made on first use from the tier's limits and the user's."""

    def __init__(
        self,
        settings: RunSettings,
        factory: Factory = in_process,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.settings, self.factory, self.clock, self.sleep = settings, factory, clock, sleep
        self.gates: dict[tuple[str, bool], Pacing] = {}
        self.limits: dict[tuple[str, bool], RateLimits] = {}

    def gate_for(self, model: ModelInfo, prompt_tokens: int) -> tuple[Pacing, RateLimits]:
        """The gate (and limits) that pace a request of ``prompt_tokens`` to ``model``."""
        tier = self.settings.tier
        raw = model.limits_for(tier, prompt_tokens)
        key = (model.name, raw is not model.limits.get(tier))
        if key not in self.gates:
            s = self.settings
            own = raw.override(s.rpm, s.tpm, s.rpd)
            self.limits[key] = own
            self.gates[key] = self.factory(own, s, self.clock, self.sleep)
        return self.gates[key], self.limits[key]

    @property
    def request_rate(self) -> float:
        """Requests per second all gates let through now."""
        return sum(g.request_rate for g in self.gates.values())

    @property
    def notices(self) -> list[str]:
        return [n for g in self.gates.values() for n in g.notices]

    def first(self) -> Pacing | None:
        return next(iter(self.gates.values()), None)
