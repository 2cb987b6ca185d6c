"""Where a run takes its time from: the wall clock (deadlines, retry times), a monotonic clock (pacing, latency),
a sleep, and the event loop the run is worked on. Injected, so tests move one fake clock for the executors and the
simulator instead of waiting: with ``loop`` a factory of an event loop whose own clock is virtual (looptime), even
the run's timeouts and concurrent waits play out on it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, TypeVarTuple

import anyio

__all__ = ["Timing"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


@dataclass(frozen=True)
class Timing:
    wall: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep
    loop: Callable[[], asyncio.AbstractEventLoop] | None = None  # None: asyncio's own

    def run(self, main: Callable[[*Ts], Awaitable[T]], *args: *Ts) -> T:
        """``anyio.run`` on asyncio (aiolimiter and the executors are asyncio-only), on this timing's loop."""
        options: dict[str, Any] = {} if self.loop is None else {"loop_factory": self.loop}
        return anyio.run(main, *args, backend="asyncio", backend_options=options)
