"""Where a run takes its time from: the wall clock (deadlines, retry times), a monotonic clock (pacing, latency)
and a sleep. Injected, so tests move one fake clock for the executors and the simulator instead of waiting."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

__all__ = ["Timing"]


@dataclass(frozen=True)
class Timing:
    wall: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep
